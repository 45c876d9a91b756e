"""A dataset of one's own: a function of the suite's [dataset] table that returns the decoded images."""

from __future__ import annotations

import numpy as np

CLASSES = ("disc", "square", "cross")


def load_shapes(cfg) -> tuple:
    """Generated discs, squares and crosses of random colour, size and place on noise, 32 px: 600 train and 300
    test images, and 1,200 unlabelled ones (``cfg`` is the suite's validated [dataset] table)."""
    size = 32

    def make(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        y = np.arange(n) % len(CLASSES)
        yy, xx = np.mgrid[0:size, 0:size]
        images = rng.integers(0, 60, (n, 3, size, size), dtype=np.uint8)
        for i, label in enumerate(y):
            cy, cx, r = rng.integers(10, 22), rng.integers(10, 22), rng.integers(5, 9)
            dy, dx = np.abs(yy - cy), np.abs(xx - cx)
            shape = [dy**2 + dx**2 <= r**2, (dy <= r) & (dx <= r), ((dy <= 1) | (dx <= 1)) & (dy <= r) & (dx <= r)]
            images[i][:, shape[label]] = rng.integers(100, 256, (3, 1), dtype=np.uint8)
        return images, y

    train_x, train_y = make(600, 1)
    test_x, test_y = make(300, 2)
    unlabeled_x, _ = make(1200, 3)
    return list(CLASSES), train_x, train_y, test_x, test_y, unlabeled_x
