"""The reference data path: per-image PIL transforms (lightly's, or torchvision's where lightly has none) in
DataLoader workers, as lightly's and solo-learn's pipelines feed a model. Used by ``pretrain.augment =
"lightly"`` and by ``bench perf`` to compare against the on-device views with the same model step."""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Callable, Iterator

import numpy as np
import torch
from PIL import Image


class PilImages(torch.utils.data.Dataset):
    """uint8 images (N, 3, H, W), an array or anything indexed like one, as PIL images through ``transform``."""

    def __init__(self, images: np.ndarray, transform: Callable) -> None:
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        image = np.asarray(self.images[i])
        return self.transform(Image.fromarray(image.reshape(image.shape[-3:]).transpose(1, 2, 0)))


def default_workers() -> int:
    return min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def epoch_batches(
    images: np.ndarray, transform: Callable, batch: int, seed: int, epoch: int, workers: int, pin: bool
) -> Iterator[list[torch.Tensor]]:
    """One epoch of shuffled, transformed batches (the last partial batch dropped), each a list of views.

    The shuffle and every worker's random state derive from (seed, epoch) alone, so an epoch is the same
    whether or not the run was interrupted before it. With no workers the transforms run in this process
    under the same seeding, and the caller's random state is restored afterwards.
    """
    epoch_seed = seed * 1_000_003 + epoch
    loader = torch.utils.data.DataLoader(
        PilImages(images, transform),
        batch_size=batch,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        pin_memory=pin,
        generator=torch.Generator().manual_seed(epoch_seed),
    )
    with _seeded(epoch_seed) if workers == 0 else contextlib.nullcontext():
        for item in loader:
            yield item if isinstance(item, list | tuple) else [item]


@contextlib.contextmanager
def _seeded(seed: int):
    """Seed torch, numpy and random (lightly's blur and solarisation use numpy) like a DataLoader worker."""
    np_state, py_state = np.random.get_state(), random.getstate()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)
