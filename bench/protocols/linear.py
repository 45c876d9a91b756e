"""The linear probe: multinomial logistic regression (L-BFGS, full batch) on the frozen encoder's standardised
features, its L2 penalty chosen on validation labels drawn from inside the budget."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Annotated

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from bench.config.settings import LogRange, Strict
from bench.protocols.base import Labelled, Protocol, Watch
from bench.protocols.features import Fitted, Predictor, accuracy, cross_validated
from bench.protocols.validation import validation_folds


def log_grid(low: float = 1e-6, high: float = 1e5, per_decade: int = 2) -> list[float]:
    """Log-spaced values from ``low`` to ``high``, ``per_decade`` per power of ten (both ends included)."""
    n = round(math.log10(high / low) * per_decade) + 1
    return [float(f"{v:.3g}") for v in np.logspace(math.log10(low), math.log10(high), n)]


class LinearConfig(Strict):
    # Kornblith, Shlens & Le 2019 (arXiv:1805.08974) search L2 over 1e-6 to 1e5: a narrower grid can stop at the
    # weak or the strong end for some encoders and not others. Half-decade steps.
    l2_grid: list[Annotated[float, Field(gt=0)]] = Field(default_factory=log_grid, min_length=1)
    max_iter: int = Field(100, gt=0)  # L-BFGS iterations per fit
    val_fraction: float = Field(0.2, gt=0, lt=1)  # of the budget, stratified, for choosing L2
    # a hold-out split with fewer validation images per class than this gives way to k-fold cross-validation
    # (k = round(1 / val_fraction)), so that at small budgets L2 is chosen on every label of the budget
    kfold_below: int = Field(50, ge=1)


class LinearSpace(Strict):
    l2: LogRange = (1e-6, 1.0)


def fit_logistic(
    x: torch.Tensor, y: torch.Tensor, classes: int, l2: float, max_iter: int, start: nn.Linear | None = None
) -> nn.Linear:
    """Multinomial logistic regression, full batch, L-BFGS; loss = mean cross-entropy + l2/2 * ||W||^2. From
    zero weights, or from ``start``'s (a warm start)."""
    model = nn.Linear(x.shape[1], classes).to(x.device)
    with torch.no_grad():
        if start is None:
            model.weight.zero_()
            model.bias.zero_()
        else:
            model.load_state_dict(start.state_dict())
    opt = torch.optim.LBFGS(model.parameters(), lr=1, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y) + 0.5 * l2 * model.weight.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    return model


def standardiser(feats: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """Standardisation with ``feats``' own per-dimension mean and standard deviation."""
    mean, std = feats.mean(0), feats.std(0).nan_to_num(1.0).clamp_min(1e-6)
    return lambda x: (x - mean) / std


def predictor(model: nn.Linear, scale: Callable[[torch.Tensor], torch.Tensor]) -> Predictor:
    @torch.no_grad()
    def predict(x: torch.Tensor) -> torch.Tensor:
        return model(scale(x)).argmax(1)

    return predict


def fit_linear(feats: torch.Tensor, labels: torch.Tensor, classes: int, l2: float, max_iter: int) -> Predictor:
    """Logistic regression on features standardised with the fitting set's own statistics."""
    scale = standardiser(feats)
    return predictor(fit_logistic(scale(feats), labels, classes, l2, max_iter), scale)


def regularisation_path(
    feats: torch.Tensor, labels: torch.Tensor, classes: int, grid: list[float], max_iter: int
) -> dict[float, Predictor]:
    """One fit per L2 value, from the strongest to the weakest, each started from the previous solution (a warm
    start along the path, as in glmnet and scikit-learn's ``warm_start``: neighbouring solutions are close, so
    each fit needs few iterations)."""
    scale = standardiser(feats)
    x, model, out = scale(feats), None, {}
    for l2 in sorted(grid, reverse=True):
        model = fit_logistic(x, labels, classes, l2, max_iter, start=model)
        out[l2] = predictor(copy.deepcopy(model), scale)
    return out


def path_scores(feats: torch.Tensor, labels: torch.Tensor, classes: int, grid: list[float], max_iter: int, folds):
    """Mean validation accuracy of every L2 of ``grid`` over (fit, val) index pairs, one warm-started path per
    fold."""
    scores = {l2: [] for l2 in grid}
    for fit_idx, val_idx in folds:
        fit_idx, val_idx = torch.as_tensor(fit_idx), torch.as_tensor(val_idx)
        path = regularisation_path(feats[fit_idx], labels[fit_idx], classes, grid, max_iter)
        for l2, predict in path.items():
            scores[l2].append(accuracy(predict, feats[val_idx], labels[val_idx]))
    return {l2: float(np.mean(s)) for l2, s in scores.items()}


def linear_probe(feats: torch.Tensor, labels: torch.Tensor, classes: int, cfg: LinearConfig, seed: int) -> Fitted:
    """Choose L2 on validation labels from inside the budget (k-fold cross-validation while a hold-out split
    would leave fewer than ``kfold_below`` validation images per class, a hold-out split above), then refit on
    the whole budget. A choice at either end of the grid is recorded as a caveat: the optimum may lie outside
    it. With one label per class nothing can be validated: the middle of the grid is used and recorded as such."""
    folds = validation_folds(np.arange(len(labels)), labels.cpu().numpy(), cfg.val_fraction, seed, cfg.kfold_below)
    grid = sorted(cfg.l2_grid)
    if not folds:
        best = grid[len(grid) // 2]
        chosen = {"l2": best, "validation": "none"}
        return Fitted(fit_linear(feats, labels, classes, best, cfg.max_iter), None, chosen)
    scores = path_scores(feats, labels, classes, grid, cfg.max_iter, folds)
    best = max(grid, key=lambda l2: (scores[l2], l2))  # ties: the stronger regulariser
    chosen = {"l2": best, "val_scores": scores, "validation": f"{len(folds)}-fold" if len(folds) > 1 else "hold-out"}
    caveats = []
    if len(grid) > 1 and best in (grid[0], grid[-1]):
        caveats.append(f"l2 {best:g} at the {'weak' if best == grid[0] else 'strong'} end of the grid")
    return Fitted(fit_linear(feats, labels, classes, best, cfg.max_iter), scores[best], chosen, caveats=caveats)


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
