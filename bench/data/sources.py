"""Where decoded images come from: torchvision's datasets (or their class folders), generated images, and the
digest that identifies a dataset by its pixels and labels."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from bench.config.sections import DatasetConfig
from bench.errors import DataError

ARRAYS = ("train_x", "train_y", "test_x", "test_y", "unlabeled_x")  # the arrays of a decoded dataset (and of its cache)

# what torchvision reads, relative to the root (the archives it downloads are not read once unpacked)
TORCHVISION_FILES = {
    "cifar10": ["cifar-10-batches-py"],
    "cifar100": ["cifar-100-python"],
    "svhn": ["train_32x32.mat", "test_32x32.mat"],
    "stl10": ["stl10_binary"],
}


def _normalise(classes, tx, ty, vx, vy, ux) -> tuple[list[str], dict[str, np.ndarray]]:
    """Contiguous uint8 images and int64 labels, and an empty unlabeled array when there is none."""
    if ux is None:
        ux = np.zeros((0, *tx.shape[1:]), np.uint8)
    arr, lab = np.ascontiguousarray, np.asarray
    images = dict(zip(ARRAYS, (arr(tx), lab(ty, np.int64), arr(vx), lab(vy, np.int64), arr(ux))))
    return list(classes), images


def _identity(classes: list[str], arrays: dict[str, np.ndarray]) -> str:
    """sha256 of the class names and of each array's dtype, shape and bytes, as 16 hex digits."""
    h = hashlib.sha256(json.dumps(classes).encode())
    for k in ARRAYS:
        a = np.ascontiguousarray(arrays[k])
        h.update(f"{k} {a.dtype.str} {a.shape}".encode())
        h.update(a.data)
    return h.hexdigest()[:16]


def _pixel_hashes(images: np.ndarray) -> np.ndarray:
    """blake2b (128 bit) of each image's pixel bytes, as an (N,) array of 16-byte strings: equal only for
    byte-identical images, whatever file format they came from."""
    rows = images.reshape(len(images), int(np.prod(images.shape[1:])))
    return np.array([hashlib.blake2b(r.data, digest_size=16).digest() for r in rows], dtype="S16")


def _torchvision(root: Path, name: str):
    import torchvision.datasets as tvd

    def get(download: bool):
        if name in ("cifar10", "cifar100"):
            cls = tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100
            tr, te = (
                cls(str(root), train=True, download=download),
                cls(str(root), train=False, download=download),
            )
            return (
                tr.classes,
                tr.data.transpose(0, 3, 1, 2),
                tr.targets,
                te.data.transpose(0, 3, 1, 2),
                te.targets,
                None,
            )
        if name == "svhn":
            tr, te = (
                tvd.SVHN(str(root), "train", download=download),
                tvd.SVHN(str(root), "test", download=download),
            )
            return [str(i) for i in range(10)], tr.data, tr.labels, te.data, te.labels, None
        tr, te = (
            tvd.STL10(str(root), "train", download=download),
            tvd.STL10(str(root), "test", download=download),
        )
        un = tvd.STL10(str(root), "unlabeled", download=download)
        return tr.classes, tr.data, tr.labels, te.data, te.labels, un.data

    try:
        raw = get(download=False)
    except RuntimeError:
        try:
            raw = get(download=True)
        except Exception as e:
            raise DataError(
                f"{name}: not found in {root}/{name}/{{train,test}}/<class>/*.jpg nor in torchvision's layout under "
                f"{root}, and the download failed ({e.__class__.__name__}: {e}). Put the data there, or set "
                f"BENCH_DATA (or dataset.root) to a folder holding it."
            ) from None
    return raw


def _synthetic(cfg: DatasetConfig):
    """Class = stripe orientation and colour, on a top-bright vertical gradient (so rotation is learnable)."""
    s = cfg.synthetic
    palette = np.random.default_rng(7).uniform(0.2, 1.0, (s.classes, 3))

    def make(n: int, seed: int):
        rng = np.random.default_rng(seed)
        y = np.arange(n) % s.classes
        yy, xx = np.mgrid[0 : s.size, 0 : s.size] / s.size
        angle = np.pi * y / s.classes + rng.normal(0, 0.05, n)
        phase = rng.uniform(0, 2 * np.pi, n)
        stripes = np.sin(
            2 * np.pi * 3 * (np.cos(angle)[:, None, None] * xx + np.sin(angle)[:, None, None] * yy)
            + phase[:, None, None]
        )
        sky = 1.0 - yy  # bright at the top
        img = 0.45 * sky[None, None] + 0.35 * palette[y][:, :, None, None] * (0.5 + 0.5 * stripes[:, None])
        img = img + rng.normal(0, 0.05, img.shape)
        return (np.clip(img, 0, 1) * 255).astype(np.uint8), y.astype(np.int64)

    tx, ty = make(s.train, 1)
    vx, vy = make(s.test, 2)
    return [f"class{i}" for i in range(s.classes)], tx, ty, vx, vy, None
