"""A user's image folder: ``train/<class>/*``, ``test/<class>/*`` and an optional ``unlabeled/``, scanned and checked.

:func:`scan_folder` is a cheap stat walk (no decoding) that finds the images, refuses a folder whose class structure is
wrong, and lists every image as (relative path, size, mtime_ns): the manifest by which the cache in ``bench.data``
knows whether the folder changed. :func:`decode_folder` reads every image and refuses, before any training, corrupt,
truncated, empty or unreadable files and images of the wrong shape. Each refusal is a one-line ``DataError``
naming the folder or file. Hidden entries (a name starting with ".") and files without an image suffix
(``.DS_Store``, ``README.txt``) are ignored; class folders may hold sub-folders (their images count for the class).
"""

from __future__ import annotations

import os
from collections import Counter
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


def decode_folder(listing: Listing, image_size: int | None = None):
    """``(classes, train_x, train_y, test_x, test_y, unlabeled_x or None)``: uint8 (N, 3, H, W), int64 labels;
    every image ``image_size`` px square when it is given (``fit``)."""
    root = listing.root
    tx, ty = _labelled(listing.train, root / "train", image_size)
    vx, vy = _labelled(listing.test, root / "test", image_size)
    ux = _decode_files(listing.unlabeled, root / "unlabeled", image_size) if listing.unlabeled else None
    for name, x in (("test", vx), ("unlabeled", ux)):
        if x is not None and x.shape[1:] != tx.shape[1:]:
            raise DataError(
                f"{root / name}: images are {_size(x.shape[2:])} but train/ images are {_size(tx.shape[2:])}; "
                f"{RESIZE_HINT}"
            )
    return listing.classes, tx, ty, vx, vy, ux


RESIZE_HINT = "set dataset.image_size to resize every image (shorter side, then the centre square)"


def _labelled(per_class: list[list[Path]], split: Path, image_size: int | None) -> tuple[np.ndarray, np.ndarray]:
    labels = np.concatenate([np.full(len(these), i, np.int64) for i, these in enumerate(per_class)])
    return _decode_files([p for these in per_class for p in these], split, image_size), labels


def _decode_files(files: list[Path], where: Path, image_size: int | None = None) -> np.ndarray:
    """One split's images as uint8 (N, 3, H, W): resized to ``image_size`` when given, else all square and of one
    size, or a DataError naming the odd one."""
    with _truncated_files_fail(), ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        images = list(pool.map(lambda path: _decode(path, image_size), files))
    for path, im in zip(files, images):
        if im.shape[0] != im.shape[1]:
            raise DataError(f"{path}: image is {im.shape[1]}x{im.shape[0]} (width x height), not square; {RESIZE_HINT}")
    usual = Counter(im.shape for im in images).most_common(1)[0][0]
    for path, im in zip(files, images):
        if im.shape != usual:
            raise DataError(
                f"{path}: image is {_size(im.shape[:2])} but most images in {where} are {_size(usual[:2])}; "
                f"{RESIZE_HINT}"
            )
    return np.stack(images).transpose(0, 3, 1, 2).copy()  # (N, 3, H, W)


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
