"""SimCLR: contrast two augmented views of each image against the other images of the batch (NT-Xent).

Chen, Kornblith, Norouzi & Hinton, "A Simple Framework for Contrastive Learning of Visual Representations",
ICML 2020, arXiv:2002.05709. Loss (NTXentLoss), projection head and views are lightly's (SimCLRTransform).

Deviations: colour-jitter strength 0.5 at every size (the paper's CIFAR-10 value, lightly's CIFAR-10 benchmark and
its advice for small images; lightly's default 1.0 is the ImageNet value); blur off at 32 px, as in lightly's
CIFAR-10 benchmark (0.5 above); the paper trains with LARS at batch 4096, here the suite's optimiser and batch.
"""

from __future__ import annotations

import torch
from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead
from pydantic import Field

from bench.tasks.joint import JointConfig, TwoViewTask


class SimCLRConfig(JointConfig):
    temperature: float = Field(0.5, gt=0)


class SimCLR(TwoViewTask):
    name = "simclr"
    summary = "contrast two views of each image against the batch (NT-Xent)"
    reference = "Chen et al. 2020, arXiv:2002.05709"
    Config = SimCLRConfig

    def __init__(self, encoder, cfg: SimCLRConfig, image_size: int) -> None:
        super().__init__(encoder, cfg, image_size)
        self.head = SimCLRProjectionHead(encoder.out_dim, cfg.hidden_dim, cfg.out_dim)
        self.criterion = NTXentLoss(temperature=cfg.temperature)

    def loss_views(self, v1: torch.Tensor, v2: torch.Tensor) -> torch.Tensor:
        z = self.head(self.encoder(torch.cat([v1, v2])))  # one pass: BatchNorm sees both views
        z1, z2 = z.chunk(2)
        return self.criterion(z1, z2)
