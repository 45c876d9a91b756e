"""Datasets as uint8 tensors, decoded once into an on-disk cache; seeded, class-balanced, nested label budgets.

Root: the suite's ``dataset.root``, else ``$BENCH_DATA``, else ``~/.cache/bench``. A torchvision dataset is
looked for as class folders (``<root>/<name>/train/<class>/*.jpg`` and ``.../test/...``) and in torchvision's
own layout under ``<root>``; only when neither is there is it downloaded. The cache records the source files
(relative path, size, mtime_ns) and is rebuilt when they differ; ``Dataset.identity`` is a digest of the decoded
content, so a changed folder gives new cell keys.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from bench.config.sections import DatasetConfig
from bench.data.budgets import budget_indices
from bench.data.imagefolder import decode_folder, scan_folder
from bench.data.modes import fit_arrays
from bench.data.sources import ARRAYS, TORCHVISION_FILES, _identity, _normalise, _pixel_hashes, _synthetic, _torchvision
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
    pool_x: torch.Tensor  # uint8: images for pretraining (train images, plus unlabeled/ images not among them)
    test_label_reads: int = 0
    # sha256 (16 hex digits) of the decoded arrays and class names, before any train/test/pool subset: equal
    # content gives an equal identity wherever it lies; any changed image, label or class name a new one
    identity: str = ""
    # the pool's make-up: "train" (labelled pool images), "unlabeled" (images in unlabeled/),
    # "duplicates_dropped" (unlabeled images whose pixels equal a train image or an earlier unlabeled one),
    # "pool" (len(pool_x), after dropping them and after the pool_size subset)
    pool_composition: dict[str, int] = field(default_factory=dict)

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
        identity = _identity(classes, arrays)
        if len(arrays["unlabeled_x"]):  # unlabelled copies of training images are not pretrained on twice
            arrays["train_hash"] = _pixel_hashes(arrays["train_x"])
            arrays["unlabeled_hash"] = _pixel_hashes(arrays["unlabeled_x"])
    else:
        classes, arrays, identity = _cached(data_root(cfg), cfg.name, cfg.image_size)
    tx, ty, vx, vy, ux = (arrays[k] for k in ARRAYS)
    train_hash = arrays.get("train_hash")
    if cfg.train_size:
        keep = _stratified(ty, cfg.train_size, "dataset.train_size")
        tx, ty = tx[keep], ty[keep]
        train_hash = None if train_hash is None else train_hash[keep]
    if cfg.test_size:
        keep = _stratified(vy, cfg.test_size, "dataset.test_size")
        vx, vy = vx[keep], vy[keep]
    pool, composition = _pool(tx, train_hash, ux, arrays.get("unlabeled_hash"), cfg.pool_size)
    t = torch.from_numpy
    pool_x = t(np.ascontiguousarray(pool))
    return Dataset(
        cfg.name, classes, t(tx), t(ty), t(vx), t(vy), pool_x, identity=identity, pool_composition=composition
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


def _pool(tx, train_hash, ux, unlabeled_hash, pool_size: int | None):
    """The pretraining pool: the labelled pool's images, then the unlabeled images whose pixels are new (the first
    of identical ones is kept), then a seeded subset of ``pool_size``, drawn from distinct images."""
    fresh = np.zeros(len(ux), bool)
    if len(ux):
        fresh[np.unique(unlabeled_hash, return_index=True)[1]] = True
        fresh &= ~np.isin(unlabeled_hash, train_hash)
    pool = np.concatenate([tx, ux[fresh]]) if len(ux) else tx
    composition = {"train": len(tx), "unlabeled": len(ux), "duplicates_dropped": int(len(ux) - fresh.sum())}
    if pool_size and pool_size < len(pool):
        pool = pool[np.sort(np.random.default_rng(SUBSET_SEED).permutation(len(pool))[:pool_size])]
    return pool, {**composition, "pool": len(pool)}


def _stratified(labels: np.ndarray, size: int, key: str) -> np.ndarray:
    """A fixed, class-balanced subset of ``size`` indices (sorted)."""
    if size > len(labels):
        raise DataError(f"{key} = {size} exceeds the {len(labels)} images available")
    return np.sort(budget_indices(labels, size, SUBSET_SEED))


# ---------------------------------------------------------------- decoding and cache


CACHE_FORMAT = 2  # caches of another format (or none: written before manifests existed) are rebuilt
MANIFEST = "manifest.json"


def _cached(root: Path, name: str, image_size: int | None = None) -> tuple[list[str], dict[str, np.ndarray], str]:
    """Decoded arrays in ``<root>/.bench-cache/<name>/`` (``<name>-<size>px/`` when fitted to ``image_size``),
    reused (about a second) while the source files keep their paths, sizes and modification times; otherwise
    decoded again, digested and written anew."""
    folder = root if name == "imagefolder" else root / name
    listing = None
    if name == "imagefolder" or ((folder / "train").is_dir() and (folder / "test").is_dir()):
        listing = scan_folder(folder)  # refuses a wrong class structure before looking at the cache

    def sources() -> list[list]:
        return listing.manifest if listing else _stat_walk(root, TORCHVISION_FILES[name])

    cache = root / ".bench-cache" / (f"{name}-{image_size}px" if image_size else name)
    manifest = sources()  # taken before decoding: a file changed meanwhile makes the next load rebuild
    found = _read_cache(cache, manifest)
    if found:
        return found
    classes, arrays = _normalise(*(decode_folder(listing, image_size) if listing else _torchvision(root, name)))
    if image_size and not listing:
        arrays = {k: fit_arrays(a, image_size) if k.endswith("_x") else a for k, a in arrays.items()}
    identity = _identity(classes, arrays)
    arrays["train_hash"] = _pixel_hashes(arrays["train_x"])
    arrays["unlabeled_hash"] = _pixel_hashes(arrays["unlabeled_x"])
    # an empty manifest before decoding means torchvision has just downloaded the files: list them now
    entry = {"format": CACHE_FORMAT, "identity": identity, "classes": classes, "sources": manifest or sources()}
    try:
        _write_cache(cache, entry, arrays)
    except OSError as e:  # a read-only or full data folder (a shared dataset): run without the cache
        print(f"{cache}: decoded images not cached ({e.strerror}); the next load decodes them again")
    return classes, arrays, identity


def _stat_walk(root: Path, names: list[str]) -> list[list]:
    """[relative path, size, mtime_ns] of every file in or under ``root/<name>``, sorted; missing ones left out."""
    found = []
    for name in names:
        top = root / name
        for path in [top] if top.is_file() else [p for p in top.rglob("*") if p.is_file()]:
            st = path.stat()
            found.append([path.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns])
    return sorted(found)


def _read_cache(cache: Path, manifest: list[list]):
    """``(classes, arrays, identity)`` when the cache was written from exactly these source files, else None."""
    try:
        folder = cache.stat().st_ino
        entry = json.loads((cache / MANIFEST).read_text())
        if entry.get("format") != CACHE_FORMAT or entry["sources"] != manifest:
            return None
        arrays = {k: np.load(cache / f"{k}.npy") for k in (*ARRAYS, "train_hash", "unlabeled_hash")}
        if cache.stat().st_ino != folder:  # another process swapped in a new cache while these were read
            return None
    except (OSError, ValueError, KeyError):  # none, half of one, or one of another format
        return None
    return entry["classes"], arrays, entry["identity"]


def _write_cache(cache: Path, entry: dict, arrays: dict[str, np.ndarray]) -> None:
    """Write into a new sibling folder, then swap it in by renaming: a killed write leaves the old cache or none,
    never a mix, and a reader never sees a half-written one."""
    for stale in cache.parent.glob(f"{cache.name}.tmp-*"):  # left by killed writes (an hour: surely not running)
        if time.time() - stale.stat().st_mtime > 3600:
            shutil.rmtree(stale, ignore_errors=True)
    tmp = cache.with_name(f"{cache.name}.tmp-{uuid.uuid4().hex[:12]}")
    tmp.mkdir(parents=True)
    for key, a in arrays.items():
        np.save(tmp / f"{key}.npy", a)
    (tmp / MANIFEST).write_text(json.dumps(entry))
    old = tmp.with_name(f"{tmp.name}.old")
    with suppress(FileNotFoundError):  # no cache yet, or another writer is swapping it right now
        os.rename(cache, old)
    try:
        os.rename(tmp, cache)
    except OSError:  # another process swapped its own complete cache in first: keep that one
        shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
