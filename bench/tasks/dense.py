"""A small convolutional decoder from the shared encoder's feature map to a dense prediction (colorization,
inpainting). Resolution-agnostic: it interpolates to the requested output size, so it works for every encoder
stride and image size."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DenseDecoder(nn.Module):
    def __init__(self, in_dim: int, out_channels: int, hidden: int = 64) -> None:
        super().__init__()
        self.reduce = nn.Sequential(nn.Conv2d(in_dim, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU())
        self.refine = nn.Sequential(
            nn.Conv2d(hidden, hidden, 3, padding=1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(),
            nn.Conv2d(hidden, out_channels, 1),
        )

    def forward(self, feature_map: torch.Tensor, size: int) -> torch.Tensor:
        """(B, in_dim, h, w) -> (B, out_channels, size, size)."""
        x = F.interpolate(self.reduce(feature_map), size=(size, size), mode="bilinear", align_corners=False)
        return self.refine(x)
