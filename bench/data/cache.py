"""The decoded-image cache, ``<root>/.bench-cache/<name>/`` (``<name>-<size>px/`` when fitted to a size).

One ``.npy`` file per array (``ARRAYS``, plus the pixel hashes ``train_hash`` and ``unlabeled_hash``) and a
manifest of the source files (relative path, size, mtime_ns). Images are written a chunk at a time as they are
decoded (on a thread per core: PIL decodes without the GIL) and memory-mapped when read, so neither building nor
loading a cache needs the images to fit in memory; what a run reads is read when it needs it. The identity (the
digest of the decoded content) is computed over the same chunks, and equals the digest of the whole arrays.
The cache is reused (about a second) while the source files keep their paths, sizes and modification times;
otherwise it is decoded again, digested and written anew.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import suppress
from pathlib import Path

import numpy as np

from bench.data.imagefolder import Listing, decode_chunks, scan_folder
from bench.data.modes import fit_arrays
from bench.data.sources import ARRAYS, TORCHVISION_FILES, _normalise, _pixel_hashes, _torchvision

CACHE_FORMAT = 2  # caches of another format (or none: written before manifests existed) are rebuilt
MANIFEST = "manifest.json"
IMAGES = ("train_x", "test_x", "unlabeled_x")  # memory-mapped when read; labels and hashes are read whole
HASHED = {"train_x": "train_hash", "test_x": "test_hash", "unlabeled_x": "unlabeled_hash"}


def cached(root: Path, name: str, image_size: int | None = None) -> tuple[list[str], dict[str, np.ndarray], str, list]:
    """``(classes, arrays, identity, sources)`` of a folder or torchvision dataset under ``root``, from its cache
    (``sources``: the manifest of source files); the cache is built first when there is none for exactly these
    source files."""
    folder = root if name == "imagefolder" else root / name
    listing = None
    if name == "imagefolder" or ((folder / "train").is_dir() and (folder / "test").is_dir()):
        listing = scan_folder(folder)  # refuses a wrong class structure before looking at the cache

    def sources() -> list[list]:
        return listing.manifest if listing else _stat_walk(root, TORCHVISION_FILES[name])

    cache = root / ".bench-cache" / (f"{name}-{image_size}px" if image_size else name)
    manifest = sources()  # taken before decoding: a file changed meanwhile makes the next load rebuild
    found = read_cache(cache, manifest)
    if found:
        return found
    if listing:
        classes, splits = listing.classes, _folder_splits(listing, image_size)
    else:
        classes, arrays = _normalise(*_torchvision(root, name))
        if image_size:
            arrays = {k: fit_arrays(a, image_size) if k.endswith("_x") else a for k, a in arrays.items()}
        splits = [(k, [arrays[k]], len(arrays[k])) for k in ARRAYS]
    try:
        write_cache(cache, classes, splits, lambda: manifest or sources())
    except OSError as e:  # a read-only or full data folder (a shared dataset): decode into memory instead
        print(f"{cache}: decoded images not cached ({e.strerror or e}); the next load decodes them again")
        return _in_memory(classes, listing, image_size, root, name)
    found = read_cache(cache, manifest or sources())
    if found is None:  # swapped out by another writer meanwhile: its cache is as good
        found = read_cache(cache, sources())
    return found if found else _in_memory(classes, listing, image_size, root, name)


def _folder_splits(listing: Listing, image_size: int | None) -> list[tuple[str, Iterable, int]]:
    """(array name, chunks, rows) in ``ARRAYS`` order; the chunks of each split are decoded as they are read,
    each split's images checked against the train images' size."""
    root, shape = listing.root, {}

    def images(key: str, split: str, files: list) -> Iterator[np.ndarray]:
        for chunk in decode_chunks(files, root / split, image_size, shape.get("train_x"), "train/"):
            shape.setdefault(key, chunk.shape[1:])
            yield chunk
        if not files and "train_x" in shape:
            yield np.zeros((0, *shape["train_x"]), np.uint8)

    def labels(per_class: list[list]) -> list[np.ndarray]:
        return [np.concatenate([np.full(len(these), i, np.int64) for i, these in enumerate(per_class)])]

    train = [p for these in listing.train for p in these]
    test = [p for these in listing.test for p in these]
    return [
        ("train_x", images("train_x", "train", train), len(train)),
        ("train_y", labels(listing.train), len(train)),
        ("test_x", images("test_x", "test", test), len(test)),
        ("test_y", labels(listing.test), len(test)),
        ("unlabeled_x", images("unlabeled_x", "unlabeled", listing.unlabeled), len(listing.unlabeled)),
    ]


def _in_memory(classes, listing, image_size, root, name):
    """The arrays decoded into memory, for a data folder where no cache can be written."""
    if listing:
        splits = _folder_splits(listing, image_size)
        arrays = {key: np.concatenate(list(chunks)) for key, chunks, _ in splits}
    else:
        classes, arrays = _normalise(*_torchvision(root, name))
        if image_size:
            arrays = {k: fit_arrays(a, image_size) if k.endswith("_x") else a for k, a in arrays.items()}
    digest = Digest(classes)
    for key in ARRAYS:
        digest.add(key, arrays[key], [arrays[key]])
    arrays |= {h: _pixel_hashes(arrays[k]) for k, h in HASHED.items()}
    return classes, arrays, digest.hexdigest(), listing.manifest if listing else []


class Digest:
    """sha256 of the class names and of each array's dtype, shape and bytes, fed a chunk at a time: the same
    digest as ``bench.data.sources._identity`` of the whole arrays."""

    def __init__(self, classes: list[str]) -> None:
        self.h = hashlib.sha256(json.dumps(classes).encode())

    def begin(self, key: str, dtype: np.dtype, shape: tuple[int, ...]) -> None:
        self.h.update(f"{key} {np.dtype(dtype).str} {tuple(int(s) for s in shape)}".encode())

    def update(self, chunk: np.ndarray) -> None:
        self.h.update(np.ascontiguousarray(chunk).data)

    def add(self, key: str, like: np.ndarray, chunks: Iterable[np.ndarray]) -> None:
        self.begin(key, like.dtype, like.shape)
        for chunk in chunks:
            self.update(chunk)

    def hexdigest(self) -> str:
        return self.h.hexdigest()[:16]


class NpyWriter:
    """A ``.npy`` file of ``rows`` rows, written a chunk at a time; the row shape comes from the first chunk."""

    def __init__(self, path: Path, rows: int) -> None:
        self.path, self.rows, self.written, self.file = path, rows, 0, None

    def write(self, chunk: np.ndarray) -> None:
        if self.file is None:
            self.file = open(self.path, "wb")  # noqa: SIM115 - closed by close()
            header = {"descr": np.lib.format.dtype_to_descr(chunk.dtype), "fortran_order": False}
            np.lib.format.write_array_header_1_0(self.file, header | {"shape": (self.rows, *chunk.shape[1:])})
        self.file.write(np.ascontiguousarray(chunk).data)
        self.written += len(chunk)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        if self.written != self.rows:
            raise OSError(f"{self.path}: {self.written} rows written of {self.rows}")


def write_cache(cache: Path, classes: list[str], splits, sources) -> str:
    """Write the arrays of ``splits`` ((name, chunks, rows) in ``ARRAYS`` order) into a new sibling folder of
    ``cache``, digesting them on the way, then swap it in by renaming: a killed write leaves the old cache or
    none, never a mix, and a reader never sees a half-written one. ``sources()`` gives the manifest to record.
    Returns the identity."""
    for stale in cache.parent.glob(f"{cache.name}.tmp-*"):  # left by killed writes (an hour: surely not running)
        with suppress(OSError):
            if time.time() - stale.stat().st_mtime > 3600:
                shutil.rmtree(stale, ignore_errors=True)
    tmp = cache.with_name(f"{cache.name}.tmp-{uuid.uuid4().hex[:12]}")
    tmp.mkdir(parents=True)
    try:
        digest = Digest(classes)
        for key, chunks, rows in splits:
            writer, hashes = NpyWriter(tmp / f"{key}.npy", rows), []
            for i, chunk in enumerate(chunks):
                if i == 0:
                    digest.begin(key, chunk.dtype, (rows, *chunk.shape[1:]))
                digest.update(chunk)
                writer.write(chunk)
                if key in HASHED:
                    hashes.append(_pixel_hashes(chunk))
            writer.close()
            if key in HASHED:
                np.save(tmp / f"{HASHED[key]}.npy", np.concatenate(hashes) if hashes else np.zeros(0, "S16"))
        identity = digest.hexdigest()
        entry = {"format": CACHE_FORMAT, "identity": identity, "classes": classes, "sources": sources()}
        (tmp / MANIFEST).write_text(json.dumps(entry))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = tmp.with_name(f"{tmp.name}.old")
    with suppress(FileNotFoundError):  # no cache yet, or another writer is swapping it right now
        os.rename(cache, old)
    try:
        os.rename(tmp, cache)
    except OSError:  # another process swapped its own complete cache in first: keep that one
        shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
    return identity


def read_cache(cache: Path, manifest: list[list]):
    """``(classes, arrays, identity, sources)`` when the cache was written from exactly these source files, else
    None. Image arrays are memory-mapped copy-on-write: read when used, never written back. A cache written before
    test images were hashed gets their hashes computed here."""
    try:
        folder = cache.stat().st_ino
        entry = json.loads((cache / MANIFEST).read_text())
        if entry.get("format") != CACHE_FORMAT or entry["sources"] != manifest:
            return None
        keys = [*ARRAYS, *(h for h in HASHED.values() if (cache / f"{h}.npy").exists() or h != "test_hash")]
        arrays = {k: np.load(cache / f"{k}.npy", mmap_mode="c" if k in IMAGES else None) for k in keys}
        if "test_hash" not in arrays:
            arrays["test_hash"] = _pixel_hashes(arrays["test_x"])
        if cache.stat().st_ino != folder:  # another process swapped in a new cache while these were read
            return None
    except (OSError, ValueError, KeyError):  # none, half of one, or one of another format
        return None
    return entry["classes"], arrays, entry["identity"], entry["sources"]


def _stat_walk(root: Path, names: list[str]) -> list[list]:
    """[relative path, size, mtime_ns] of every file in or under ``root/<name>``, sorted; missing ones left out."""
    found = []
    for name in names:
        top = root / name
        for path in [top] if top.is_file() else [p for p in top.rglob("*") if p.is_file()]:
            st = path.stat()
            found.append([path.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns])
    return sorted(found)
