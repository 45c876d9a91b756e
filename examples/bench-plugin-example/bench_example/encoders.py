"""An encoder of one's own: any nn.Module that maps (B, 3, H, W) images to (B, out_dim) features."""

from __future__ import annotations

import torch
from torch import nn


class TinyVGG(nn.Module):
    """Three VGG-style blocks (32-64-128 channels, two 3x3 convs and a max-pool each), 128-d; about 290k weights."""

    out_dim = 128

    def __init__(self) -> None:
        super().__init__()
        layers, cin = [], 3
        for cout in (32, 64, 128):
            layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
            layers += [nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
            layers.append(nn.MaxPool2d(2))
            cin = cout
        self.features = nn.Sequential(*layers)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, 128, H/8, W/8), for tasks with a dense decoder."""
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean((2, 3))
