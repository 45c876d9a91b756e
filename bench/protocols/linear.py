"""evaluate: protocols.linear."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.config.sections import LinearConfig
from bench.protocols.features import Fitted, Predictor, cross_validated
from bench.protocols.validation import validation_folds


def fit_logistic(x: torch.Tensor, y: torch.Tensor, classes: int, l2: float, max_iter: int) -> nn.Linear:
    """Multinomial logistic regression, full batch, L-BFGS; loss = mean cross-entropy + l2/2 * ||W||^2."""
    model = nn.Linear(x.shape[1], classes).to(x.device)
    nn.init.zeros_(model.weight)
    nn.init.zeros_(model.bias)
    opt = torch.optim.LBFGS(model.parameters(), lr=1, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y) + 0.5 * l2 * model.weight.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    return model


def fit_linear(feats: torch.Tensor, labels: torch.Tensor, classes: int, l2: float, max_iter: int) -> Predictor:
    """Logistic regression on features standardised with the fitting set's own statistics."""
    mean, std = feats.mean(0), feats.std(0).nan_to_num(1.0).clamp_min(1e-6)
    model = fit_logistic((feats - mean) / std, labels, classes, l2, max_iter)

    @torch.no_grad()
    def predict(x: torch.Tensor) -> torch.Tensor:
        return model((x - mean) / std).argmax(1)

    return predict


def linear_probe(feats: torch.Tensor, labels: torch.Tensor, classes: int, cfg: LinearConfig, seed: int) -> Fitted:
    """Choose L2 on validation labels from inside the budget (a hold-out split, or k-fold when the budget is too
    small to split), then refit on the whole budget. With one label per class nothing can be validated: the
    middle of the grid is used and recorded as such."""
    folds = validation_folds(np.arange(len(labels)), labels.cpu().numpy(), cfg.val_fraction, seed)
    if not folds:
        best = sorted(cfg.l2_grid)[len(cfg.l2_grid) // 2]
        return Fitted(fit_linear(feats, labels, classes, best, cfg.max_iter), None, {"l2": best, "validation": "none"})
    scores = {
        l2: cross_validated(lambda x, y, l2=l2: fit_linear(x, y, classes, l2, cfg.max_iter), feats, labels, folds)
        for l2 in cfg.l2_grid
    }
    best = max(cfg.l2_grid, key=lambda l2: (scores[l2], l2))  # ties: the stronger regulariser
    chosen = {"l2": best, "val_scores": scores, "validation": f"{len(folds)}-fold" if len(folds) > 1 else "hold-out"}
    return Fitted(fit_linear(feats, labels, classes, best, cfg.max_iter), scores[best], chosen)
