"""DINO: a student matches the centred, sharpened output distribution of a momentum teacher across views.

Caron et al., "Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021, arXiv:2104.14294.
lightly's DINOProjectionHead, DINOLoss (centring, teacher temperature 0.04, student 0.1), update_momentum and
cosine momentum schedule (0.996 -> 1 as in the paper). Global views follow lightly's CIFAR-10 parameters.

Multi-crop: ``local_views`` extra crops of half the image side (scale 0.05-0.4 as in the paper) seen by the
student only; default 0 at 32 px, as in lightly's CIFAR-10 benchmark, and 6 above 32 px (the paper uses 6-10).
Deviations: head 512-64-2048 by default instead of 2048-256-65536 (CIFAR-scale encoders).
"""

from __future__ import annotations

import copy

import torch
from lightly.loss import DINOLoss
from lightly.models.modules import DINOProjectionHead
from pydantic import Field

from bench.tasks.joint import JointConfig, Momentum, TwoViewTask, momentum_field
from bench.views import ViewConfig


class DINOConfig(JointConfig):
    bottleneck_dim: int = Field(64, gt=0)
    out_dim: int = 2048
    momentum: float = momentum_field(0.996)
    local_views: int | None = Field(None, ge=0)  # None: 0 at <= 32 px, 6 above
    local_min_scale: float = Field(0.05, gt=0, le=1)
    local_max_scale: float = Field(0.4, gt=0, le=1)


class DINO(TwoViewTask):
    name = "dino"
    summary = "self-distillation: student matches a momentum teacher's centred outputs"
    reference = "Caron et al. 2021, arXiv:2104.14294"
    Config = DINOConfig
    monotone_loss = False  # measured against a moving teacher and centre: not monotone on one fixed batch

    def __init__(self, encoder, cfg: DINOConfig, image_size: int) -> None:
        super().__init__(encoder, cfg, image_size)
        dims = (encoder.out_dim, cfg.hidden_dim, cfg.bottleneck_dim, cfg.out_dim)
        self.head = DINOProjectionHead(*dims)
        copies = [copy.deepcopy(encoder), DINOProjectionHead(*dims)]  # the head's weight norm cannot be deep-copied
        self.teacher = Momentum(encoder, self.head, start=cfg.momentum, copies=copies)
        self.criterion = DINOLoss(output_dim=cfg.out_dim)
        self.n_local = cfg.local_views if cfg.local_views is not None else (0 if image_size <= 32 else 6)

    def after_step(self, step: int, total_steps: int) -> None:
        self.teacher.update(step, total_steps)

    def view_configs(self) -> list[tuple[ViewConfig, int]]:
        """Two global views, then the local crops (half the side, scale ``local_min_scale``-``local_max_scale``)."""
        local = self.cfg.views.model_copy(
            update={"min_scale": self.cfg.local_min_scale, "max_scale": self.cfg.local_max_scale}
        )
        return super().view_configs() + [(local, max(8, self.image_size // 2))] * self.n_local

    def loss_views(self, *views: torch.Tensor) -> torch.Tensor:
        teacher = [self.teacher(v) for v in views[:2]]  # the teacher sees the global views only
        student = [self.head(self.encoder(v)) for v in views]
        return self.criterion(teacher, student)
