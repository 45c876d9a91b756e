"""Validation labels come out of the budget, never from the test set.

``validation_folds`` returns (fit, val) index pairs inside a budget: one stratified hold-out split when every
class has enough images for it, stratified k-fold cross-validation when a budget is too small to split once
(Oliver et al. 2018, arXiv:1804.09170, on why realistic evaluation must validate within the labels it has), and
nothing when a class has a single image (then no hyperparameter can be chosen honestly; defaults are used).
The splits are scikit-learn's (``train_test_split`` with ``stratify``, ``StratifiedKFold``), seeded.
"""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import StratifiedKFold, train_test_split


def split_train_val(indices: np.ndarray, labels: np.ndarray, val_fraction: float, seed: int):
    """Stratified split of a budget's indices into (train, val), each class in both parts. A budget with a class
    of one image cannot be split: all of it is kept for training. ``val_fraction`` of the budget must hold at
    least one image per class (``validation_folds`` checks it)."""
    indices, labels = np.asarray(indices), np.asarray(labels)
    if np.unique(labels[indices], return_counts=True)[1].min() < 2:
        return np.sort(indices), indices[:0]
    train, val = train_test_split(indices, test_size=val_fraction, stratify=labels[indices], random_state=seed)
    return np.sort(train), np.sort(val)


def validation_folds(
    indices: np.ndarray, labels: np.ndarray, val_fraction: float, seed: int, kfold_below: int = 1
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(fit, val) pairs inside ``indices``: one split if its validation part holds at least ``kfold_below``
    (and at least one) images of the smallest class, else stratified k-fold with k = min(smallest class,
    round(1 / val_fraction)) -- every label of the budget is validated on once --, else none."""
    indices, labels = np.asarray(indices), np.asarray(labels)
    classes, counts = np.unique(labels[indices], return_counts=True)
    smallest = counts.min()
    if smallest * val_fraction >= max(kfold_below, 1) - 1e-9:
        return [split_train_val(indices, labels, val_fraction, seed)]
    if smallest < 2:
        return []
    k = int(min(smallest, round(1 / val_fraction)))
    folds = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(indices, labels[indices])
    return [(np.sort(indices[fit]), np.sort(indices[val])) for fit, val in folds]
