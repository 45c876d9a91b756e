"""Jigsaw puzzles: shuffle the 3x3 tiles of an image by one of a fixed set of permutations; predict which.

Noroozi & Favaro, "Unsupervised Learning of Visual Representations by Solving Jigsaw Puzzles", ECCV 2016,
arXiv:1603.09246. As in the paper: a 3x3 grid of tiles with random gaps and jitter (each tile 85% of its cell,
placed at random inside it), each tile normalised independently, the shared encoder applied to every tile
(siamese "context-free" network), the nine tile features concatenated in shuffled order and classified into
one of ``permutations`` classes (default 100) chosen greedily for maximal Hamming distance from a fixed seed.

Tile sizes: 32 px images -> 10 px cells, 8 px tiles; 96 px -> 32 px cells, 27 px tiles. Images under 18 px are
refused: their tiles would be under 5 px, too few pixels to place a tile.
Deviations: no colour jitter per tile, and the encoder's pooled features replace the paper's fc6 per tile.
"""

from __future__ import annotations

import functools
import itertools

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from bench.augment.ops import grid_tiles, standardize_tiles, to_unit
from bench.tasks.base import Task, TaskConfig


@functools.lru_cache(maxsize=8)
def permutation_set(size: int, seed: int = 0, n: int = 9) -> np.ndarray:
    """``size`` permutations of ``n`` tiles with maximal minimum Hamming distance (the paper's greedy
    algorithm: start from a random permutation, repeatedly add the one farthest from the set)."""
    perms = np.array(list(itertools.permutations(range(n))), dtype=np.int8)  # (n!, n)
    rng = np.random.default_rng(seed)
    chosen = [int(rng.integers(len(perms)))]
    min_dist = (perms != perms[chosen[0]]).sum(1)
    for _ in range(size - 1):
        nxt = int(np.argmax(min_dist))  # ties resolved by the first index: deterministic
        chosen.append(nxt)
        min_dist = np.minimum(min_dist, (perms != perms[nxt]).sum(1))
    return perms[chosen].astype(np.int64)


class JigsawConfig(TaskConfig):
    permutations: int = Field(100, ge=2, le=1000)
    permutation_seed: int = 0
    head_hidden: int = Field(512, gt=0)


class Jigsaw(Task):
    name = "jigsaw"
    summary = "reorder 3x3 shuffled tiles: classify which of N permutations was applied"
    reference = "Noroozi & Favaro 2016, arXiv:1603.09246"
    Config = JigsawConfig
    min_image_size = 18  # 6 px cells, 5 px tiles

    def __init__(self, encoder, cfg: JigsawConfig, image_size: int) -> None:
        super().__init__(encoder, cfg, image_size)
        self.register_buffer("perms", torch.from_numpy(permutation_set(cfg.permutations, cfg.permutation_seed)))
        d = encoder.out_dim
        self.head = nn.Sequential(
            nn.Linear(9 * d, cfg.head_hidden),
            nn.BatchNorm1d(cfg.head_hidden),
            nn.ReLU(),
            nn.Linear(cfg.head_hidden, cfg.permutations),
        )

    def loss(self, images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        tiles, _ = grid_tiles(to_unit(images), gen)  # (B, 9, C, t, t)
        b = tiles.shape[0]
        labels = torch.randint(0, len(self.perms), (b,), device=images.device, generator=gen)
        order = self.perms[labels]  # (B, 9): position j shows tile order[b, j]
        shuffled = tiles[torch.arange(b, device=images.device)[:, None], order]
        feats = self.encoder(standardize_tiles(shuffled).flatten(0, 1))  # (B*9, D)
        return F.cross_entropy(self.head(feats.reshape(b, -1)), labels)
