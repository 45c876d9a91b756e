"""Relative patch location: given the centre patch of a 3x3 grid and one of its eight neighbours, predict
which neighbour it is.

Doersch, Gupta & Efros, "Unsupervised Visual Representation Learning by Context Prediction", ICCV 2015,
arXiv:1505.05192. As in the paper: gaps between patches and per-patch jitter against trivial shortcuts
(continuing edges and textures), a siamese network (the shared encoder) on both patches, features concatenated
and classified 8-way. Against the chromatic-aberration shortcut the paper describes colour dropping (two of three
channels replaced by noise); ``color_dropping`` applies it per patch.

Geometry (``patch_fraction``, ``max_shift``). The paper's 96 px patches with 48 px gaps and up to 7 px of jitter
are followed from 64 px: patches 2/3 of a grid cell (patch : gap = 2 : 1), shifted by up to 7/96 of their side.
96 px images -> 32 px cells, 21 px patches, gaps 11 px on average (7-15 px with 2 px of jitter per patch).
Below 64 px the paper's proportions would leave patches of about 6 px, too small for the encoder, so patches fill
85% of a cell at a random position inside it: 32 px -> 10 px cells, 8 px patches, gaps 0-4 px (a compromise:
narrower gaps make edge-continuation shortcuts easier). Images under 18 px are refused (patches under 5 px).
Labels: neighbour positions 0..7 in row-major order of the grid with the centre left out
(0 = top-left, 1 = top, 2 = top-right, 3 = left, 4 = right, 5 = bottom-left, 6 = bottom, 7 = bottom-right).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from bench.augment.ops import grid_tiles, standardize_tiles, to_unit
from bench.tasks.base import Task, TaskConfig

NEIGHBOURS = (0, 1, 2, 3, 5, 6, 7, 8)  # grid cells around the centre cell 4, in label order


def color_drop(patches: torch.Tensor, gen: torch.Generator, noise: float = 0.01) -> torch.Tensor:
    """Keep one random channel per patch; the other two become small Gaussian noise. (B, C, t, t)."""
    b, c = patches.shape[:2]
    keep = torch.randint(0, c, (b,), device=patches.device, generator=gen)
    mask = F.one_hot(keep, c).to(patches.dtype)[:, :, None, None]
    jitter = noise * torch.randn(patches.shape, device=patches.device, generator=gen)
    return patches * mask + (1 - mask) * (patches.mean((1, 2, 3), keepdim=True) + jitter)


PAPER_FROM = 64  # px: the image side from which the paper's proportions apply
MIN_PATCH = 5  # px: a smaller patch holds too little to say where it came from


class RelativeLocationConfig(TaskConfig):
    head_hidden: int = Field(512, gt=0)
    color_dropping: bool = True
    patch_fraction: float | None = Field(None, gt=0, le=1)  # patch side / cell side; None: 2/3 from 64 px, 0.85 below
    max_shift: int | None = Field(None, ge=0)  # px off the cell's centre; None: 7/96 of the patch from 64 px, else free


class RelativeLocation(Task):
    name = "relative_location"
    summary = "predict the 8-way position of a neighbouring patch relative to the centre patch"
    reference = "Doersch et al. 2015, arXiv:1505.05192"
    Config = RelativeLocationConfig
    min_image_size = 18  # 6 px cells, 5 px patches

    def __init__(self, encoder, cfg: RelativeLocationConfig, image_size: int) -> None:
        super().__init__(encoder, cfg, image_size)
        paper = image_size >= PAPER_FROM
        self.fraction = cfg.patch_fraction or (2 / 3 if paper else 0.85)
        patch = int(image_size // 3 * self.fraction)
        self.max_shift = cfg.max_shift if cfg.max_shift is not None else (round(patch * 7 / 96) if paper else None)
        if patch < MIN_PATCH:
            raise ValueError(f"relative_location: patches of {patch} px at {image_size} px; at least {MIN_PATCH}")
        d = encoder.out_dim
        self.head = nn.Sequential(
            nn.Linear(2 * d, cfg.head_hidden), nn.BatchNorm1d(cfg.head_hidden), nn.ReLU(), nn.Linear(cfg.head_hidden, 8)
        )

    def pairs(self, images: torch.Tensor, gen: torch.Generator):
        """Centre patches, neighbour patches (B, C, t, t), labels (B,) and the patches' corners (B, 2, 2)."""
        tiles, corners = grid_tiles(to_unit(images), gen, tile_fraction=self.fraction, max_shift=self.max_shift)
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
