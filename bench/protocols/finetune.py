"""Fine-tuning: the whole encoder and a new linear head trained on the budget's labelled images, with flip and
pad-and-crop augmentation, SGD with warm-up and cosine decay."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from bench.augment.ops import crop_flip, to_input
from bench.config.settings import LogRange, Strict
from bench.protocols.base import Labelled, Protocol, Watch
from bench.protocols.features import Fitted, Predictor, Prepare, accuracy
from bench.train.optim import NonFiniteLoss, autocast, make_optimizer, warmup_cosine


class FinetuneConfig(Strict):
    epochs: int = Field(30, gt=0)
    min_steps: int = Field(300, ge=0)  # small budgets still get this many optimiser steps
    batch_size: int = Field(128, ge=2)
    lr: float = Field(0.05, gt=0)  # encoder learning rate
    head_lr: float | None = Field(None, gt=0)  # the new linear head's; None: the same as lr
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)


class FinetuneSpace(Strict):
    lr: LogRange = (1e-3, 0.3)
    head_lr: LogRange = (1e-3, 1.0)
    weight_decay: LogRange = (1e-6, 1e-2)


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
            on_checkpoint(step / steps, predictor(model, device, prepare))
            model.train()
    if not math.isfinite(total.item()):
        raise NonFiniteLoss(f"fine-tuning loss became non-finite within {steps} steps")
    model.eval()
    predict = predictor(model, device, prepare)
    chosen = {"steps": steps, "epochs": round(steps / per_epoch, 2), "train_loss": total.item() / steps}
    chosen["train_acc"] = accuracy(predict, images, labels)
    return Fitted(predict, None, chosen, history)


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
    summary = "whole network trained on the labelled subset with flip and crop augmentation"
    Config = FinetuneConfig
    Space = FinetuneSpace
    frozen = False

    @classmethod
    def fit(cls, settings: FinetuneConfig, data: Labelled) -> Fitted:
        return finetune(
            data.encoder,
            data.images,
            data.labels,
            data.classes,
            settings,
            data.seed,
            prepare=data.prepare,
            flip=data.flip,
        )

    @classmethod
    def score(cls, settings: FinetuneConfig, data: Labelled, folds: list, watch: Watch) -> float:
        """Mean validation accuracy over folds; the first fold's learning curve goes to ``watch.report`` (the
        pruner) and its training history to the trial's record."""
        scores = []
        for i, (fit_idx, val_idx) in enumerate(folds):
            fit_x, fit_y = data.images[fit_idx].to(watch.device), data.labels[fit_idx].to(watch.device)
            val_x, val_y = data.images[val_idx].to(watch.device), data.labels[val_idx].to(watch.device)

            def report(progress: float, predict, val_x=val_x, val_y=val_y) -> None:
                watch.report(progress, accuracy(predict, val_x, val_y))

            watched = watch.report is not None and i == 0
            fitted = finetune(
                data.encoder,
                fit_x,
                fit_y,
                data.classes,
                settings,
                data.seed,
                on_checkpoint=report if watched else None,
                checkpoints=3 if watched else 0,
                prepare=data.prepare,
                flip=data.flip,
            )
            scores.append(accuracy(fitted.predict, val_x, val_y))
            if i == 0:
                watch.record.history(fitted.history, prefix="finetune_")
                watch.record.metric("train_acc", fitted.chosen["train_acc"])
        return float(np.mean(scores))

    @classmethod
    def suggest(cls, trial, space: FinetuneSpace) -> dict:
        return {k: trial.suggest_float(k, *getattr(space, k), log=True) for k in ("lr", "head_lr", "weight_decay")}

    @classmethod
    def configured(cls, settings: FinetuneConfig) -> dict:
        return {"lr": settings.lr, "head_lr": settings.head_lr or settings.lr, "weight_decay": settings.weight_decay}
