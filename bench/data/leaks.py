"""Test images that are also training images: pixel copies between the splits a run uses, found by the pixel
hashes the cache keeps (``bench.data.sources._pixel_hashes``: byte-identical decoded images, whatever their file
format). Each finding is a one-line warning with the count and the first files; nothing is dropped, so the
numbers of a clean dataset are never touched by the check."""

from __future__ import annotations

import numpy as np

SHOWN = 3  # file names given per finding


def leak_warnings(
    train_hash: np.ndarray,
    train_y: np.ndarray,
    test_hash: np.ndarray,
    test_y: np.ndarray,
    pool_unlabeled_hash: np.ndarray,
    name,
) -> list[str]:
    """Warnings for test images equal to labelled training images (and how many of those carry another class's
    label) and for test images among the unlabelled images pretrained on. ``name(split, i)`` names image ``i``
    of ``split`` ("train", "test", "unlabeled") for the message."""
    out = []
    test_rows = np.flatnonzero(np.isin(test_hash, train_hash))
    if len(test_rows):
        first_train = {}
        labels: dict[bytes, set[int]] = {}
        for i, (h, y) in enumerate(zip(train_hash.tolist(), train_y.tolist())):
            first_train.setdefault(h, i)
            labels.setdefault(h, set()).add(y)
        other = sum(int(test_y[j]) not in labels[test_hash[j]] for j in test_rows)
        pairs = ", ".join(
            f"{name('test', j)} = {name('train', first_train[test_hash[j]])}" for j in test_rows[:SHOWN].tolist()
        )
        out.append(
            f"{len(test_rows)} of the {len(test_hash)} test images are pixel copies of training images "
            f"({other} of them labelled with another class there): their accuracy is measured on images trained on; "
            f"e.g. {pairs}"
        )
    pool_rows = np.flatnonzero(np.isin(pool_unlabeled_hash, test_hash)) if len(pool_unlabeled_hash) else []
    if len(pool_rows):
        names = ", ".join(name("unlabeled", i) for i in pool_rows[:SHOWN].tolist())
        out.append(
            f"{len(pool_rows)} unlabelled images pretrained on are pixel copies of test images: pretraining sees "
            f"the test set; e.g. {names}"
        )
    return out


def namer(sources: list[list] | None, n_train: int, n_test: int):
    """``name(split, i)``: the file of image ``i`` of a split, from a folder cache's manifest (class folders
    first, then the train, test and unlabeled files in order), else "<split> image <i>"."""
    start, files = {"train": 0, "test": n_train, "unlabeled": n_train + n_test}, []

    def name(split: str, i: int) -> str:
        if not files and sources:  # listed when a warning names its first file, not on every load
            files.extend(s[0] for s in sources if not str(s[0]).endswith("/"))
        at = start[split] + int(i)
        return files[at] if at < len(files) else f"{split} image {i}"

    return name
