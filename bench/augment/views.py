"""Augmented views for the joint-embedding tasks, built batch-wise on the training device.

``ViewConfig`` carries the parameters of lightly's transforms (``SimCLRTransform``, ``BYOLView1Transform`` ...)
under the same names; each task sets the defaults of lightly's transform for its method (the presets below), and
tests/test_view_params.py compares them with lightly's classes. House-wide choices, for every task:

- blur off at 32 px, as in lightly's CIFAR-10 benchmark; above 32 px a view blurs with the probability of
  lightly's transform for that view (``gaussian_blur_above_32``), unless ``gaussian_blur`` is set;
- SimCLR's colour factors at strength 0.5 (SimCLR, SwaV): lightly recommends 0.5 for small images and uses it
  in its CIFAR-10 benchmark; bench keeps it up to 96 px (lightly's default 1.0 is its ImageNet value);
- a fixed input scaling (``bench.augment.MEAN``/``STD``) instead of ImageNet's normalisation.
"""

from __future__ import annotations

import torch
from pydantic import Field, model_validator

from bench.augment.ops import (
    MEAN,
    STD,
    color_jitter,
    gaussian_blur,
    normalize,
    random_grayscale,
    random_resized_crop,
    random_solarize,
    to_unit,
)
from bench.config.settings import Settings


class ViewConfig(Settings):
    min_scale: float = Field(0.08, gt=0, le=1)  # RandomResizedCrop area fraction bounds
    max_scale: float = Field(1.0, gt=0, le=1)
    cj_prob: float = Field(0.8, ge=0, le=1)
    cj_strength: float = Field(0.5, ge=0)  # multiplies the four factors below (lightly: 0.5 for small images)
    cj_bright: float = Field(0.8, ge=0)
    cj_contrast: float = Field(0.8, ge=0)
    cj_sat: float = Field(0.8, ge=0)
    cj_hue: float = Field(0.2, ge=0, le=0.5)
    random_gray_scale: float = Field(0.2, ge=0, le=1)
    gaussian_blur: float | None = Field(None, ge=0, le=1)  # None: 0 at <= 32 px, gaussian_blur_above_32 above
    gaussian_blur_above_32: float = Field(0.5, ge=0, le=1)  # lightly's default blur probability for this view
    solarization_prob: float = Field(0.0, ge=0, le=1)
    hf_prob: float = Field(0.5, ge=0, le=1)

    @model_validator(mode="after")
    def _scale_range(self) -> ViewConfig:
        if self.min_scale > self.max_scale:
            raise ValueError(f"min_scale {self.min_scale} is above max_scale {self.max_scale}")
        return self


# lightly's per-method transform defaults as ViewConfig arguments (ViewConfig's own defaults: SimCLR at
# strength 0.5). MoCo v2 and SimSiam share theirs; Barlow Twins uses BYOL's two views, as its paper does.
MOCO_V2 = dict(min_scale=0.2, cj_strength=1.0, cj_bright=0.4, cj_contrast=0.4, cj_sat=0.4, cj_hue=0.1)
BYOL_VIEW1 = dict(cj_strength=1.0, cj_bright=0.4, cj_contrast=0.4, cj_sat=0.2, cj_hue=0.1, gaussian_blur_above_32=1.0)
BYOL_VIEW2 = BYOL_VIEW1 | dict(gaussian_blur_above_32=0.1, solarization_prob=0.2)


# On the CPU a view is built in chunks of about this many pixels: the dozen passes of the colour operations then
# run on cache-resident data, about twice as fast on 32 px images as one pass over a 512-image batch.
CPU_CHUNK_PIXELS = 128 * 32 * 32


def make_view(images: torch.Tensor, gen: torch.Generator, cfg: ViewConfig, size: int | None = None) -> torch.Tensor:
    """One augmented, normalised view (B, 3, size, size) of a uint8 batch (B, 3, H, W)."""
    size = size or images.shape[-1]
    chunk = max(1, CPU_CHUNK_PIXELS // (images.shape[-1] * images.shape[-2]))
    if images.device.type == "cpu" and len(images) > chunk:
        return torch.cat([make_view(part, gen, cfg, size) for part in images.split(chunk)])
    x = random_resized_crop(to_unit(images), gen, size, scale=(cfg.min_scale, cfg.max_scale), flip_p=cfg.hf_prob)
    s = cfg.cj_strength
    x = color_jitter(x, gen, cfg.cj_prob, s * cfg.cj_bright, s * cfg.cj_contrast, s * cfg.cj_sat, s * cfg.cj_hue)
    x = random_grayscale(x, gen, cfg.random_gray_scale)
    x = gaussian_blur(x, gen, _blur_prob(cfg, images.shape[-1]))
    x = random_solarize(x, gen, cfg.solarization_prob)
    return normalize(x)


def _blur_prob(cfg: ViewConfig, image_size: int) -> float:
    if cfg.gaussian_blur is not None:
        return cfg.gaussian_blur
    return 0.0 if image_size <= 32 else cfg.gaussian_blur_above_32


def lightly_view(cfg: ViewConfig, image_size: int, size: int | None = None):
    """The same view as ``make_view``, made by lightly's per-image transform (PIL image in, normalised tensor
    out): the reference pipeline. lightly's ``BYOLView1Transform`` exposes every field of ``ViewConfig`` except
    the crop's upper scale, which is set on its RandomResizedCrop."""
    from lightly.transforms import BYOLView1Transform

    size = size or image_size
    view = BYOLView1Transform(
        input_size=size,
        cj_prob=cfg.cj_prob,
        cj_strength=cfg.cj_strength,
        cj_bright=cfg.cj_bright,
        cj_contrast=cfg.cj_contrast,
        cj_sat=cfg.cj_sat,
        cj_hue=cfg.cj_hue,
        min_scale=cfg.min_scale,
        random_gray_scale=cfg.random_gray_scale,
        gaussian_blur=_blur_prob(cfg, image_size),
        solarization_prob=cfg.solarization_prob,
        hf_prob=cfg.hf_prob,
        normalize={"mean": [MEAN] * 3, "std": [STD] * 3},
    )
    crop = view.transform.transforms[0]  # torchvision's (v1 or v2) RandomResizedCrop
    assert type(crop).__name__ == "RandomResizedCrop", "lightly's view transform no longer starts with its crop"
    crop.scale = (cfg.min_scale, cfg.max_scale)
    return view
