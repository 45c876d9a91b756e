"""Validation labels come out of the budget, never from the test set.

``validation_folds`` returns (fit, val) index pairs inside a budget: one stratified hold-out split when every
class has enough images for it, stratified k-fold cross-validation when a budget is too small to split once
(Oliver et al. 2018, arXiv:1804.09170, on why realistic evaluation must validate within the labels it has), and
nothing when a class has a single image (then no hyperparameter can be chosen honestly; defaults are used).
"""

from __future__ import annotations

import numpy as np


def split_train_val(indices: np.ndarray, labels: np.ndarray, val_fraction: float, seed: int):
    """Stratified split of a budget's indices into (train, val); every class with >= 2 images keeps >= 1 in
    each part."""
    labels = np.asarray(labels)
    rng = np.random.default_rng([seed, 1])
    train, val = [], []
    for c in np.unique(labels[indices]):
        members = rng.permutation(indices[labels[indices] == c])
        n_val = min(max(1, round(val_fraction * len(members))), len(members) - 1) if len(members) > 1 else 0
        val.append(members[:n_val])
        train.append(members[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def validation_folds(
    indices: np.ndarray, labels: np.ndarray, val_fraction: float, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(fit, val) pairs inside ``indices``: one split if the smallest class has at least 1 / val_fraction
    images, else stratified k-fold with k = min(smallest class, round(1 / val_fraction)), else none."""
    indices, labels = np.asarray(indices), np.asarray(labels)
    classes, counts = np.unique(labels[indices], return_counts=True)
    smallest = counts.min()
    if smallest * val_fraction >= 1 - 1e-9:
        return [split_train_val(indices, labels, val_fraction, seed)]
    if smallest < 2:
        return []
    k = int(min(smallest, round(1 / val_fraction)))
    rng = np.random.default_rng([seed, 2])
    fold_of = np.empty(len(indices), dtype=int)
    for c in classes:
        where = np.flatnonzero(labels[indices] == c)
        fold_of[rng.permutation(where)] = np.arange(len(where)) % k  # each class spread over the k folds
    return [(np.sort(indices[fold_of != f]), np.sort(indices[fold_of == f])) for f in range(k)]
