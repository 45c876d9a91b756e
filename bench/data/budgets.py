"""Label budgets: seeded, class-balanced and nested subsets of the labelled pool."""

from __future__ import annotations

import numpy as np
import torch

from bench.errors import DataError

# ---------------------------------------------------------------- label budgets


def budget_indices(labels: np.ndarray | torch.Tensor, budget: int | str, seed: int) -> np.ndarray:
    """Indices of a class-balanced labelled subset of ``budget`` images, drawn from ``seed``.

    Nested: for one seed, each class's images are taken as a prefix of one seeded permutation, and the
    remainder ``budget % classes`` goes to classes in one seeded order, so every smaller budget's subset lies
    inside every larger one's. ``"full"`` is every index. (scikit-learn's stratified splitters draw each size
    independently, so their subsets are not nested; that is why this is written here.)
    """
    labels = np.asarray(labels)
    if budget == "full":
        return np.arange(len(labels))
    classes = np.unique(labels)
    if budget < len(classes):
        raise DataError(f"budget {budget} is smaller than the number of classes ({len(classes)})")
    if budget > len(labels):
        raise DataError(f"budget {budget} exceeds the {len(labels)} labelled training images")
    rng = np.random.default_rng(seed)
    rank = {c: r for r, c in enumerate(rng.permutation(classes))}
    per_class = {c: budget // len(classes) + (rank[c] < budget % len(classes)) for c in classes}
    picked = []
    for c in classes:  # one permutation per class, drawn in class order: nested across budgets
        members = rng.permutation(np.flatnonzero(labels == c))
        if per_class[c] > len(members):
            raise DataError(f"budget {budget} needs {per_class[c]} images of class {c}; it has {len(members)}")
        picked.append(members[: per_class[c]])
    return np.sort(np.concatenate(picked))
