"""Protocols that turn an encoder into a classifier using only a budget's labels.

Each protocol receives the labelled training data and returns a ``Predictor`` plus what it chose; it never
sees test labels. The runner applies the predictor to the test images and scores it, once per cell.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from lightly.utils.benchmarking import knn_predict
from torch import nn

from bench.augment import crop_flip, to_input
from bench.config import FinetuneConfig, KNNConfig, LinearConfig
from bench.pretrain import NonFiniteLoss, autocast, make_optimizer, warmup_cosine
from bench.validation import validation_folds

Predictor = Callable[[torch.Tensor], torch.Tensor]  # inputs (features or uint8 images) -> predicted labels
Prepare = Callable[[torch.Tensor], torch.Tensor]  # uint8 images -> the encoder's float input (Task.eval_input)


@dataclass
class Fitted:
    predict: Predictor
    val_acc: float | None = None  # accuracy on the validation labels drawn from the budget, if a choice was made
    chosen: dict = field(default_factory=dict)  # hyperparameters the protocol picked or used
    history: list[dict] = field(default_factory=list)  # per-epoch training diagnostics (fine-tuning)


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


def accuracy(predict: Predictor, inputs: torch.Tensor, labels: torch.Tensor) -> float:
    return (predict(inputs) == labels).float().mean().item()


def fit_linear(feats: torch.Tensor, labels: torch.Tensor, classes: int, l2: float, max_iter: int) -> Predictor:
    """Logistic regression on features standardised with the fitting set's own statistics."""
    mean, std = feats.mean(0), feats.std(0).nan_to_num(1.0).clamp_min(1e-6)
    model = fit_logistic((feats - mean) / std, labels, classes, l2, max_iter)

    @torch.no_grad()
    def predict(x: torch.Tensor) -> torch.Tensor:
        return model((x - mean) / std).argmax(1)

    return predict


def cross_validated(fit, inputs: torch.Tensor, labels: torch.Tensor, folds) -> float:
    """Mean validation accuracy of ``fit(inputs, labels) -> Predictor`` over (fit, val) index pairs."""
    scores = []
    for fit_idx, val_idx in folds:
        fit_idx, val_idx = torch.as_tensor(fit_idx), torch.as_tensor(val_idx)
        scores.append(accuracy(fit(inputs[fit_idx], labels[fit_idx]), inputs[val_idx], labels[val_idx]))
    return float(np.mean(scores))


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


def knn_classifier(feats: torch.Tensor, labels: torch.Tensor, classes: int, cfg: KNNConfig) -> Fitted:
    """Weighted kNN on L2-normalised features (Wu et al. 2018, InstDisc): each of the k most similar labelled
    images votes for its class with weight exp(cosine / T), by lightly's ``knn_predict``, in chunks of test
    images. Nothing is chosen, so there is no validation score."""
    bank = F.normalize(feats, dim=1).T.contiguous()  # (D, N), as knn_predict takes it
    k = min(cfg.k, bank.shape[1])

    @torch.no_grad()
    def predict(test_feats: torch.Tensor) -> torch.Tensor:
        out = []
        for i in range(0, len(test_feats), cfg.chunk):
            query = F.normalize(test_feats[i : i + cfg.chunk], dim=1)
            out.append(knn_predict(query, bank, labels, classes, knn_k=k, knn_t=cfg.temperature)[:, 0])
        return torch.cat(out)

    return Fitted(predict, None, {"k": k, "temperature": cfg.temperature})


def finetune(
    encoder: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    classes: int,
    cfg: FinetuneConfig,
    seed: int,
    on_checkpoint: Callable[[float, Predictor], None] | None = None,
    checkpoints: int = 0,
    prepare: Prepare = to_input,
    flip: bool = True,
) -> Fitted:
    """Train a copy of the encoder plus a linear head on the labelled uint8 images (on the training device).

    Encoder and head have their own learning rates (``lr``, ``head_lr``). ``on_checkpoint(progress, predict)``
    is called ``checkpoints`` times during training (e.g. to report validation accuracy to a pruner; it may
    raise to stop). Inputs go through ``prepare`` (the task's evaluation input), with pad-and-crop scaled to the
    image size and horizontal flips unless ``flip`` is false. ``Fitted.history`` holds, per pass over the
    labelled images, the mean training loss and accuracy on the augmented batches; ``chosen["train_acc"]`` is
    the final classifier's accuracy on its own (unaugmented) training images, which shows a schedule too short
    to fit them."""
    device = images.device
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the head's initialisation depends on the seed only
        model = nn.Sequential(copy.deepcopy(encoder), nn.Linear(encoder.out_dim, classes))
    model.to(device).to(memory_format=torch.channels_last).train()
    gen = torch.Generator(device=device).manual_seed(seed)
    n = len(images)
    batch = min(cfg.batch_size, n)
    per_epoch = math.ceil(n / batch)
    steps = max(cfg.epochs * per_epoch, cfg.min_steps)  # small budgets still get min_steps updates
    groups = [{"params": model[0].parameters()}, {"params": model[1].parameters(), "lr": cfg.head_lr or cfg.lr}]
    opt = make_optimizer(groups, "sgd", cfg.lr, cfg.momentum, cfg.weight_decay)
    marks = {round(steps * (i + 1) / (checkpoints + 1)) for i in range(checkpoints)} if on_checkpoint else set()
    sched = warmup_cosine(opt, steps, 0)
    order = torch.empty(0, dtype=torch.long, device=device)
    total = torch.zeros((), device=device)
    epoch_sums = torch.zeros(2, device=device)  # loss sum and correct predictions of the current pass
    seen = 0
    history: list[dict] = []
    for step in range(1, steps + 1):
        if len(order) < batch:  # reshuffle once fewer than a batch of images is left in this pass
            order = torch.cat([order, torch.randperm(n, device=device, generator=gen)])
        idx, order = order[:batch], order[batch:]
        with autocast(device):
            logits = model(crop_flip(prepare(images[idx]), gen, flip=flip))
            loss = F.cross_entropy(logits, labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        total += loss.detach().float()
        hits = (logits.detach().argmax(1) == labels[idx]).sum()
        epoch_sums += torch.stack([loss.detach().float() * len(idx), hits.float()])
        seen += len(idx)
        if step % per_epoch == 0 or step == steps:  # one host sync per pass
            loss_sum, correct = epoch_sums.tolist()
            history.append({"epoch": len(history) + 1, "train_loss": loss_sum / seen, "train_acc": correct / seen})
            epoch_sums.zero_()
            seen = 0
        if step in marks:
            model.eval()
            on_checkpoint(step / steps, _predictor(model, device, prepare))
            model.train()
    if not math.isfinite(total.item()):
        raise NonFiniteLoss(f"fine-tuning loss became non-finite within {steps} steps")
    model.eval()
    predict = _predictor(model, device, prepare)
    chosen = {"steps": steps, "epochs": round(steps / per_epoch, 2), "train_loss": total.item() / steps}
    chosen["train_acc"] = accuracy(predict, images, labels)
    return Fitted(predict, None, chosen, history)


def _predictor(model: nn.Module, device: torch.device, prepare: Prepare = to_input, batch: int = 1024) -> Predictor:
    @torch.no_grad()
    def predict(images: torch.Tensor) -> torch.Tensor:
        out = []
        for i in range(0, len(images), batch):
            with autocast(device):
                out.append(model(prepare(images[i : i + batch].to(device))).argmax(1))
        return torch.cat(out)

    return predict
