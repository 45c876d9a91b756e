"""Colorization: from the lightness channel alone, predict each region's colour as a distribution over
quantised ab bins, with class rebalancing towards rare colours.

Zhang, Isola & Efros, "Colorful Image Colorization", ECCV 2016, arXiv:1603.08511. As in the paper: CIE Lab,
ab quantised on a grid of 10 (the in-gamut bins, found by sampling the sRGB cube), soft-encoded targets
(5 nearest bins, Gaussian sigma 5), multinomial cross-entropy weighted by ((1 - lam) p + lam / Q)^-1 with
lam = 0.5, predicted at a quarter of the input resolution. The encoder sees L replicated to 3 channels, so the
shared encoder applies unchanged; a small decoder (``DenseDecoder``) maps its feature map to the bins.

Evaluation input: lightness only (``eval_input``), as Zhang et al. evaluate their features. The encoder never
saw colour: its first layer's colour directions got no gradient and its BatchNorm statistics come from L-only
inputs, so every protocol (linear, kNN, fine-tuning) feeds it L replicated to 3 channels, not RGB.

Deviations: the colour prior p is estimated online (an exponential moving average of batch histograms) instead
of once over ImageNet, and it is not spatially smoothed. Refuses grayscale data.
Resolution: 32 px -> targets at 8x8; 96 px -> 24x24. Smallest meaningful image: 8 px (2x2 colour regions).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from pydantic import Field

from bench.augment.ops import crop_flip, normalize, to_unit
from bench.tasks.base import Task, TaskConfig
from bench.tasks.dense import DenseDecoder

GRID = 10.0  # ab bin width


def rgb_to_lab(x: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1] (B, 3, H, W) -> CIE Lab (D65): L in [0, 100], a and b roughly in [-110, 110]."""
    lin = torch.where(x > 0.04045, ((x + 0.055) / 1.055) ** 2.4, x / 12.92)
    m = torch.tensor(
        [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]],
        device=x.device,
        dtype=x.dtype,
    )
    xyz = (
        torch.einsum("ij,bjhw->bihw", m, lin) / torch.tensor([0.950456, 1.0, 1.088754], device=x.device)[:, None, None]
    )
    f = torch.where(xyz > 0.008856, xyz.clamp_min(1e-8) ** (1 / 3), 7.787 * xyz + 16 / 116)
    return torch.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], 1)


@functools.lru_cache(maxsize=1)
def ab_bins() -> torch.Tensor:
    """Centres (Q, 2) of the grid cells that sRGB colours reach."""
    v = torch.linspace(0, 1, 32)
    cube = torch.stack(torch.meshgrid(v, v, v, indexing="ij")).reshape(1, 3, -1, 1)
    ab = rgb_to_lab(cube)[0, 1:, :, 0].T  # (32^3, 2)
    cells = torch.unique(torch.floor(ab / GRID), dim=0)
    return (cells + 0.5) * GRID


def soft_encode(ab: torch.Tensor, bins: torch.Tensor, k: int = 5, sigma: float = 5.0) -> torch.Tensor:
    """ab (N, 2) -> soft targets (N, Q): Gaussian weights on the k nearest bin centres."""
    dist, idx = torch.cdist(ab, bins).topk(k, largest=False)
    w = torch.softmax(-(dist**2) / (2 * sigma**2), dim=1)
    return torch.zeros(len(ab), len(bins), device=ab.device).scatter_(1, idx, w)


def decode(probs: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """(N, Q) bin probabilities -> (N, 2) ab (the distribution's mean)."""
    return probs @ bins


def lightness_input(lab: torch.Tensor) -> torch.Tensor:
    """Lab (B, 3, H, W) -> L / 100 replicated to 3 channels and normalised like every encoder input."""
    return normalize((lab[:, :1] / 100.0).expand(-1, 3, -1, -1))


class ColorizationConfig(TaskConfig):
    rebalance: float = Field(0.5, ge=0, le=1)  # lam: 0 = full rebalancing, 1 = none
    prior_momentum: float = Field(0.99, ge=0, lt=1)
    decoder_hidden: int = Field(64, gt=0)


class Colorization(Task):
    name = "colorization"
    encoder_kinds = ("cnn",)  # its decoder reads the encoder's feature map
    summary = "predict quantised ab colour bins from the lightness channel (class-rebalanced)"
    reference = "Zhang et al. 2016, arXiv:1603.08511"
    Config = ColorizationConfig
    min_image_size = 8  # targets at a quarter of the side: below 8 px fewer than 2x2 colour regions

    def __init__(self, encoder, cfg: ColorizationConfig, image_size: int) -> None:
        super().__init__(encoder, cfg, image_size)
        self.register_buffer("bins", ab_bins().clone())
        q = len(self.bins)
        self.register_buffer("prior", torch.full((q,), 1.0 / q))
        self.decoder = DenseDecoder(encoder.out_dim, q, cfg.decoder_hidden)
        self.out_size = max(1, image_size // 4)

    @staticmethod
    def eval_input(images: torch.Tensor) -> torch.Tensor:
        """uint8 RGB -> the normalised lightness channel replicated to 3 channels: the input it pretrained on."""
        return lightness_input(rgb_to_lab(to_unit(images)))

    @classmethod
    def check_data(cls, images: torch.Tensor) -> None:
        super().check_data(images)
        sample = images[:1000].to(torch.int16)
        if (sample[:, 0] == sample[:, 1]).all() and (sample[:, 1] == sample[:, 2]).all():
            raise ValueError("colorization needs colour images, but the dataset is grayscale (R = G = B everywhere)")

    def loss(self, images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        lab = rgb_to_lab(crop_flip(to_unit(images), gen, flip=self.flip))
        light = lightness_input(lab)
        logits = self.decoder(self.encoder.feature_map(light), self.out_size)  # (B, Q, s, s)
        ab = F.adaptive_avg_pool2d(lab[:, 1:], self.out_size).permute(0, 2, 3, 1).reshape(-1, 2).float()
        target = soft_encode(ab, self.bins)  # (B*s*s, Q)
        if self.training:  # online colour prior (EMA of the batch histogram)
            self.prior.mul_(self.cfg.prior_momentum).add_((1 - self.cfg.prior_momentum) * target.mean(0).detach())
        lam = self.cfg.rebalance
        weights = 1.0 / ((1 - lam) * self.prior + lam / len(self.bins))
        weights = weights / (self.prior * weights).sum()  # E_prior[w] = 1, as in the paper
        log_p = F.log_softmax(logits.permute(0, 2, 3, 1).reshape(-1, len(self.bins)).float(), dim=1)
        per_pixel = -(target * log_p).sum(1) * weights[target.argmax(1)]
        return per_pixel.mean()
