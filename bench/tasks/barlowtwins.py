"""Barlow Twins: make the cross-correlation matrix of the two views' embeddings close to the identity.

Zbontar, Jing, Misra, LeCun & Deny, "Barlow Twins: Self-Supervised Learning via Redundancy Reduction",
ICML 2021, arXiv:2103.03230. lightly's BarlowTwinsProjectionHead and BarlowTwinsLoss (lambda 5e-3 as in the
paper). Views: BYOL's two asymmetric views, as in the paper and lightly's Barlow Twins examples (lightly's
BYOLView1/View2Transform: blur 1.0 / 0.1, solarize 0 / 0.2), with blur off at 32 px as in lightly's CIFAR-10
benchmark.

Deviations: projector 2048-2048 by default instead of 8192-8192-8192 (CIFAR-scale encoders); LARS replaced by
the suite's shared optimiser.
"""

from __future__ import annotations

import torch
from lightly.loss import BarlowTwinsLoss
from lightly.models.modules import BarlowTwinsProjectionHead
from pydantic import Field

from bench.augment.views import BYOL_VIEW1, BYOL_VIEW2, ViewConfig
from bench.tasks.joint import JointConfig, TwoViewTask


class BarlowTwinsConfig(JointConfig):
    hidden_dim: int = 2048
    out_dim: int = 2048
    lambda_param: float = Field(5e-3, gt=0)
    views: ViewConfig = ViewConfig(**BYOL_VIEW1)
    views2: ViewConfig | None = ViewConfig(**BYOL_VIEW2)


class BarlowTwins(TwoViewTask):
    name = "barlowtwins"
    summary = "cross-correlation of the two views' embeddings pushed to the identity"
    reference = "Zbontar et al. 2021, arXiv:2103.03230"
    Config = BarlowTwinsConfig

    def __init__(self, encoder, cfg: BarlowTwinsConfig, image_size: int) -> None:
        super().__init__(encoder, cfg, image_size)
        self.head = BarlowTwinsProjectionHead(encoder.out_dim, cfg.hidden_dim, cfg.out_dim)
        self.criterion = BarlowTwinsLoss(lambda_param=cfg.lambda_param)

    def loss_views(self, v1: torch.Tensor, v2: torch.Tensor) -> torch.Tensor:
        return self.criterion(self.head(self.encoder(v1)), self.head(self.encoder(v2)))
