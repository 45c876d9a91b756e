"""SwaV: predict the online-clustered (Sinkhorn) prototype assignment of one view from the other view.

Caron et al., "Unsupervised Learning of Visual Features by Contrasting Cluster Assignments", NeurIPS 2020,
arXiv:2006.09882. lightly's SwaVProjectionHead, SwaVPrototypes (frozen for the first ``frozen_steps`` steps, as
the paper freezes them for the first epoch) and SwaVLoss (3 Sinkhorn iterations, epsilon 0.05, temperature 0.1).
Views: lightly's SwaVTransform for the two global crops (scale 0.14-1).

Deviations: two crops, no multi-crop and no queue, at every size (lightly's CIFAR-10 benchmark setting; the paper
adds six 96 px crops at ImageNet scale); colour-jitter strength 0.5 (lightly's CIFAR-10 benchmark and its advice
for small images; its default 1.0 is the ImageNet value); blur off at 32 px, as in lightly's CIFAR-10 benchmark;
512 prototypes instead of 3000 (10 classes, 50k images).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from lightly.loss import SwaVLoss
from lightly.models.modules import SwaVProjectionHead, SwaVPrototypes
from pydantic import Field

from bench.augment.views import ViewConfig
from bench.tasks.joint import JointConfig, TwoViewTask


class SwaVConfig(JointConfig):
    prototypes: int = Field(512, gt=1)
    frozen_steps: int = Field(100, ge=0)
    views: ViewConfig = ViewConfig(min_scale=0.14)


class SwaV(TwoViewTask):
    name = "swav"
    summary = "swapped prediction of Sinkhorn cluster assignments between views"
    reference = "Caron et al. 2020, arXiv:2006.09882"
    Config = SwaVConfig

    def __init__(self, encoder, cfg: SwaVConfig, image_size: int) -> None:
        super().__init__(encoder, cfg, image_size)
        self.head = SwaVProjectionHead(encoder.out_dim, cfg.hidden_dim, cfg.out_dim)
        self.prototypes = SwaVPrototypes(cfg.out_dim, cfg.prototypes, n_steps_frozen_prototypes=cfg.frozen_steps)
        self.criterion = SwaVLoss()
        self.step = 0

    def after_step(self, step: int, total_steps: int) -> None:
        self.step = step

    def loss_views(self, v1: torch.Tensor, v2: torch.Tensor) -> torch.Tensor:
        self.prototypes.normalize()
        z = F.normalize(self.head(self.encoder(torch.cat([v1, v2]))), dim=1)
        p1, p2 = self.prototypes(z, self.step).chunk(2)
        return self.criterion([p1, p2], []).reshape(())  # lightly returns shape (1,)
