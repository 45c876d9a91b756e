"""DINO: a student matches the centred, sharpened output distribution of a momentum teacher across views.

Caron et al., "Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021, arXiv:2104.14294.
lightly's DINOProjectionHead, DINOLoss (centring, teacher temperature 0.04, student 0.1), update_momentum and
cosine momentum schedule (0.996 -> 1 as in the paper). The paper's 0.996 is for its 100-epoch ImageNet run at
batch 1024 (1251 steps an epoch: ``momentum_steps`` = 125,100); the start momentum scales with the run's total
steps so that the teacher renews as much over the run (``bench.tasks.joint.Momentum``). As in the paper (its first
epoch of 100), the last layer of the head is frozen for the first ``freeze_last_layer`` fraction (0.01) of the
run's optimiser steps, whatever the number of epochs. As in the paper, the teacher's encoder is the one evaluated
(and saved as the checkpoint). Views: lightly's DINOTransform (global crops of scale 0.4-1, blur 1.0 / 0.1,
solarize 0 / 0.2; local crops of scale 0.05-0.4, blur 0.5), with blur off at 32 px as in lightly's CIFAR-10
benchmark, which also keeps the 0.4-1 global scale without local crops.

Multi-crop: ``local_views`` extra crops of half the image side (lightly: 96 px next to 224 px global crops) seen
by the student only; no local crops at 32 px by default, as in lightly's CIFAR-10 benchmark, 6 above 32 px (the
paper uses 6-10). Deviations: head 512-64-2048 by default instead of 2048-256-65536 (CIFAR-scale encoders); crops
are resampled bilinear on the device (lightly's DINOTransform: bicubic).
"""

from __future__ import annotations

import copy

import torch
from lightly.loss import DINOLoss
from lightly.models.modules import DINOProjectionHead
from pydantic import Field

from bench.augment.views import ViewConfig
from bench.tasks.joint import JointConfig, Momentum, TwoViewTask, momentum_field, momentum_steps_field

GLOBAL_VIEW = dict(min_scale=0.4, cj_sat=0.4)  # lightly's: strength 0.5 x (0.8, 0.8, 0.4, 0.2)


class DINOConfig(JointConfig):
    bottleneck_dim: int = Field(64, gt=0)
    out_dim: int = 2048
    momentum: float = momentum_field(0.996)  # the paper's, for momentum_steps
    momentum_steps: int | None = momentum_steps_field(125_100)  # 100 ImageNet epochs at batch 1024
    views: ViewConfig = ViewConfig(**GLOBAL_VIEW, gaussian_blur_above_32=1.0)
    views2: ViewConfig | None = ViewConfig(**GLOBAL_VIEW, gaussian_blur_above_32=0.1, solarization_prob=0.2)
    local_views: int | None = Field(None, ge=0)  # None: 0 at <= 32 px, local_views_above_32 above
    local_min_scale: float = Field(0.05, gt=0, le=1)
    local_max_scale: float = Field(0.4, gt=0, le=1)
    freeze_last_layer: float = Field(0.01, ge=0, lt=1)  # fraction of the optimiser steps with the head's last
    # layer frozen (the paper: 1 epoch of 100)


class DINO(TwoViewTask):
    name = "dino"
    summary = "self-distillation: student matches a momentum teacher's centred outputs"
    reference = "Caron et al. 2021, arXiv:2104.14294"
    version = 2
    Config = DINOConfig
    monotone_loss = False  # measured against a moving teacher and centre: not monotone on one fixed batch
    local_views_above_32 = 6  # local crops when ``local_views`` is None and the images are larger than 32 px

    def __init__(self, encoder, cfg: DINOConfig, image_size: int) -> None:
        super().__init__(encoder, cfg, image_size)
        dims = (encoder.out_dim, cfg.hidden_dim, cfg.bottleneck_dim, cfg.out_dim)
        self.head = DINOProjectionHead(*dims)
        copies = [copy.deepcopy(encoder), DINOProjectionHead(*dims)]  # the head's weight norm cannot be deep-copied
        self.teacher = Momentum(
            encoder, self.head, momentum=cfg.momentum, reference_steps=cfg.momentum_steps, copies=copies
        )
        self.criterion = DINOLoss(output_dim=cfg.out_dim)
        default_local = 0 if image_size <= 32 else self.local_views_above_32
        self.n_local = cfg.local_views if cfg.local_views is not None else default_local
        # which last-layer parameters train at all (lightly fixes the weight norm's scale, weight_g)
        self.last_trainable = [p.requires_grad for p in self.head.last_layer.parameters()]
        self.frozen_steps: int | None = None  # steps with the last layer frozen in this run, set at its first step

    def before_step(self, step: int, total_steps: int) -> None:
        """Freeze the last layer in the first ``freeze_last_layer`` of the steps: without gradients, the optimiser
        (weight decay included) leaves it exactly as it is."""
        self.frozen_steps = round(self.cfg.freeze_last_layer * total_steps)
        for p, trainable in zip(self.head.last_layer.parameters(), self.last_trainable):
            p.requires_grad_(trainable and step > self.frozen_steps)

    def after_step(self, step: int, total_steps: int) -> None:
        self.teacher.update(step, total_steps)

    def evaluated_encoder(self) -> torch.nn.Module:
        """The teacher's encoder: the paper evaluates the teacher (it performs better than the student)."""
        return self.teacher.copies[0]

    def records(self) -> dict[str, float]:
        frozen = {} if self.frozen_steps is None else {"last_layer_frozen_steps": float(self.frozen_steps)}
        return self.teacher.record() | frozen

    def extra_views(self) -> list[tuple[ViewConfig, int]]:
        """The local crops: half the image side, scale ``local_min_scale``-``local_max_scale``, blur 0.5 above
        32 px, no solarization (lightly's DINOTransform)."""
        update = {"min_scale": self.cfg.local_min_scale, "max_scale": self.cfg.local_max_scale}
        local = self.cfg.views.model_copy(update=update | {"gaussian_blur_above_32": 0.5, "solarization_prob": 0.0})
        return [(local, max(8, self.image_size // 2))] * self.n_local

    def loss_views(self, *views: torch.Tensor) -> torch.Tensor:
        teacher = [self.teacher(v) for v in views[:2]]  # the teacher sees the global views only
        student = [self.head(self.encoder(v)) for v in views]
        return self.criterion(teacher, student)
