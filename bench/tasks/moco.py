"""MoCo v2: contrast a query view against its momentum-encoded key and a queue of earlier keys.

Chen, Fan, Girshick & He, "Improved Baselines with Momentum Contrastive Learning", 2020, arXiv:2003.04297
(MoCo: He et al. 2020, arXiv:1911.05722). lightly's MoCoProjectionHead (2-layer MLP), NTXentLoss with a memory
bank as the queue, update_momentum and cosine_schedule. Paper settings: temperature 0.2, momentum 0.999,
queue 65536; here the defaults are the CIFAR-scale ones (queue 4096, momentum 0.99 rising to 1, temperature 0.2)
because a 65536 queue of a 50k-image dataset holds stale copies of every image. Views as SimCLR (lightly's
CIFAR-10 parameters). The loss is symmetrised over the two views.
"""

from __future__ import annotations

import torch
from lightly.loss import NTXentLoss
from lightly.models.modules import MoCoProjectionHead
from pydantic import Field

from bench.tasks.joint import JointConfig, Momentum, TwoViewTask, momentum_field


class MoCoConfig(JointConfig):
    temperature: float = Field(0.2, gt=0)
    queue_size: int = Field(4096, ge=0)
    momentum: float = momentum_field(0.99)


class MoCo(TwoViewTask):
    name = "moco"
    summary = "MoCo v2: query vs momentum key and a queue of negatives"
    reference = "Chen et al. 2020, arXiv:2003.04297"
    Config = MoCoConfig
    contract_overrides = {"queue_size": 0}  # one repeated batch would fill the queue with its own positives

    def __init__(self, encoder, cfg: MoCoConfig, image_size: int) -> None:
        super().__init__(encoder, cfg, image_size)
        self.head = MoCoProjectionHead(encoder.out_dim, cfg.hidden_dim, cfg.out_dim)
        self.key = Momentum(encoder, self.head, start=cfg.momentum)
        self.criterion = NTXentLoss(temperature=cfg.temperature, memory_bank_size=(cfg.queue_size, cfg.out_dim))

    def after_step(self, step: int, total_steps: int) -> None:
        self.key.update(step, total_steps)

    def loss_views(self, v1: torch.Tensor, v2: torch.Tensor) -> torch.Tensor:
        q1, q2 = self.head(self.encoder(v1)), self.head(self.encoder(v2))
        k1, k2 = self.key(v1), self.key(v2)
        return 0.5 * (self.criterion(q1, k2) + self.criterion(q2, k1))
