"""Fine-tuning: the whole encoder and a new linear head trained on the budget's labelled images, with flip and
pad-and-crop augmentation and SGD, until it converges.

Converged means: validation accuracy on labels held out of the budget stopped improving. The learning rate
stays constant until a plateau (``patience`` checks without a new best), drops tenfold there, and after
``decays`` drops the next plateau ends the run; ``epochs`` / ``min_steps`` only bound it. The classifier is then
trained again on every label of the budget with the same schedule (torch's ``MultiStepLR`` at the recorded
drops) up to the step where validation was best (budgets above ``refit_up_to`` keep the best classifier of the
search). A budget with one label per class has nothing to hold out: the plateaus are those of the training loss.
A run that met its bound before converging, or that fits its own small training set badly, carries a caveat to
the report.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from bench.augment.ops import crop_flip, to_input
from bench.config.settings import LogRange, Strict
from bench.protocols.base import Labelled, Protocol, Watch
from bench.protocols.convergence import LOSS_RISE, Plateau, caveats, evaluate
from bench.protocols.features import Fitted, Predictor, Prepare, accuracy
from bench.protocols.validation import validation_folds
from bench.train.optim import NonFiniteLoss, autocast, make_optimizer


class FinetuneConfig(Strict):
    epochs: int = Field(100, gt=0)  # the bound: at most this many passes over the labels ...
    min_steps: int = Field(1000, ge=0)  # ... or this many optimiser steps, whichever is more
    batch_size: int = Field(128, ge=2)
    lr: float = Field(0.05, gt=0)  # encoder learning rate
    head_lr: float | None = Field(None, gt=0)  # the new linear head's; None: the same as lr
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    patience: int = Field(4, ge=1)  # checks without a new best that make a plateau
    decays: int = Field(2, ge=0)  # tenfold learning-rate drops before the next plateau stops the run
    check_steps: int = Field(25, ge=1)  # steps between checks at least (else one pass over the labels)
    val_fraction: float = Field(0.2, gt=0, lt=1)  # of the budget, held out to decide when to stop
    # a hold-out with fewer images of some class than this is too noisy to stop on: the training loss decides
    val_per_class: int = Field(20, ge=1)
    # budgets of up to this many labels are trained again on all of them once the length is known; larger ones
    # keep the classifier of the search (trained on 1 - val_fraction of them), at half the cost
    refit_up_to: int = Field(10000, ge=0)


class FinetuneSpace(Strict):
    lr: LogRange = (1e-3, 0.3)
    head_lr: LogRange = (1e-3, 1.0)
    weight_decay: LogRange = (1e-6, 1e-2)


@dataclass
class Schedule:
    """A run to replay: ``steps`` optimiser steps with tenfold drops after the steps in ``drops``."""

    steps: int
    drops: list[int] = field(default_factory=list)


def finetune(
    encoder: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    classes: int,
    cfg: FinetuneConfig,
    seed: int,
    val: tuple[torch.Tensor, torch.Tensor] | None = None,
    stop_on_val: bool = True,
    replay: Schedule | None = None,
    on_check: Callable[[float, float], None] | None = None,
    prepare: Prepare = to_input,
    flip: bool = True,
) -> Fitted:
    """Train a copy of the encoder plus a linear head on the labelled uint8 images (on the training device).

    With ``val`` (held-out images and labels), train until validation accuracy converges (module docstring) and
    return the weights of its best check; with ``replay``, train exactly that schedule; otherwise, or when not
    ``stop_on_val`` (``val`` is then only watched), until the training loss converges. ``on_check(progress,
    val_acc)`` is called at every check with validation (progress in [0, 1] of the bound; it may raise to stop,
    e.g. a pruner). Inputs go through ``prepare`` (the task's evaluation input), with pad-and-crop scaled to the
    image size and horizontal flips unless ``flip`` is false. ``Fitted.history`` holds, per check, the mean
    training loss and accuracy on the augmented batches since the last one (and validation accuracy and loss);
    ``chosen`` the schedule that was run (``Schedule`` fields; ``stop``: plateau, bound or replay;
    ``stopped_on``) and ``train_acc``, the classifier's accuracy on its own unaugmented images."""
    device = images.device
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the head's initialisation depends on the seed only
        model = nn.Sequential(copy.deepcopy(encoder), nn.Linear(encoder.out_dim, classes))
    model.to(device).to(memory_format=torch.channels_last).train()
    gen = torch.Generator(device=device).manual_seed(seed)
    n = len(images)
    batch = min(cfg.batch_size, n)
    per_epoch = math.ceil(n / batch)
    bound = replay.steps if replay else max(cfg.epochs * per_epoch, cfg.min_steps)
    check = max(per_epoch, cfg.check_steps)
    groups = [{"params": model[0].parameters()}, {"params": model[1].parameters(), "lr": cfg.head_lr or cfg.lr}]
    opt = make_optimizer(groups, "sgd", cfg.lr, cfg.momentum, cfg.weight_decay)
    drops_at = replay.drops if replay else []
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=drops_at, gamma=0.1)  # replayed drops only
    by_val = val is not None and stop_on_val
    plateau = Plateau(cfg.patience, cfg.decays, 0.0 if by_val else LOSS_RISE)
    order = torch.empty(0, dtype=torch.long, device=device)
    sums = torch.zeros(2, device=device)  # loss sum and correct predictions since the last check
    seen = 0
    history: list[dict] = []
    best_state = None
    for step in range(1, bound + 1):
        if len(order) < batch:  # reshuffle once fewer than a batch of images is left in this pass
            order = torch.cat([order, torch.randperm(n, device=device, generator=gen)])
        idx, order = order[:batch], order[batch:]
        with autocast(device):
            logits = model(crop_flip(prepare(images[idx]), gen, flip=flip))
            loss = F.cross_entropy(logits, labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        hits = (logits.detach().argmax(1) == labels[idx]).sum()
        sums += torch.stack([loss.detach().float() * len(idx), hits.float()])
        seen += len(idx)
        sched.step()
        if step % check and step != bound:
            continue
        loss_sum, correct = sums.tolist()  # one host sync per check
        sums.zero_()
        if not math.isfinite(loss_sum):
            raise NonFiniteLoss(f"fine-tuning loss became non-finite within {step} steps")
        point = {"epoch": len(history) + 1, "step": step, "train_loss": loss_sum / seen, "train_acc": correct / seen}
        history.append(point)
        seen = 0
        if replay:
            continue
        if val is not None:
            point["val_acc"], point["val_loss"] = evaluate(model, *val, device, prepare)
            if on_check:
                on_check(step / bound, point["val_acc"])
        score = point["val_acc"] if by_val else -point["train_loss"]
        is_best, action = plateau.update(step, score)
        if is_best and by_val:
            best_state = copy.deepcopy(model.state_dict())
        if action == "drop":
            for group in opt.param_groups:
                group["lr"] *= 0.1
        elif action == "stop":
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    steps = replay.steps if replay else plateau.best_step if by_val else step
    kept = replay.drops if replay else [d for d in plateau.drops if d < steps]
    model.eval()
    predict = predictor(model, device, prepare)
    chosen = {
        "steps": steps,
        "drops": kept,
        "stop": "replay" if replay else "plateau" if plateau.stopped else "bound",
        "bound": bound,
        "epochs": round(steps / per_epoch, 2),
    }
    chosen["train_acc"] = accuracy(predict, images, labels)
    chosen["stopped_on"] = "replay" if replay else "validation" if by_val else "training loss"
    val_acc = plateau.best if by_val else history[-1]["val_acc"] if val is not None else None
    return Fitted(predict, val_acc, chosen, history)


def stops_on_validation(val_labels: np.ndarray, cfg: FinetuneConfig) -> bool:
    """Whether a hold-out is large enough to decide when to stop: ``val_per_class`` images of every class."""
    return bool(len(val_labels)) and np.unique(val_labels, return_counts=True)[1].min() >= cfg.val_per_class


def predictor(model: nn.Module, device: torch.device, prepare: Prepare = to_input, batch: int = 1024) -> Predictor:
    @torch.no_grad()
    def predict(images: torch.Tensor) -> torch.Tensor:
        out = []
        for i in range(0, len(images), batch):
            with autocast(device):
                out.append(model(prepare(images[i : i + batch].to(device))).argmax(1))
        return torch.cat(out)

    return predict


class Finetune(Protocol):
    name = "finetune"
    summary = "whole network trained on the labelled subset with flip and crop augmentation, until it converges"
    Config = FinetuneConfig
    Space = FinetuneSpace
    frozen = False

    @classmethod
    def fit(cls, settings: FinetuneConfig, data: Labelled) -> Fitted:
        """Find on a held-out part of the budget when validation stops improving, then train on the whole budget
        for that long; a budget too small for a hold-out to decide trains on all its labels until the training
        loss converges (module docstring)."""
        x, y, n = data.images, data.labels, len(data.labels)

        def run(images, labels, **how) -> Fitted:
            kind = dict(prepare=data.prepare, flip=data.flip)
            return finetune(data.encoder, images, labels, data.classes, settings, data.seed, **kind, **how)

        labels = y.cpu().numpy()
        folds = validation_folds(np.arange(n), labels, settings.val_fraction, data.seed)
        if not folds or not stops_on_validation(labels[folds[0][1]], settings):
            fitted = run(x, y)
        else:
            fit_idx, val_idx = (torch.as_tensor(i, device=x.device) for i in folds[0])
            found = run(x[fit_idx], y[fit_idx], val=(x[val_idx], y[val_idx]))
            found.chosen["searched"] = found.history[-1]["step"]
            if n > settings.refit_up_to:
                fitted = found
            else:
                fitted = run(x, y, replay=Schedule(found.chosen["steps"], found.chosen["drops"]))
                fitted.val_acc, fitted.history = found.val_acc, found.history
                fitted.chosen |= {k: found.chosen[k] for k in ("stop", "bound", "searched", "stopped_on")}
        fitted.caveats = caveats(fitted.chosen, n, data.classes)
        return fitted

    @classmethod
    def score(cls, settings: FinetuneConfig, data: Labelled, folds: list, watch: Watch) -> float:
        """Mean validation accuracy over folds, each fold trained as ``fit`` trains a budget (until validation or
        the training loss converges); the first fold's checks go to ``watch.report`` (the pruner) and its
        training history to the trial's record."""
        scores = []
        for i, (fit_idx, val_idx) in enumerate(folds):
            fit_x, fit_y = data.images[fit_idx].to(watch.device), data.labels[fit_idx].to(watch.device)
            val_x, val_y = data.images[val_idx].to(watch.device), data.labels[val_idx].to(watch.device)
            watched = watch.report if i == 0 else None
            by_val = stops_on_validation(data.labels[val_idx].cpu().numpy(), settings)
            fitted = finetune(
                data.encoder,
                fit_x,
                fit_y,
                data.classes,
                settings,
                data.seed,
                val=(val_x, val_y),
                stop_on_val=by_val,
                on_check=watched,
                prepare=data.prepare,
                flip=data.flip,
            )
            scores.append(fitted.val_acc)
            if i == 0:
                watch.record.history(fitted.history, prefix="finetune_")
                watch.record.metric("train_acc", fitted.chosen["train_acc"])
                watch.record.metric("steps", fitted.chosen["steps"])
        return float(np.mean(scores))

    @classmethod
    def suggest(cls, trial, space: FinetuneSpace) -> dict:
        return {k: trial.suggest_float(k, *getattr(space, k), log=True) for k in ("lr", "head_lr", "weight_decay")}

    @classmethod
    def configured(cls, settings: FinetuneConfig) -> dict:
        return {"lr": settings.lr, "head_lr": settings.head_lr or settings.lr, "weight_decay": settings.weight_decay}
