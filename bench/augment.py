"""Batched augmentations on the training device: one call transforms a whole uint8 batch, with random
parameters drawn per image from the given generator (no per-image Python, no DataLoader workers)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Fixed input scaling: uint8 [0, 255] -> roughly zero-mean, unit-range floats. Every encoder starts with a
# BatchNorm after its first conv, so per-dataset statistics would change nothing of substance.
MEAN, STD = 0.5, 0.25


def to_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, H, W) -> normalised float32 (B, C, H, W)."""
    return (images.float() / 255.0 - MEAN) / STD


def random_flip(x: torch.Tensor, gen: torch.Generator, p: float = 0.5) -> torch.Tensor:
    """Horizontal flip of each image with probability p."""
    flip = torch.rand(x.shape[0], device=x.device, generator=gen) < p
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def random_crop(x: torch.Tensor, gen: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Reflect-pad by ``pad`` pixels and crop back to (H, W) at a random offset per image."""
    b, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    oy = torch.randint(0, 2 * pad + 1, (b,), device=x.device, generator=gen)
    ox = torch.randint(0, 2 * pad + 1, (b,), device=x.device, generator=gen)
    rows = (oy[:, None] + torch.arange(h, device=x.device))[:, :, None]  # (B, H, 1)
    cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, :]  # (B, 1, W)
    batch = torch.arange(b, device=x.device)[:, None, None]
    return padded[batch, :, rows, cols].permute(0, 3, 1, 2)  # advanced indexing puts C last


def crop_flip(x: torch.Tensor, gen: torch.Generator, pad: int = 4) -> torch.Tensor:
    """The standard CIFAR augmentation (pad-and-crop, horizontal flip) on a float batch."""
    return random_flip(random_crop(x, gen, pad), gen)


def all_rotations(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image at 0, 90, 180 and 270 degrees: (4B, C, H, W) images and (4B,) labels 0..3."""
    views = torch.cat([torch.rot90(x, k, dims=(2, 3)) for k in range(4)])
    labels = torch.arange(4, device=x.device).repeat_interleave(x.shape[0])
    return views, labels
