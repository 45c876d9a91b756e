"""What the protocols share: frozen features, BatchNorm recalibration, accuracy, cross-validation over
in-budget folds, and ``Fitted``, the classifier a protocol returns.

A protocol turns an encoder into a classifier using only a budget's labels: it returns a ``Predictor`` plus what
it chose, and never sees test labels. The cell applies the predictor to the test inputs and scores it, once.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from bench.augment.ops import to_input
from bench.train.optim import autocast

Predictor = Callable[[torch.Tensor], torch.Tensor]  # inputs (features or uint8 images) -> predicted labels
Prepare = Callable[[torch.Tensor], torch.Tensor]  # uint8 images -> the encoder's float input (Task.eval_input)


@dataclass
class Fitted:
    predict: Predictor
    val_acc: float | None = None  # accuracy on the validation labels drawn from the budget, if a choice was made
    chosen: dict = field(default_factory=dict)  # hyperparameters the protocol picked or used
    history: list[dict] = field(default_factory=list)  # per-epoch training diagnostics (fine-tuning)
    # why the cell's number may sit below the protocol's optimum (a choice at a grid's edge, a run that had not
    # converged): recorded with the run and marked in the report
    caveats: list[str] = field(default_factory=list)


@torch.no_grad()
def extract_features(
    encoder: nn.Module, images: torch.Tensor, device: torch.device, batch: int = 1024, prepare: Prepare = to_input
) -> torch.Tensor:
    """Frozen features (N, D) float32 on ``device`` for uint8 images (N, 3, H, W) on any device."""
    encoder.to(device).eval()
    out = []
    for i in range(0, len(images), batch):
        with autocast(device):
            out.append(encoder(prepare(images[i : i + batch].to(device, non_blocking=True))).float())
    return torch.cat(out)


@torch.no_grad()
def recalibrate_bn(
    encoder: nn.Module, images: torch.Tensor, device: torch.device, prepare: Prepare = to_input, batch: int = 256
) -> nn.Module:
    """A copy of ``encoder`` whose BatchNorm running statistics are recomputed on ``images`` (uint8, whole images,
    no labels): reset, then a cumulative average over batches in training mode (``momentum=None``), as in
    torch.optim.swa_utils.update_bn, which this follows for uint8 tensors on the device. Weights are unchanged."""
    model = copy.deepcopy(encoder).to(device)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return model
    momenta = {m: m.momentum for m in norms}
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    for i in range(0, len(images), batch):
        with autocast(device):
            model(prepare(images[i : i + batch].to(device, non_blocking=True)))
    for m in norms:
        m.momentum = momenta[m]
    return model.eval()


def accuracy(predict: Predictor, inputs: torch.Tensor, labels: torch.Tensor) -> float:
    return (predict(inputs) == labels).float().mean().item()


def cross_validated(fit, inputs: torch.Tensor, labels: torch.Tensor, folds) -> float:
    """Mean validation accuracy of ``fit(inputs, labels) -> Predictor`` over (fit, val) index pairs."""
    scores = []
    for fit_idx, val_idx in folds:
        fit_idx, val_idx = torch.as_tensor(fit_idx), torch.as_tensor(val_idx)
        scores.append(accuracy(fit(inputs[fit_idx], labels[fit_idx]), inputs[val_idx], labels[val_idx]))
    return float(np.mean(scores))
