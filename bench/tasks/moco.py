"""MoCo v2: contrast a query view against its momentum-encoded key and a queue of earlier keys.

Chen, Fan, Girshick & He, "Improved Baselines with Momentum Contrastive Learning", 2020, arXiv:2003.04297
(MoCo: He et al. 2020, arXiv:1911.05722). lightly's MoCoProjectionHead (2-layer MLP), MemoryBankModule as the
queue, update_momentum, cosine_schedule and batch_unshuffle. Paper settings: temperature 0.2, momentum 0.999,
queue 65536; here the defaults are the CIFAR-scale ones (queue 4096, momentum 0.99 rising to 1, temperature 0.2)
because a 65536 queue of a 50k-image dataset holds stale copies of every image. The 0.99 is lightly's CIFAR-10
benchmark's (docs/source/getting_started/benchmarks/cifar10_benchmark.py: 200 epochs at batch 128 with the last
partial batch dropped, 390 steps an epoch on 50,000 images: ``momentum_steps`` = 78,000); the start momentum
scales with the run's total steps so that the key encoder renews as much over the run
(``bench.tasks.joint.Momentum``). The query encoder is the one evaluated, as in the paper. Views: lightly's
MoCoV2Transform (crop scale 0.2-1, as the paper), with blur off at 32 px as in lightly's CIFAR-10 benchmark.

The loss is symmetrised as in the MoCo CIFAR-10 demo and lightly's benchmark, 0.5 (InfoNCE(q1, k2) +
InfoNCE(q2, k1)), with both terms against the queue as it was before the step; both key batches are enqueued
after both terms, as in the paper's pseudo-code (lightly's NTXentLoss with a memory bank enqueues inside each call,
so the second term would find its own keys among the negatives).

Shuffle-BN, the paper's remedy for BatchNorm statistics that give the positive key away, emulated on one device
as lightly's CIFAR-10 benchmark does (SplitBatchNorm, 8 splits): both encoders see ``bn_splits`` sub-batches of at
least 32 images (the paper's per-GPU batch), queries in batch order, keys in a shuffled order (sub-batch j holds
images j, j + n, j + 2n ...) undone with lightly's batch_unshuffle. The batch is in a fresh random order every step,
so this fixed shuffle groups random images without drawing random numbers (lightly draws from torch's global RNG).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from lightly.loss import NTXentLoss
from lightly.models.modules import MoCoProjectionHead
from lightly.models.modules.memory_bank import MemoryBankModule
from lightly.models.utils import batch_unshuffle
from pydantic import Field

from bench.augment.views import MOCO_V2, ViewConfig
from bench.tasks.joint import JointConfig, Momentum, TwoViewTask, momentum_field, momentum_steps_field

MIN_SPLIT = 32  # images per BatchNorm sub-batch at least: batches under 64 are not split


class MoCoConfig(JointConfig):
    views: ViewConfig = ViewConfig(**MOCO_V2)
    temperature: float = Field(0.2, gt=0)
    queue_size: int = Field(4096, ge=0)  # 0: no queue, the batch's other views are the negatives (NT-Xent)
    momentum: float = momentum_field(0.99)  # lightly's CIFAR-10 benchmark, for momentum_steps
    momentum_steps: int | None = momentum_steps_field(78_000)  # its 200 epochs of 390 steps (batch 128)
    bn_splits: int = Field(8, ge=1)  # shuffle-BN sub-batches; 1: plain BatchNorm over the whole batch


class MoCo(TwoViewTask):
    name = "moco"
    summary = "MoCo v2: query vs momentum key and a queue of negatives"
    reference = "Chen et al. 2020, arXiv:2003.04297"
    version = 2
    Config = MoCoConfig
    contract_overrides = {"queue_size": 0}  # one repeated batch would fill the queue with its own positives

    def __init__(self, encoder, cfg: MoCoConfig, image_size: int) -> None:
        super().__init__(encoder, cfg, image_size)
        self.head = MoCoProjectionHead(encoder.out_dim, cfg.hidden_dim, cfg.out_dim)
        self.key = Momentum(encoder, self.head, momentum=cfg.momentum, reference_steps=cfg.momentum_steps)
        self.queue = MemoryBankModule((cfg.queue_size, cfg.out_dim))  # unit keys (K, D), filled round-robin
        for buffer in ("bank", "bank_ptr"):  # lightly leaves the queue out of state_dict; a resumed run needs it
            self.queue.register_buffer(buffer, getattr(self.queue, buffer))
        self.criterion = NTXentLoss(temperature=cfg.temperature)  # queue_size 0 only

    def after_step(self, step: int, total_steps: int) -> None:
        self.key.update(step, total_steps)

    def records(self) -> dict[str, float]:
        return self.key.record()

    def embed(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Unit-length queries and keys (B, D) of a view (B, 3, H, W), with shuffle-BN."""
        n = min(self.cfg.bn_splits, max(1, len(v) // MIN_SPLIT))
        q = torch.cat([self.head(self.encoder(part)) for part in v.tensor_split(n)])
        groups = [torch.arange(j, len(v), n, device=v.device) for j in range(n)]
        k = batch_unshuffle(torch.cat([self.key(v[g]) for g in groups]), torch.cat(groups))
        return F.normalize(q, dim=1), F.normalize(k, dim=1)

    def info_nce(self, q: torch.Tensor, k: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        """Queries (B, D) against their keys (B, D) and the queue (D, K), as lightly's NTXentLoss with a bank."""
        logits = torch.cat([(q * k).sum(1, keepdim=True), q @ negatives], 1) / self.cfg.temperature
        return F.cross_entropy(logits.float(), torch.zeros(len(q), dtype=torch.long, device=q.device))

    def loss_views(self, v1: torch.Tensor, v2: torch.Tensor) -> torch.Tensor:
        (q1, k1), (q2, k2) = self.embed(v1), self.embed(v2)
        if self.cfg.queue_size == 0:
            return 0.5 * (self.criterion(q1, k2) + self.criterion(q2, k1))
        _, negatives = self.queue(k1)  # (D, K): the queue before this step, for both terms
        loss = 0.5 * (self.info_nce(q1, k2, negatives) + self.info_nce(q2, k1, negatives))
        if q1.requires_grad:  # a training step; evaluating the loss leaves the queue as it is (as lightly)
            self.queue(torch.cat([k1, k2]), update=True)
        return loss
