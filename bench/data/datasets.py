"""Datasets as uint8 tensors, decoded once into an on-disk cache; seeded, class-balanced, nested label budgets.

Root: the suite's ``dataset.root``, else ``$BENCH_DATA``, else ``~/.cache/bench``. A torchvision dataset is
looked for as class folders (``<root>/<name>/train/<class>/*.jpg`` and ``.../test/...``) and in torchvision's
own layout under ``<root>``; only when neither is there is it downloaded. The cache records the source files
(relative path, size, mtime_ns) and is rebuilt when they differ; ``Dataset.identity`` is a digest of the decoded
content, so a changed folder gives new cell keys.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from bench.config.sections import DatasetConfig
from bench.data.budgets import budget_indices
from bench.data.cache import cached
from bench.data.leaks import leak_warnings, namer
from bench.data.modes import fit_arrays
from bench.data.pool import Pool
from bench.data.sources import ARRAYS, _identity, _normalise, _pixel_hashes, _synthetic
from bench.errors import DataError
from bench.registry import DATASETS

SUBSET_SEED = 12345  # fixed: pool/train/test subsets are part of the data, the same for every seed


@dataclass
class Dataset:
    name: str
    classes: list[str]
    train_x: torch.Tensor  # uint8 (N, 3, H, W): the labelled pool
    train_y: torch.Tensor  # int64 (N,)
    test_x: torch.Tensor
    _test_y: torch.Tensor  # read only through test_y, which counts the reads
    pool: Pool  # images for pretraining (train images, plus unlabeled/ images not among them), read when needed
    test_label_reads: int = 0
    # sha256 (16 hex digits) of the decoded arrays and class names, before any train/test/pool subset: equal
    # content gives an equal identity wherever it lies; any changed image, label or class name a new one
    identity: str = ""
    # the pool's make-up: "train" (labelled pool images), "unlabeled" (images in unlabeled/),
    # "duplicates_dropped" (unlabeled images whose pixels equal a train image or an earlier unlabeled one),
    # "pool" (len(pool), after dropping them and after the pool_size subset)
    pool_composition: dict[str, int] = field(default_factory=dict)
    # one line each: test images that are also training images (``bench.data.leaks``)
    warnings: list[str] = field(default_factory=list)

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
    spec = DATASETS[cfg.name]
    if cfg.name == "synthetic" or spec.load is not None:  # generated, or a user's loader: digested on every load
        raw = _synthetic(cfg) if cfg.name == "synthetic" else _checked(cfg.name, spec.load(cfg))
        classes, arrays = _normalise(*raw)
        if cfg.image_size:
            arrays = {k: fit_arrays(a, cfg.image_size) if k.endswith("_x") else a for k, a in arrays.items()}
        identity, sources = _identity(classes, arrays), []
        for split in ("train", "test", "unlabeled"):  # copies between splits: dropped from the pool, or warned of
            arrays[f"{split}_hash"] = _pixel_hashes(arrays[f"{split}_x"])
    else:
        classes, arrays, identity, sources = cached(data_root(cfg), cfg.name, cfg.image_size)
    tx, ty, vx, vy, ux = (arrays[k] for k in ARRAYS)
    train_rows = np.arange(len(tx))
    if cfg.train_size:
        train_rows = _stratified(ty, cfg.train_size, "dataset.train_size")
    train_hash = arrays["train_hash"][train_rows]
    test_rows = _stratified(vy, cfg.test_size, "dataset.test_size") if cfg.test_size else np.arange(len(vx))
    rows, composition = _pool(train_rows, len(tx), train_hash, len(ux), arrays["unlabeled_hash"], cfg.pool_size)
    pool = Pool([tx, ux], rows)
    pooled = rows[rows >= len(tx)] - len(tx)  # the unlabeled images pretrained on
    used = {"train": train_rows, "test": test_rows, "unlabeled": pooled}
    file_of = namer(sources, len(tx), len(vx))
    warnings = leak_warnings(
        train_hash,
        ty[train_rows],
        arrays["test_hash"][test_rows],
        vy[test_rows],
        arrays["unlabeled_hash"][pooled],
        lambda split, i: file_of(split, used[split][i]),
    )
    if cfg.test_size:
        vx, vy = vx[test_rows], vy[test_rows]
    if cfg.train_size:
        tx, ty = tx[train_rows], ty[train_rows]
    t = torch.from_numpy
    return Dataset(
        cfg.name,
        classes,
        t(tx),
        t(ty),
        t(vx),
        t(vy),
        pool,
        identity=identity,
        pool_composition=composition,
        warnings=warnings,
    )


def _checked(name: str, loaded) -> tuple:
    """What a dataset plug-in's ``load`` returned, refused in one line where it is not (classes, train images,
    train labels, test images, test labels, unlabelled images or None) with uint8 (N, 3, H, W) images and labels
    in range(len(classes))."""
    where = f"dataset plug-in {name!r}"
    if not (isinstance(loaded, tuple | list) and len(loaded) == 6):
        raise DataError(f"{where}: load must return 6 values (classes, train_x, train_y, test_x, test_y, unlabeled_x)")
    classes, tx, ty, vx, vy, ux = loaded
    images = {"train_x": tx, "test_x": vx} | ({} if ux is None else {"unlabeled_x": ux})
    for key, x in images.items():
        x = np.asarray(x)
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1] != 3 or x.shape[2:] != np.asarray(tx).shape[2:]:
            raise DataError(f"{where}: {key} must be uint8 (N, 3, H, W) of one size, got {x.dtype} {tuple(x.shape)}")
    for key, x, y in (("train", tx, ty), ("test", vx, vy)):
        y = np.asarray(y)
        if y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= len(classes):
            raise DataError(f"{where}: {key}_y must be one integer label in 0..{len(classes) - 1} per {key} image")
    return [str(c) for c in classes], np.asarray(tx), ty, np.asarray(vx), vy, None if ux is None else np.asarray(ux)


def _pool(train_rows, n_train: int, train_hash, n_unlabeled: int, unlabeled_hash, pool_size: int | None):
    """The pretraining pool's rows (into the train array, then the unlabeled array after it): the labelled pool's
    images, then the unlabeled images whose pixels are new (the first of identical ones is kept), then a seeded
    subset of ``pool_size``, drawn from distinct images."""
    fresh = np.zeros(n_unlabeled, bool)
    if n_unlabeled:
        fresh[np.unique(unlabeled_hash, return_index=True)[1]] = True
        fresh &= ~np.isin(unlabeled_hash, train_hash)
    rows = np.concatenate([train_rows, n_train + np.flatnonzero(fresh)])
    dropped = int(n_unlabeled - fresh.sum())
    composition = {"train": len(train_rows), "unlabeled": n_unlabeled, "duplicates_dropped": dropped}
    if pool_size and pool_size < len(rows):
        rows = rows[np.sort(np.random.default_rng(SUBSET_SEED).permutation(len(rows))[:pool_size])]
    return rows, {**composition, "pool": len(rows)}


def _stratified(labels: np.ndarray, size: int, key: str) -> np.ndarray:
    """A fixed, class-balanced subset of ``size`` indices (sorted)."""
    if size > len(labels):
        raise DataError(f"{key} = {size} exceeds the {len(labels)} images available")
    return np.sort(budget_indices(labels, size, SUBSET_SEED))
