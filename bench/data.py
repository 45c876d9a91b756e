"""Datasets as uint8 tensors, decoded once into an on-disk cache; seeded, class-balanced, nested label budgets.

Root: the suite's ``dataset.root``, else ``$BENCH_DATA``, else ``~/.cache/bench``. A torchvision dataset is
looked for as class folders (``<root>/<name>/train/<class>/*.jpg`` and ``.../test/...``) and in torchvision's
own layout under ``<root>``; only when neither is there is it downloaded.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.config import ConfigError, DatasetConfig

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"}
SUBSET_SEED = 12345  # fixed: pool/train/test subsets are part of the data, the same for every seed


@dataclass
class Dataset:
    name: str
    classes: list[str]
    train_x: torch.Tensor  # uint8 (N, 3, H, W): the labelled pool
    train_y: torch.Tensor  # int64 (N,)
    test_x: torch.Tensor
    _test_y: torch.Tensor  # read only through test_y, which counts the reads
    pool_x: torch.Tensor  # uint8: unlabelled images for pretraining (train images, plus unlabeled/ if any)
    test_label_reads: int = 0

    @property
    def test_y(self) -> torch.Tensor:
        """Test labels. Every read is counted: the runner reads them once per evaluation cell, to score it, and
        nothing that chooses hyperparameters may read them (the tests check the count)."""
        self.test_label_reads += 1
        return self._test_y

    def score(self, predictions: torch.Tensor) -> float:
        """Test accuracy of predictions for every test image: the one use of the test labels."""
        return (predictions.cpu() == self.test_y).float().mean().item()

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> int:
        return int(self.train_x.shape[-1])


def data_root(cfg: DatasetConfig) -> Path:
    return Path(cfg.root or os.environ.get("BENCH_DATA") or Path.home() / ".cache" / "bench").expanduser()


def load_dataset(cfg: DatasetConfig) -> Dataset:
    if cfg.name == "synthetic":
        raw = _synthetic(cfg)
    else:
        root = data_root(cfg)
        raw = _cached(root, cfg.name, lambda: _load_raw(root, cfg.name))
    classes, tx, ty, vx, vy, ux = raw
    if cfg.train_size:
        keep = _stratified(ty, cfg.train_size, "dataset.train_size")
        tx, ty = tx[keep], ty[keep]
    if cfg.test_size:
        keep = _stratified(vy, cfg.test_size, "dataset.test_size")
        vx, vy = vx[keep], vy[keep]
    pool = tx if ux is None or len(ux) == 0 else np.concatenate([tx, ux])
    if cfg.pool_size and cfg.pool_size < len(pool):
        pool = pool[np.sort(np.random.default_rng(SUBSET_SEED).permutation(len(pool))[: cfg.pool_size])]
    t = torch.from_numpy
    return Dataset(cfg.name, classes, t(tx), t(ty).long(), t(vx), t(vy).long(), t(np.ascontiguousarray(pool)))


def _stratified(labels: np.ndarray, size: int, key: str) -> np.ndarray:
    """A fixed, class-balanced subset of ``size`` indices (sorted)."""
    if size > len(labels):
        raise ConfigError(f"{key} = {size} exceeds the {len(labels)} images available")
    return np.sort(budget_indices(labels, size, SUBSET_SEED))


# ---------------------------------------------------------------- label budgets


def budget_indices(labels: np.ndarray | torch.Tensor, budget: int | str, seed: int) -> np.ndarray:
    """Indices of a class-balanced labelled subset of ``budget`` images, drawn from ``seed``.

    Nested: for one seed, each class's images are taken as a prefix of one seeded permutation, and the
    remainder ``budget % classes`` goes to classes in one seeded order, so every smaller budget's subset lies
    inside every larger one's. ``"full"`` is every index.
    """
    labels = np.asarray(labels)
    if budget == "full":
        return np.arange(len(labels))
    classes = np.unique(labels)
    if budget < len(classes):
        raise ConfigError(f"budget {budget} is smaller than the number of classes ({len(classes)})")
    if budget > len(labels):
        raise ConfigError(f"budget {budget} exceeds the {len(labels)} labelled training images")
    rng = np.random.default_rng(seed)
    rank = {c: r for r, c in enumerate(rng.permutation(classes))}
    per_class = {c: budget // len(classes) + (rank[c] < budget % len(classes)) for c in classes}
    picked = []
    for c in classes:  # one permutation per class, drawn in class order: nested across budgets
        members = rng.permutation(np.flatnonzero(labels == c))
        if per_class[c] > len(members):
            raise ConfigError(f"budget {budget} needs {per_class[c]} images of class {c}; it has {len(members)}")
        picked.append(members[: per_class[c]])
    return np.sort(np.concatenate(picked))


# ---------------------------------------------------------------- decoding and cache


def _cached(root: Path, name: str, load):
    """Decoded arrays in ``<root>/.bench-cache/<name>/``: a second load memory-maps them (about a second)."""
    cache = root / ".bench-cache" / name
    files = ["train_x", "train_y", "test_x", "test_y", "unlabeled_x"]
    if all((cache / f"{f}.npy").exists() for f in files) and (cache / "classes.txt").exists():
        arrays = [np.load(cache / f"{f}.npy", mmap_mode="r") for f in files]
        classes = (cache / "classes.txt").read_text().splitlines()
        return (classes, *[np.array(a) for a in arrays])
    classes, *arrays = load()
    if arrays[4] is None:
        arrays[4] = np.zeros((0, *arrays[0].shape[1:]), np.uint8)
    cache.mkdir(parents=True, exist_ok=True)
    for f, a in zip(files, arrays):
        tmp = cache / f"{f}.tmp.npy"
        np.save(tmp, a)
        os.replace(tmp, cache / f"{f}.npy")  # atomic: a killed decode never leaves a half-written cache
    (cache / "classes.txt").write_text("\n".join(classes))
    return (classes, *arrays)


def _load_raw(root: Path, name: str):
    if name == "imagefolder":
        return _imagefolder(root)
    folder = root / name
    if (folder / "train").is_dir() and (folder / "test").is_dir():
        return _imagefolder(folder)
    return _torchvision(root, name)


def _decode(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def _decode_files(files: list[Path]) -> np.ndarray:
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        images = list(pool.map(_decode, files, chunksize=256))
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        odd = next(f for f, im in zip(files, images) if im.shape != images[0].shape)
        raise ConfigError(f"images differ in size ({sorted(shapes)[:3]} ...), e.g. {odd}; resize them to one size")
    return np.stack(images).transpose(0, 3, 1, 2).copy()  # (N, 3, H, W)


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def _class_split(split: Path, classes: list[str] | None = None):
    found = sorted(d.name for d in split.iterdir() if d.is_dir())
    classes = classes or found
    if not classes:
        raise ConfigError(f"{split}: no class folders (expected {split}/<class>/*.jpg)")
    files, labels = [], []
    for i, c in enumerate(classes):
        these = _image_files(split / c)
        files += these
        labels += [i] * len(these)
    if not files:
        raise ConfigError(f"{split}: no images found in the class folders")
    return classes, _decode_files(files), np.array(labels, dtype=np.int64)


def _imagefolder(root: Path):
    if not (root / "train").is_dir() or not (root / "test").is_dir():
        raise ConfigError(f"imagefolder: expected {root}/train/<class>/* and {root}/test/<class>/* (set dataset.root)")
    classes, tx, ty = _class_split(root / "train")
    _, vx, vy = _class_split(root / "test", classes)
    unlabeled = _image_files(root / "unlabeled") if (root / "unlabeled").is_dir() else []
    ux = _decode_files(unlabeled) if unlabeled else None
    return classes, tx, ty, vx, vy, ux


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
            raise ConfigError(
                f"{name}: not found in {root}/{name}/{{train,test}}/<class>/*.jpg nor in torchvision's layout under "
                f"{root}, and the download failed ({e.__class__.__name__}: {e}). Put the data there, or set "
                f"BENCH_DATA (or dataset.root) to a folder holding it."
            ) from None
    classes, tx, ty, vx, vy, ux = raw
    arr = np.ascontiguousarray
    return list(classes), arr(tx), np.asarray(ty, np.int64), arr(vx), np.asarray(vy, np.int64), ux


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
