"""VICReg: invariance between the two views' embeddings, plus variance and covariance regularisation.

Bardes, Ponce & LeCun, "VICReg: Variance-Invariance-Covariance Regularization for Self-Supervised Learning",
ICLR 2022, arXiv:2105.04906. lightly's VICRegProjectionHead and VICRegLoss (weights 25 / 25 / 1 as in the
paper). Views: lightly's VICRegTransform (the same for both views: solarize 0.1, blur 0.5, where the authors'
code alternates BYOL's 0 / 0.2 and 1.0 / 0.1), with blur off at 32 px as in lightly's CIFAR-10 benchmark.

Deviations: projector 2048-2048 by default instead of 8192-8192-8192 (CIFAR-scale encoders); LARS replaced by
the suite's shared optimiser; views are blurred before they are solarized (lightly: the other way round).
"""

from __future__ import annotations

import torch
from lightly.loss import VICRegLoss
from lightly.models.modules.heads import VICRegProjectionHead

from bench.augment.views import ViewConfig
from bench.tasks.joint import JointConfig, TwoViewTask


class VICRegConfig(JointConfig):
    hidden_dim: int = 2048
    out_dim: int = 2048
    views: ViewConfig = ViewConfig(cj_sat=0.4, solarization_prob=0.1)  # lightly's: strength 0.5 x (0.8, 0.8, 0.4, 0.2)


class VICReg(TwoViewTask):
    name = "vicreg"
    summary = "invariance + variance + covariance terms on two views' embeddings"
    reference = "Bardes et al. 2022, arXiv:2105.04906"
    Config = VICRegConfig

    def __init__(self, encoder, cfg: VICRegConfig, image_size: int) -> None:
        super().__init__(encoder, cfg, image_size)
        self.head = VICRegProjectionHead(encoder.out_dim, cfg.hidden_dim, cfg.out_dim, num_layers=2)
        self.criterion = VICRegLoss()

    def loss_views(self, v1: torch.Tensor, v2: torch.Tensor) -> torch.Tensor:
        return self.criterion(self.head(self.encoder(v1)), self.head(self.encoder(v2)))
