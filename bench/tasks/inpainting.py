"""Inpainting (context encoder): mask a square region of each image and reconstruct it from the context.

Pathak, Krahenbuhl, Donahue, Darrell & Efros, "Context Encoders: Feature Learning by Inpainting", CVPR 2016,
arXiv:1604.07379. As in the paper's "random block" variant of the reconstruction objective: a square region of
half the image side at a random position per image is replaced by the mean value, and the L2 loss counts only
the masked pixels. A small decoder (``DenseDecoder``) maps the shared encoder's feature map back to full size.

Deviations: no adversarial loss (the paper adds one for sharper fills; the representation results it reports
for feature learning use the reconstruction loss); one square region instead of several random blocks.
Region sizes: 32 px -> 16x16 hole; 96 px -> 48x48. Images under 16 px are refused: the encoders' feature maps
have stride 8, so the decoder would paint the hole from a single feature vector.
Pad-and-crop and horizontal flips first (no flips where the dataset forbids them).
"""

from __future__ import annotations

import torch
from pydantic import Field

from bench.augment.ops import crop_flip, to_input
from bench.tasks.base import Task, TaskConfig
from bench.tasks.dense import DenseDecoder


def masked_l2(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the masked pixels only. pred, target (B, C, H, W); mask (B, 1, H, W) in {0, 1}."""
    sq = (pred - target) ** 2 * mask
    return sq.sum() / (mask.sum() * pred.shape[1]).clamp_min(1)


def square_masks(b: int, size: int, hole: int, gen: torch.Generator, device) -> torch.Tensor:
    """(B, 1, size, size) masks, 1 inside a hole x hole square at a random position per image."""
    top = torch.randint(0, size - hole + 1, (b, 1, 1, 1), device=device, generator=gen)
    left = torch.randint(0, size - hole + 1, (b, 1, 1, 1), device=device, generator=gen)
    ar = torch.arange(size, device=device)
    rows = (ar[None, None, :, None] >= top) & (ar[None, None, :, None] < top + hole)
    cols = (ar[None, None, None, :] >= left) & (ar[None, None, None, :] < left + hole)
    return (rows & cols).float()


class InpaintingConfig(TaskConfig):
    hole_fraction: float = Field(0.5, gt=0, lt=1)  # side of the masked square, as a fraction of the image side
    decoder_hidden: int = Field(64, gt=0)


class Inpainting(Task):
    name = "inpainting"
    encoder_kinds = ("cnn",)  # its decoder reads the encoder's feature map
    summary = "context encoder: reconstruct a masked square from its surroundings (L2 on the hole)"
    reference = "Pathak et al. 2016, arXiv:1604.07379"
    Config = InpaintingConfig
    min_image_size = 16

    def __init__(self, encoder, cfg: InpaintingConfig, image_size: int) -> None:
        super().__init__(encoder, cfg, image_size)
        self.decoder = DenseDecoder(encoder.out_dim, 3, cfg.decoder_hidden)
        self.hole = max(1, round(cfg.hole_fraction * image_size))

    def loss(self, images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        x = crop_flip(to_input(images), gen, flip=self.flip)
        b, _, size, _ = x.shape
        mask = square_masks(b, size, self.hole, gen, x.device)
        context = x * (1 - mask)  # 0 is the mean value after normalisation
        pred = self.decoder(self.encoder.feature_map(context), size)
        return masked_l2(pred.float(), x, mask)
