"""A user's image folder: ``train/<class>/*``, ``test/<class>/*`` and an optional ``unlabeled/``, scanned and checked.

:func:`scan_folder` is a cheap stat walk (no decoding) that finds the images, refuses a folder whose class structure is
wrong, and lists every image as (relative path, size, mtime_ns): the manifest by which the cache in ``bench.data``
knows whether the folder changed. :func:`decode_chunks` reads every image, a chunk at a time, and refuses, before any
training, corrupt, truncated, empty or unreadable files and images of the wrong shape. Each refusal is a one-line
``DataError`` naming the folder or file. Hidden entries (a name starting with ".") and files without an image suffix
(``.DS_Store``, ``README.txt``) are ignored; class folders may hold sub-folders (their images count for the class).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps

from bench.data.modes import UnreadableMode, fit, to_rgb
from bench.errors import DataError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"}


@dataclass
class Listing:
    """What the stat walk found under ``root``."""

    root: Path
    classes: list[str]  # sorted class folder names, the same in train/ and test/
    train: list[list[Path]]  # image files per class, in class order
    test: list[list[Path]]
    unlabeled: list[Path]
    manifest: list[list]  # [relative path, size, mtime_ns] per image; class folders as ["train/cat/", 0, 0]


def scan_folder(root: Path) -> Listing:
    """Find the images by a stat walk (no decoding); refuse missing, mismatched, single or empty class folders."""
    if not (root / "train").is_dir() or not (root / "test").is_dir():
        raise DataError(f"imagefolder: expected {root}/train/<class>/* and {root}/test/<class>/* (set dataset.root)")
    train, test = _class_folders(root / "train"), _class_folders(root / "test")
    if not train:
        raise DataError(f"{root / 'train'}: no class folders (expected {root / 'train'}/<class>/*.jpg)")
    if set(train) != set(test):
        only = [(s, ", ".join(sorted(set(a) - set(b)))) for s, a, b in (("train", train, test), ("test", test, train))]
        differ = "; ".join(f"only in {s}/: {names}" for s, names in only if names)
        raise DataError(f"{root}: train/ and test/ must hold the same class folders; {differ}")
    if len(train) == 1:
        raise DataError(f"{root / 'train'}: only one class folder ({train[0]}); a classifier needs at least two")
    files = {split: [_images(root / split / c) for c in train] for split in ("train", "test")}
    for split, per_class in files.items():
        for c, these in zip(train, per_class):
            if not these:
                raise DataError(f"{root / split / c}: class folder has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    unlabeled = _images(root / "unlabeled") if (root / "unlabeled").is_dir() else []
    manifest = [[f"{split}/{c}/", 0, 0] for split in ("train", "test") for c in train]
    for path in [p for per_class in files.values() for these in per_class for p in these] + unlabeled:
        try:
            st = path.stat()
        except OSError as e:  # a dangling link, a file deleted during the walk, no permission
            raise DataError(f"{path}: cannot read the image ({e.__class__.__name__}: {e.strerror})") from None
        manifest.append([path.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns])
    return Listing(root, train, files["train"], files["test"], unlabeled, manifest)


def _class_folders(split: Path) -> list[str]:
    return sorted(d.name for d in split.iterdir() if d.is_dir() and not d.name.startswith("."))


def _images(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursively, not into hidden or linked sub-folders), sorted by path."""
    found = []
    for parent, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [Path(parent, n) for n in names if not n.startswith(".") and Path(n).suffix.lower() in IMAGE_SUFFIXES]
    return sorted(found)


RESIZE_HINT = "set dataset.image_size to resize every image (shorter side, then the centre square)"
CHUNK = 2048  # images decoded at once: the memory a decode needs, whatever the folder's size


def decode_chunks(
    files: list[Path], where: Path, image_size: int | None = None, expected=None, expected_from: str = ""
) -> Iterator[np.ndarray]:
    """One split's images as uint8 (n, 3, H, W) chunks of ``CHUNK``, decoded on a thread per core: resized to
    ``image_size`` when given, else all square and of one size (the most common size of the first chunk), or a
    DataError naming the odd file. With ``expected`` (3, H, W), the images must have that shape, the shape of the
    images of ``expected_from``."""
    usual = None
    with _truncated_files_fail(), ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for start in range(0, len(files), CHUNK):
            these = files[start : start + CHUNK]
            images = list(pool.map(lambda path: _decode(path, image_size), these))
            for path, im in zip(these, images):
                if im.shape[0] != im.shape[1]:
                    raise DataError(
                        f"{path}: image is {im.shape[1]}x{im.shape[0]} (width x height), not square; {RESIZE_HINT}"
                    )
            usual = usual or Counter(im.shape for im in images).most_common(1)[0][0]
            for path, im in zip(these, images):
                if im.shape != usual:
                    raise DataError(
                        f"{path}: image is {_size(im.shape[:2])} but most images in {where} are {_size(usual[:2])}; "
                        f"{RESIZE_HINT}"
                    )
            chunk = np.stack(images).transpose(0, 3, 1, 2).copy()  # (n, 3, H, W)
            if expected is not None and chunk.shape[1:] != tuple(expected):
                raise DataError(
                    f"{where}: images are {_size(chunk.shape[2:])} but {expected_from} images are "
                    f"{_size(tuple(expected)[1:])}; {RESIZE_HINT}"
                )
            yield chunk


def _decode(path: Path, image_size: int | None = None) -> np.ndarray:
    """(H, W, 3) uint8: EXIF orientation applied, converted to RGB (``to_rgb``), fitted to ``image_size``.
    ``load()`` decodes the whole file, so a truncated or corrupt one fails here, not later."""
    try:
        with Image.open(path) as im:
            im.load()
            rgb = to_rgb(ImageOps.exif_transpose(im))
    except UnreadableMode as e:
        raise DataError(f"{path}: {e}") from None
    except Exception as e:  # PIL raises OSError, SyntaxError, struct.error ... for broken files
        reason = " ".join(f"{e.__class__.__name__}: {e}".replace(f" {str(path)!r}", "").split())
        with suppress(OSError):
            if path.stat().st_size == 0:
                reason = "empty file (0 bytes)"
        raise DataError(f"{path}: not a readable image ({reason})") from None
    return np.asarray(fit(rgb, image_size) if image_size else rgb, dtype=np.uint8)


@contextmanager
def _truncated_files_fail():
    """PIL pads a truncated file with grey when ``ImageFile.LOAD_TRUNCATED_IMAGES`` is set, as some libraries do
    process-wide; the decode that fills the cache must refuse such files, so it runs with the flag off."""
    saved, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = saved


def _size(hw) -> str:
    return f"{hw[1]}x{hw[0]}"
