"""iBOT: DINO's self-distillation of whole views, plus masked image modelling in the same space: the student sees
its global views with some patches masked and matches, at each masked patch, the teacher's output for the
unmasked patch.

Zhou, Wei, Wang, Shen, Xie, Yuille & Kong, "iBOT: Image BERT Pre-Training with Online Tokenizer", ICLR 2022,
arXiv:2111.07832. Everything of ``bench.tasks.dino`` but the crops (lightly's DINOProjectionHead and DINOLoss, the
momentum teacher, the last layer frozen early, the teacher evaluated) plus lightly's IBOTPatchLoss on the masked
patch tokens, through the same projection head (the paper's shared head). As in the paper, half the images of a
batch are masked, each with a ratio drawn from 0.1-0.5 of its patches, and the two losses are added. Views:
lightly's IBOTTransform (global crops of scale 0.25-1, local crops of scale 0.05-0.25, 10 local crops above 32 px;
blur and solarization as DINO's).

Deviations: the image-level output is the mean of the patch tokens (the shared ViT's pooled features, which the
protocols evaluate) instead of the class token; patches are masked at random places, not in blocks (lightly's
block masks draw from torch's global generator; these masks come from the run's); DINO's deviations (head size,
blur off at 32 px, no local crops at 32 px, local crops of half the image side, bilinear resampling) hold
here too.
"""

from __future__ import annotations

import torch
from lightly.loss import IBOTPatchLoss
from pydantic import Field

from bench.augment.views import ViewConfig
from bench.tasks.dino import DINO, DINOConfig

GLOBAL_VIEW = dict(min_scale=0.25, cj_sat=0.4)  # lightly's IBOTTransform: strength 0.5 x (0.8, 0.8, 0.4, 0.2)


class IBOTConfig(DINOConfig):
    views: ViewConfig = ViewConfig(**GLOBAL_VIEW, gaussian_blur_above_32=1.0)
    views2: ViewConfig | None = ViewConfig(**GLOBAL_VIEW, gaussian_blur_above_32=0.1, solarization_prob=0.2)
    local_max_scale: float = Field(0.25, gt=0, le=1)
    mask_probability: float = Field(0.5, ge=0, le=1)  # fraction of the images whose global views are masked
    mask_ratio: tuple[float, float] = (0.1, 0.5)  # of a masked image's patches, drawn per image
    patch_weight: float = Field(1.0, ge=0)  # the patch loss's weight beside the image loss


def patch_masks(batch: int, patches: int, cfg: IBOTConfig, gen: torch.Generator) -> torch.Tensor:
    """(batch, patches) booleans: ``mask_probability`` of the images get a ratio from ``mask_ratio`` of their
    patches masked, at random places; the others none."""
    chosen = torch.rand(batch, generator=gen) < cfg.mask_probability
    ratio = cfg.mask_ratio[0] + torch.rand(batch, generator=gen) * (cfg.mask_ratio[1] - cfg.mask_ratio[0])
    counts = torch.where(chosen, (ratio * patches).round().clamp(min=1), torch.zeros(batch)).long()
    ranks = torch.rand(batch, patches, generator=gen).argsort(1).argsort(1)
    return ranks < counts.unsqueeze(1)


class IBOT(DINO):
    name = "ibot"
    summary = "DINO plus masked patch self-distillation: masked patches match the teacher's (ViT)"
    reference = "Zhou et al. 2022, arXiv:2111.07832"
    version = 2
    Config = IBOTConfig
    encoder_kinds = ("vit",)
    local_views_above_32 = 10

    def __init__(self, encoder, cfg: IBOTConfig, image_size: int) -> None:
        super().__init__(encoder, cfg, image_size)
        self.patch_criterion = IBOTPatchLoss(output_dim=cfg.out_dim)

    def loss(self, images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        views = self.views(images, gen)
        side = views[0].shape[-1] // self.encoder.patch_size
        masks = [patch_masks(len(images), side * side, self.cfg, gen).to(images.device) for _ in range(2)]
        return self.masked_loss(views, masks, side)

    def masked_loss(self, views: list[torch.Tensor], masks: list[torch.Tensor], side: int) -> torch.Tensor:
        teacher_encoder, teacher_head = self.teacher.copies
        teacher_out, student_out, patch_losses = [], [], []
        for view, mask in zip(views[:2], masks):
            with torch.no_grad():
                t = teacher_encoder.masked.encode(images=view)[:, 1:]  # patch tokens, the class token left out
                teacher_out.append(teacher_head(t.mean(1)))
            full = torch.cat([torch.zeros_like(mask[:, :1]), mask], 1)  # the class token is never masked
            s = self.encoder.masked.encode(images=view, mask=full)[:, 1:]
            student_out.append(self.head(s.mean(1)))
            if mask.any():
                with torch.no_grad():
                    t_patch = teacher_head(t[mask])
                s_patch = self.head(s[mask])
                patch_losses.append(self.patch_criterion(t_patch, s_patch, mask.view(-1, side, side)))
        student_out += [self.head(self.encoder(v)) for v in views[2:]]  # local crops, unmasked, student only
        loss = self.criterion(teacher_out, student_out)
        if patch_losses:
            loss = loss + self.cfg.patch_weight * torch.stack(patch_losses).mean()
        return loss
