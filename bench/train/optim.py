"""Optimisers, the warm-up + cosine schedule and bf16 autocast on CUDA, shared by pretraining and fine-tuning;
and the error a non-finite loss raises."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable

import torch


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite; the cell stops and is recorded as failed with this message."""


def autocast(device: torch.device):
    """bf16 autocast on CUDA; full precision elsewhere (CPU bf16 is slower than fp32 on most CPUs)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def make_optimizer(
    params: Iterable[torch.nn.Parameter], kind: str, lr: float, momentum: float, weight_decay: float
) -> torch.optim.Optimizer:
    if kind == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=momentum > 0)


def warmup_cosine(opt: torch.optim.Optimizer, total_steps: int, warmup_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up to the base lr over ``warmup_steps``, then cosine decay to zero at ``total_steps``.

    Written here, in closed form, because the library schedules are not the same schedule: lightly's
    ``CosineWarmupScheduler`` starts the warm-up at 0 and spends the last step at its end value (its cosine
    divides by ``max_steps - 1``), and torch's ``SequentialLR(LinearLR, CosineAnnealingLR)`` computes the
    cosine recursively, accumulating rounding, and cannot express a warm-up of zero steps."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)
