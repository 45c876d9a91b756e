"""Label-free health of a representation, measured during pretraining on a fixed, seeded sample of the
unlabelled pool (no labels are read):

- RankMe (Garrido et al., "RankMe: Assessing the downstream performance of pretrained self-supervised
  representations by their rank", ICML 2023, arXiv:2210.02885): the effective rank of the feature matrix,
  exp of the entropy of its normalised singular values, p_k = s_k / sum(s) + eps. Higher means the features
  spread over more directions; the paper finds it tracks downstream accuracy within a method.
- Collapse signal: the mean per-dimension standard deviation of L2-normalised features (SimSiam, Chen and He
  2021), lightly's ``std_of_l2_normalized``: 0 when every image maps to one vector, about 1/sqrt(D) for
  isotropic features.

Both are computed on the encoder's features, the backbone output the probes use, in evaluation mode without
gradients and in full precision (bf16 features, as autocast gives on CUDA, inflate RankMe near collapse), so
training is not affected: parameters, BatchNorm statistics and random streams are untouched, and the training
mode is restored. The features are not centred, as in the paper's eq. 1.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from lightly.utils.debug import std_of_l2_normalized

BATCH = 1024  # images per forward pass
EPS = 1e-7  # the paper's epsilon, keeping log(p) finite for zero singular values


def rankme(features: torch.Tensor) -> float:
    """Effective rank of ``features`` (N, D), at most min(N, D) (Garrido et al. 2023, eq. 1)."""
    s = torch.linalg.svdvals(features.double())
    p = s / s.sum() + EPS
    return float(torch.exp(-(p * torch.log(p)).sum()))


def collapse_std(features: torch.Tensor) -> float:
    """lightly's std_of_l2_normalized: 0 for collapsed features, about 1/sqrt(D) for isotropic ones."""
    return float(std_of_l2_normalized(features.float()))


def health_sample(pool, size: int, seed: int) -> torch.Tensor:
    """A fixed subset of the pool (a tensor or a ``bench.data.pool.Pool``; the same subset for every task and epoch
    of a seed), in pool order, as a tensor."""
    if len(pool) <= size:
        return pool if isinstance(pool, torch.Tensor) else pool[:]
    keep = np.sort(np.random.default_rng(seed).permutation(len(pool))[:size])
    return pool[torch.from_numpy(keep)]


def measure(encoder: torch.nn.Module, images: torch.Tensor, device: torch.device, prepare) -> dict[str, float]:
    """RankMe and the collapse signal of ``encoder`` on ``images`` (uint8), and the seconds it took."""
    was_training = encoder.training
    start = time.perf_counter()
    encoder.eval()
    try:
        with torch.no_grad():  # no autocast: full precision (see the module docstring)
            batches = [images[i : i + BATCH].to(device, non_blocking=True) for i in range(0, len(images), BATCH)]
            features = torch.cat([encoder(prepare(b)).float() for b in batches])
    finally:
        encoder.train(was_training)
    return {"rankme": rankme(features), "collapse_std": collapse_std(features), "health_s": time.perf_counter() - start}


class HealthHook:
    """The training loop's hook (``bench.train.loop.EpochHook``): the measures every ``every`` epochs and at the
    last, of the encoder the task is evaluated on (``Task.evaluated_encoder``) on ``sample``, fed through
    ``prepare`` (the task's evaluation input)."""

    def __init__(self, sample: torch.Tensor, every: int, epochs: int, prepare) -> None:
        self.sample, self.every, self.epochs, self.prepare = sample, every, epochs, prepare

    def __call__(self, epoch: int, task) -> dict[str, float]:
        if not (epoch % self.every == 0 or epoch == self.epochs):
            return {}
        encoder = task.evaluated_encoder()
        return measure(encoder, self.sample, next(encoder.parameters()).device, self.prepare)
