"""Files bench writes: always inside the results folder, always whole (written beside, then renamed), and a
one-line error when the folder cannot take them (read-only, full, not permitted)."""

from __future__ import annotations

import contextlib
import errno
import io
import os
import tempfile
from pathlib import Path

from bench.errors import OutputError

# errors of the machine, not of a cell: the run stops with one line instead of failing every cell in turn
ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}
ENVIRONMENT_TEXTS = ("database or disk is full", "readonly database", "disk I/O error", "No space left on device")
FULL_TEXTS = ("database or disk is full", "No space left on device")


def inside(root: str | Path, *parts: str) -> Path:
    """``root/parts...``, refused when it would resolve outside ``root``."""
    base = Path(root).resolve()
    path = base.joinpath(*parts).resolve()
    if not path.is_relative_to(base):
        raise ValueError(f"{'/'.join(parts)!r} resolves outside the results folder {base}")
    return path


def check_writable(folder: str | Path) -> None:
    """Create ``folder`` and write a scratch file in it, or raise OutputError naming it."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as e:
        raise OutputError(
            f"{folder}: the results folder cannot be written ({e.strerror}); choose another with "
            "--set results_dir=DIR or make it writable"
        ) from None


def is_environmental(e: BaseException) -> bool:
    """True for a full disk, a read-only or forbidden folder, or a store that cannot be written."""
    if isinstance(e, OutputError) or isinstance(e, OSError) and e.errno in ENVIRONMENT_ERRNOS:
        return True
    return any(t in str(e) for t in ENVIRONMENT_TEXTS)


def describe_environmental(e: BaseException, store: str | None = None) -> str:
    """One line for an error ``is_environmental`` accepts, naming the file or folder it was writing: the error's
    own file name, else (a database error) the tracking ``store``."""
    if isinstance(e, OutputError):
        return str(e)
    filename = getattr(e, "filename", None)
    if not filename and store and "database" in str(e):
        filename = f"the tracking store {store.removeprefix('sqlite:///')}"
    where = f" {filename}" if filename else ""
    text = str(e)
    known = [t for t in ENVIRONMENT_TEXTS if t in text]  # SQLAlchemy's first line can be a note on autoflush
    first = (text.strip().splitlines() or [""])[0][:200]
    reason = e.strerror if isinstance(e, OSError) and e.strerror else known[0] if known else first
    full = isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
    if full or any(t in str(e) for t in FULL_TEXTS):
        return f"no space left writing{where} ({reason}); free space and rerun: finished cells are kept"
    return f"cannot write{where} ({reason}); make it writable, or choose another folder with --set results_dir=DIR"


@contextlib.contextmanager
def naming(place: str | Path):
    """An OSError raised inside without a file name (MLflow's artifact copy, for one) gets ``place`` as its file
    name, so its one-line message says where the write failed."""
    try:
        yield
    except OSError as e:
        if e.filename is None:
            e.filename = str(place)
        raise


def write_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` whole or not at all: a temporary file beside it, flushed, then renamed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the files are results to share
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.filename is None:
            e.filename = str(path)
        raise
    return path


def torch_bytes(obj) -> bytes:
    """``torch.save`` into memory: a full disk then fails in an ordinary write with errno ENOSPC (torch's own
    file writer reports it as ``RuntimeError: unexpected pos``)."""
    buffer = io.BytesIO()
    import torch  # here, not at the top: reading a store (bench ui) needs no PyTorch

    torch.save(obj, buffer)
    return buffer.getvalue()
