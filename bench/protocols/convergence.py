"""When fine-tuning has converged, and what to say when it had not: the plateau rule that lowers the learning
rate and stops a run, the held-out score it watches, and the caveats a run's record carries to the report."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from bench.protocols.features import Prepare
from bench.train.optim import autocast

UNDERFIT_ACC = 0.9  # below this training accuracy, a budget of at most SMALL_PER_CLASS labels per class is under-fitted
SMALL_PER_CLASS = 100
LOSS_RISE = 0.05  # without validation, the training loss must fall by 5% of itself to count as progress


@dataclass
class Plateau:
    """Checks until convergence: a plateau is ``patience`` checks without a rise above the best score so far;
    the first ``decays`` plateaus drop the learning rate, the next one stops. (torch's ``ReduceLROnPlateau``
    neither stops nor says which check was best.)"""

    patience: int
    decays: int
    rise: float = 0.0  # a rise is more than this fraction of the best score's magnitude
    best: float = -math.inf
    best_step: int = 0
    since: int = 0
    drops: list[int] = field(default_factory=list)
    stopped: bool = False

    def update(self, step: int, score: float) -> tuple[bool, str]:
        """(whether this check is the best so far, and what to do: 'go' on, 'drop' the learning rate now, or
        'stop'). A score equal to the best makes the later check the best one (more training at the same
        validation accuracy) without resetting the patience: only a rise does."""
        if score > (self.best + self.rise * abs(self.best) if math.isfinite(self.best) else self.best):
            self.best, self.best_step, self.since = score, step, 0
            return True, "go"
        tie = score >= self.best
        if tie:
            self.best_step = step
        self.since += 1
        if self.since < self.patience:
            return tie, "go"
        self.since = 0
        if len(self.drops) < self.decays:
            self.drops.append(step)
            return tie, "drop"
        self.stopped = True
        return tie, "stop"


@torch.no_grad()
def evaluate(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, device: torch.device, prepare: Prepare
) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of ``model`` on held-out images; the model is back in training mode after."""
    model.eval()
    hits, loss = torch.zeros((), device=device), torch.zeros((), device=device)
    for i in range(0, len(images), 1024):
        with autocast(device):
            logits = model(prepare(images[i : i + 1024].to(device))).float()
        y = labels[i : i + 1024]
        hits += (logits.argmax(1) == y).sum()
        loss += F.cross_entropy(logits, y, reduction="sum")
    model.train()
    return hits.item() / len(labels), loss.item() / len(labels)


def caveats(chosen: dict, n_labels: int, classes: int) -> list[str]:
    """Why a fine-tuned cell may sit below its protocol's optimum: the bound came before convergence, or a small
    budget's own training images are not fitted."""
    out = []
    if chosen["stop"] == "bound":
        what = (
            "validation accuracy still rising"
            if chosen["stopped_on"] == "validation"
            else "training loss still falling"
        )
        out.append(f"not converged: {what} at the bound of {chosen['bound']} steps")
    if n_labels <= SMALL_PER_CLASS * classes and chosen["train_acc"] < UNDERFIT_ACC:
        out.append(f"under-fitted: train_acc {chosen['train_acc']:.2f} on {n_labels} labels")
    return out
