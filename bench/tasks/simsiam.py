"""SimSiam: a predictor maps one view's projection onto the other's, with a stop-gradient and no momentum.

Chen & He, "Exploring Simple Siamese Representation Learning", CVPR 2021, arXiv:2011.10566. lightly's
SimSiamProjectionHead, SimSiamPredictionHead (bottleneck of a quarter of the output width, as in the paper) and
NegativeCosineSimilarity. Views: lightly's SimSiamTransform (the paper's MoCo v2 augmentations, crop scale
0.2-1), with blur off at 32 px as in lightly's CIFAR-10 benchmark.

Deviations: projection width 512 by default (the paper's CIFAR variant uses 2048 with a ResNet-18).
"""

from __future__ import annotations

import torch
from lightly.loss import NegativeCosineSimilarity
from lightly.models.modules import SimSiamPredictionHead, SimSiamProjectionHead

from bench.augment.views import MOCO_V2, ViewConfig
from bench.tasks.joint import JointConfig, TwoViewTask


class SimSiamConfig(JointConfig):
    out_dim: int = 512
    views: ViewConfig = ViewConfig(**MOCO_V2)


class SimSiam(TwoViewTask):
    name = "simsiam"
    summary = "predict one view's projection from the other's, stop-gradient, no negatives"
    reference = "Chen & He 2021, arXiv:2011.10566"
    Config = SimSiamConfig

    def __init__(self, encoder, cfg: SimSiamConfig, image_size: int) -> None:
        super().__init__(encoder, cfg, image_size)
        self.projection = SimSiamProjectionHead(encoder.out_dim, cfg.hidden_dim, cfg.out_dim)
        self.prediction = SimSiamPredictionHead(cfg.out_dim, max(1, cfg.out_dim // 4), cfg.out_dim)
        self.criterion = NegativeCosineSimilarity()

    def loss_views(self, v1: torch.Tensor, v2: torch.Tensor) -> torch.Tensor:
        z1, z2 = self.projection(self.encoder(v1)), self.projection(self.encoder(v2))
        p1, p2 = self.prediction(z1), self.prediction(z2)
        return 0.5 * (self.criterion(p1, z2.detach()) + self.criterion(p2, z1.detach()))
