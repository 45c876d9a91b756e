"""evaluate: protocols.finetune."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from bench.augment.ops import crop_flip, to_input
from bench.config.sections import FinetuneConfig
from bench.protocols.features import Fitted, Predictor, Prepare, _predictor, accuracy
from bench.train.optim import NonFiniteLoss, autocast, make_optimizer, warmup_cosine


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
