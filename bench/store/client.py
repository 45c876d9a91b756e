"""Opening the tracking store: a one-line error naming the store and what to do when it cannot be used, and a first
run on a fresh sqlite store that is safe against a concurrent first run.

MLflow creates its tables (an Alembic migration) the first time a store is opened. Two processes doing that at
once on one sqlite file both fail and leave a half-migrated file (``_alembic_tmp_experiments already exists``), so
the first opening of a sqlite store holds an advisory lock on a file beside it. A sqlite store is a local file by
definition; a server or PostgreSQL store migrates its schema once, when the server or the database is set up.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from mlflow.tracking import MlflowClient

from bench.errors import StoreError

SQLITE_HEADER = b"SQLite format 3\x00"


class _NoStoreTracebacks(logging.Filter):
    """MLflow logs every database error with its traceback before raising it; bench reports the raised error
    in one line (``explain``), so those records are dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR


logging.getLogger("mlflow.store.db.utils").addFilter(_NoStoreTracebacks())


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (None for other stores)."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///").split("?", 1)[0])  # sqlite:///relative.db, sqlite:////absolute.db


@contextlib.contextmanager
def _first_open_lock(db: Path) -> Iterator[None]:
    lock = db.with_name(db.name + ".lock")
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise StoreError(f"{db.parent}: cannot write the tracking store's folder ({e.strerror}); {WHERE}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


WHERE = "choose a writable folder with --set results_dir=DIR (or --set tracking_uri=...)"


def explain(uri: str, error: BaseException) -> str:
    """One line for an exception raised by the store at ``uri``."""
    text = str(error)
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(error).__name__)
    db = sqlite_path(uri)
    where = str(db) if db else uri
    if LOCKED in text:
        return (
            f"{where} is locked by another process (sqlite allows one writer at a time); close the program "
            "holding it (a DB browser, a stuck run) and rerun"
        )
    if "file is not a database" in text or "malformed" in text or "not an SQLite database" in text:
        return (
            f"{where} is damaged ({first[:120]}); move it aside and rerun (every cell then runs again), or "
            "restore it from a backup"
        )
    if "_alembic_tmp" in text:
        return (
            f"{where}: a schema migration was interrupted and left a temporary table ({first[:120]}); restore "
            "the file from a backup, or move it aside and rerun"
        )
    if "readonly database" in text or "Read-only file system" in text or "Permission denied" in text:
        return f"{where} cannot be written ({first[:120]}); {WHERE}"
    if "database or disk is full" in text or "No space left on device" in text:
        return (
            f"no space left writing the tracking store {where} ({first[:120]}); free space and rerun: finished "
            "cells are kept"
        )
    if "unable to open database file" in text:
        return f"{where} cannot be opened ({first[:120]}); check that its folder exists and is writable"
    return f"the tracking store {where} cannot be used: {first[:200]}"


# What sqlite says when another connection holds its write lock for longer than it waits; MLflow and SQLAlchemy
# wrap it in their own exception types, so the message is the one stable mark of it.
LOCKED = "database is locked"


def store_failure(error: BaseException, uri: str) -> StoreError | None:
    """``error`` as a ``StoreError`` when it is the store's failure rather than one cell's (the database is
    locked by another program for longer than sqlite waits), else None."""
    if isinstance(error, StoreError):
        return error
    if LOCKED in str(error):
        return StoreError(explain(uri, error))
    return None


def open_client(uri: str) -> MlflowClient:
    """A client on the store at ``uri``, opened (tables created when new) and checked with one read."""
    db = sqlite_path(uri)
    if db is None:
        return _checked_client(uri)
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StoreError(f"{db.parent}: cannot create the tracking store's folder ({e.strerror}); {WHERE}") from None
    if db.is_file() and db.stat().st_size > 0:
        with open(db, "rb") as f:
            if f.read(len(SQLITE_HEADER)) != SQLITE_HEADER:
                raise StoreError(explain(uri, ValueError("not an SQLite database")))
    with _first_open_lock(db):
        return _checked_client(uri)


def _checked_client(uri: str) -> MlflowClient:
    try:
        client = MlflowClient(uri)  # a database store creates or migrates its tables here
        client.search_experiments(max_results=1)
    except Exception as e:  # noqa: BLE001 - MLflow, SQLAlchemy and sqlite3 each raise their own types
        raise StoreError(explain(uri, e)) from None
    return client
