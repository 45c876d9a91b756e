"""The linear probe: multinomial logistic regression (L-BFGS, full batch) on the frozen encoder's standardised
features, its L2 penalty chosen on validation labels drawn from inside the budget."""

from __future__ import annotations

from typing import Annotated

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from bench.config.settings import LogRange, Strict
from bench.protocols.base import Labelled, Protocol, Watch
from bench.protocols.features import Fitted, Predictor, cross_validated
from bench.protocols.validation import validation_folds


class LinearConfig(Strict):
    l2_grid: list[Annotated[float, Field(gt=0)]] = Field([1e-5, 1e-4, 1e-3, 1e-2, 1e-1], min_length=1)
    max_iter: int = Field(100, gt=0)  # L-BFGS iterations per fit
    val_fraction: float = Field(0.2, gt=0, lt=1)  # of the budget, stratified, for choosing L2


class LinearSpace(Strict):
    l2: LogRange = (1e-6, 1.0)


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


class Linear(Protocol):
    name = "linear"
    summary = "frozen features, multinomial logistic regression (L-BFGS), L2 chosen on validation labels"
    Config = LinearConfig
    Space = LinearSpace
    frozen = True

    @classmethod
    def fit(cls, settings: LinearConfig, data: Labelled) -> Fitted:
        return linear_probe(data.features, data.labels, data.classes, settings, data.seed)

    @classmethod
    def score(cls, settings: LinearConfig, data: Labelled, folds: list, watch: Watch) -> float:
        l2 = settings.l2_grid[0]  # a trial's settings hold its one L2 (with_params)
        fit = lambda a, b: fit_linear(a, b, data.classes, l2, settings.max_iter)  # noqa: E731
        return cross_validated(fit, data.features, data.labels, folds)

    @classmethod
    def suggest(cls, trial, space: LinearSpace) -> dict:
        return {"l2": trial.suggest_float("l2", *space.l2, log=True)}

    @classmethod
    def configured(cls, settings: LinearConfig) -> dict:
        return {"l2": sorted(settings.l2_grid)[len(settings.l2_grid) // 2]}

    @classmethod
    def with_params(cls, settings: LinearConfig, params: dict) -> LinearConfig:
        if "l2" in params:  # a tuned L2 is a grid of one
            return settings.model_copy(update={"l2_grid": [params["l2"]]})
        return settings.model_copy(update=params)
