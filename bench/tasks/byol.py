"""BYOL: an online network predicts a momentum target network's projection of the other view; no negatives.

Grill et al., "Bootstrap your own latent", NeurIPS 2020, arXiv:2006.07733. lightly's BYOLProjectionHead,
BYOLPredictionHead, NegativeCosineSimilarity, update_momentum and cosine momentum schedule (0.99 -> 1). The 0.99
is lightly's CIFAR-10 benchmark's (docs/source/getting_started/benchmarks/cifar10_benchmark.py: 200 epochs at
batch 128 with the last partial batch dropped, 390 steps an epoch on 50,000 images: ``momentum_steps`` = 78,000);
the start momentum scales with the run's total steps so that the target renews as much over the run
(``bench.tasks.joint.Momentum``). The online encoder is the one evaluated, as in the paper. The two
views are asymmetric as in the paper (lightly's BYOLView1/View2Transform parameters: blur 1.0 / 0.1, solarize
0 / 0.2), except blur off at 32 px, as in lightly's CIFAR-10 benchmark (solarization stays).

Deviations: hidden width 1024 by default instead of 4096 (CIFAR-scale encoders); LARS replaced by the suite's
shared optimiser.
"""

from __future__ import annotations

import torch
from lightly.loss import NegativeCosineSimilarity
from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead

from bench.augment.views import BYOL_VIEW1, BYOL_VIEW2, ViewConfig
from bench.tasks.joint import JointConfig, Momentum, TwoViewTask, momentum_field, momentum_steps_field


class BYOLConfig(JointConfig):
    hidden_dim: int = 1024
    out_dim: int = 256
    momentum: float = momentum_field(0.99)  # lightly's CIFAR-10 benchmark, for momentum_steps
    momentum_steps: int | None = momentum_steps_field(78_000)  # its 200 epochs of 390 steps (batch 128)
    views: ViewConfig = ViewConfig(**BYOL_VIEW1)
    views2: ViewConfig | None = ViewConfig(**BYOL_VIEW2)


class BYOL(TwoViewTask):
    name = "byol"
    summary = "predict the momentum network's projection of the other view (no negatives)"
    reference = "Grill et al. 2020, arXiv:2006.07733"
    version = 2
    Config = BYOLConfig

    def __init__(self, encoder, cfg: BYOLConfig, image_size: int) -> None:
        super().__init__(encoder, cfg, image_size)
        self.projection = BYOLProjectionHead(encoder.out_dim, cfg.hidden_dim, cfg.out_dim)
        self.prediction = BYOLPredictionHead(cfg.out_dim, cfg.hidden_dim, cfg.out_dim)
        self.target = Momentum(encoder, self.projection, momentum=cfg.momentum, reference_steps=cfg.momentum_steps)
        self.criterion = NegativeCosineSimilarity()

    def after_step(self, step: int, total_steps: int) -> None:
        self.target.update(step, total_steps)

    def records(self) -> dict[str, float]:
        return self.target.record()

    def loss_views(self, v1: torch.Tensor, v2: torch.Tensor) -> torch.Tensor:
        p1 = self.prediction(self.projection(self.encoder(v1)))
        p2 = self.prediction(self.projection(self.encoder(v2)))
        t1, t2 = self.target(v1), self.target(v2)
        return 0.5 * (self.criterion(p1, t2) + self.criterion(p2, t1))
