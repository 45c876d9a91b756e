"""Relative patch location: given the centre patch of a 3x3 grid and one of its eight neighbours, predict
which neighbour it is.

Doersch, Gupta & Efros, "Unsupervised Visual Representation Learning by Context Prediction", ICCV 2015,
arXiv:1505.05192. As in the paper: gaps between patches and per-patch jitter (each patch 85% of its cell at a
random position inside it) against trivial shortcuts (continuing edges and textures), a siamese network (the
shared encoder) on both patches, features concatenated and classified 8-way. Against the chromatic-aberration
shortcut the paper describes colour dropping (two of three channels replaced by noise); ``color_dropping``
applies it per patch.

Patch sizes: 32 px images -> 10 px cells, 8 px patches; 96 px -> 32 px cells, 27 px patches.
Labels: neighbour positions 0..7 in row-major order of the grid with the centre left out
(0 = top-left, 1 = top, 2 = top-right, 3 = left, 4 = right, 5 = bottom-left, 6 = bottom, 7 = bottom-right).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from bench.augment import grid_tiles, standardize_tiles, to_unit
from bench.tasks.base import Task, TaskConfig

NEIGHBOURS = (0, 1, 2, 3, 5, 6, 7, 8)  # grid cells around the centre cell 4, in label order


def color_drop(patches: torch.Tensor, gen: torch.Generator, noise: float = 0.01) -> torch.Tensor:
    """Keep one random channel per patch; the other two become small Gaussian noise. (B, C, t, t)."""
    b, c = patches.shape[:2]
    keep = torch.randint(0, c, (b,), device=patches.device, generator=gen)
    mask = F.one_hot(keep, c).to(patches.dtype)[:, :, None, None]
    jitter = noise * torch.randn(patches.shape, device=patches.device, generator=gen)
    return patches * mask + (1 - mask) * (patches.mean((1, 2, 3), keepdim=True) + jitter)


class RelativeLocationConfig(TaskConfig):
    head_hidden: int = Field(512, gt=0)
    color_dropping: bool = True


class RelativeLocation(Task):
    name = "relative_location"
    summary = "predict the 8-way position of a neighbouring patch relative to the centre patch"
    reference = "Doersch et al. 2015, arXiv:1505.05192"
    Config = RelativeLocationConfig

    def __init__(self, encoder, cfg: RelativeLocationConfig, image_size: int) -> None:
        super().__init__(encoder, cfg, image_size)
        d = encoder.out_dim
        self.head = nn.Sequential(
            nn.Linear(2 * d, cfg.head_hidden), nn.BatchNorm1d(cfg.head_hidden), nn.ReLU(), nn.Linear(cfg.head_hidden, 8)
        )

    def pairs(self, images: torch.Tensor, gen: torch.Generator):
        """Centre patches, neighbour patches (B, C, t, t), labels (B,) and the patches' corners (B, 2, 2)."""
        tiles, corners = grid_tiles(to_unit(images), gen)
        b = tiles.shape[0]
        labels = torch.randint(0, 8, (b,), device=images.device, generator=gen)
        cell = torch.tensor(NEIGHBOURS, device=images.device)[labels]
        rows = torch.arange(b, device=images.device)
        return tiles[:, 4], tiles[rows, cell], labels, torch.stack([corners[:, 4], corners[rows, cell]], 1)

    def loss(self, images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        centre, other, labels, _ = self.pairs(images, gen)
        if self.cfg.color_dropping:
            centre, other = color_drop(centre, gen), color_drop(other, gen)
        feats = self.encoder(standardize_tiles(torch.cat([centre, other])))
        f1, f2 = feats.chunk(2)
        return F.cross_entropy(self.head(torch.cat([f1, f2], 1)), labels)
