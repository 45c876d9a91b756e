"""The one training loop every pretext task shares: a plain PyTorch loop over a uint8 image tensor that lives on
the training device (or over a ``StreamedPool`` that brings each batch to it), cosine schedule with linear
warm-up, bf16 autocast on CUDA, per-epoch callback. A run lasts ``epochs``, or a fixed compute (``steps`` or
``images``) with the last epoch cut short; what it cost is ``cost``."""

from __future__ import annotations

import itertools
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import astuple, dataclass, field
from pathlib import Path

import torch

from bench.augment.reference import default_workers, epoch_batches
from bench.config.sections import PretrainConfig
from bench.data.pool import StreamedPool
from bench.files import torch_bytes, write_atomic
from bench.tasks.base import Task
from bench.train.optim import NonFiniteLoss, autocast, make_optimizer, warmup_cosine


@dataclass
class EpochStats:
    epoch: int  # 1-based
    loss: float  # mean over the epoch's steps
    seconds: float
    images_per_s: float  # source images (not views) per second
    measures: dict[str, float] = field(default_factory=dict)  # what the hooks measured after this epoch


@dataclass(frozen=True)
class Length:
    """How long a pretraining run is, in optimiser steps of ``batch`` source images."""

    batch: int
    steps_per_epoch: int  # full batches of the pool (the last partial batch is dropped)
    steps: int  # in the whole run
    epochs: int  # the last one cut short where steps is not a multiple of steps_per_epoch

    def steps_in(self, epoch: int) -> int:
        """Optimiser steps of (1-based) ``epoch``."""
        return max(0, min(self.steps_per_epoch, self.steps - (epoch - 1) * self.steps_per_epoch))

    @property
    def images(self) -> int:
        """Source images (not views) the run sees."""
        return self.steps * self.batch


def run_length(cfg: PretrainConfig, n: int) -> Length:
    """The length of a run of ``cfg`` on ``n`` pool images: ``cfg.steps`` steps, ``ceil(cfg.images / batch)`` steps
    (at least ``images`` images seen, fewer than one batch more), or else ``cfg.epochs`` whole epochs."""
    batch = min(cfg.batch_size, n)
    per_epoch = n // batch  # the last partial batch is dropped: BatchNorm and contrastive losses want full batches
    if cfg.steps is not None:
        steps = cfg.steps
    elif cfg.images is not None:
        steps = math.ceil(cfg.images / batch)
    else:
        steps = per_epoch * cfg.epochs
    return Length(batch, per_epoch, steps, math.ceil(steps / per_epoch))


DEVICES = 1  # devices a pretraining cell trains on


def cost(history: Sequence[EpochStats], length: Length) -> dict[str, float]:
    """What a finished run cost: optimiser steps, source images seen, wall seconds of training (the epochs' own
    seconds, replayed ones included, health measurements not) and device-seconds: the seconds the run held its
    devices, wall seconds of training x the devices it trained on (``DEVICES``, one per cell); and, where health was
    measured, the seconds those measurements took (``health_wall_s``)."""
    wall = float(sum(h.seconds for h in history))
    out = {
        "pretrain_steps": float(length.steps),
        "pretrain_images_seen": float(length.images),
        "pretrain_wall_s": wall,
        "pretrain_device_s": wall * DEVICES,
    }
    measured = [h.measures["health_s"] for h in history if "health_s" in h.measures]
    return out | ({"health_wall_s": float(sum(measured))} if measured else {})


class EpochHook:
    """Measures taken from the training loop after an epoch (``bench.train.health``). A hook reads the task; it must
    not change parameters, buffers or random streams. Its measures are saved with the training state, so a
    resumed run reports them for the epochs it replays."""

    def __call__(self, epoch: int, task: Task) -> dict[str, float]:
        raise NotImplementedError


def pretrain(
    task: Task,
    images: torch.Tensor | StreamedPool,
    cfg: PretrainConfig,
    seed: int,
    on_epoch: Callable[[EpochStats], None] | None = None,
    state_path: Path | None = None,
    say: Callable[[str], None] = print,
    hooks: Sequence[EpochHook] = (),
    owner: dict[str, str] | None = None,
    on_resume: Callable[[int, dict[str, str] | None], None] | None = None,
    on_step: Callable[[int, int, int], None] | None = None,
) -> list[EpochStats]:
    """Train ``task`` (encoder and head) on uint8 ``images`` (N, 3, H, W), already on the training device (or a
    ``StreamedPool`` for it: the same batches, read as they are needed), for
    ``run_length(cfg, N)`` optimiser steps; the lr schedule and the task's ``before_step`` / ``after_step`` hooks
    see that total.

    With ``state_path``, the full training state (weights, optimiser, schedule, random generator, history) is
    saved there at most every ``cfg.checkpoint_every_s`` seconds, and a run killed part-way resumes from it:
    the resumed run gives the same weights as an uninterrupted one. ``on_epoch`` is called for every epoch,
    replayed ones included, so the caller's log holds the whole curve. After every trained epoch each of
    ``hooks`` measures the task; the measures are in that epoch's ``EpochStats.measures``. An unreadable saved
    state is moved aside (``say`` tells why) and training starts over. ``owner`` (who trains) is saved with the
    state; a resumed run calls ``on_resume`` with the epochs done and the owner saved with them (None: not saved).
    ``on_step(epoch, step, steps)`` is called after every optimiser step (progress within a long epoch).
    """
    device = images.device
    gen = torch.Generator(device=device).manual_seed(seed)
    task.to(device).to(memory_format=torch.channels_last).train()
    n = len(images)
    length = run_length(cfg, n)
    batch, steps = length.batch, length.steps_per_epoch
    reference = cfg.augment == "lightly"
    if reference:
        transform = task.reference_transform()
        if transform is None:
            raise ValueError(f"task {task.name!r} has no reference pipeline; use pretrain.augment = 'device'")
        host_images = images if isinstance(images, StreamedPool) else images.cpu().numpy()  # (N, 3, H, W)
        workers = cfg.workers if cfg.workers is not None else default_workers()
    opt = make_optimizer(task.parameters(), cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay)
    sched = warmup_cosine(opt, length.steps, round(cfg.warmup_epochs * steps))
    history: list[EpochStats] = []
    state = _saved_state(state_path, device, say) if state_path is not None else None
    if state is not None:
        task.load_state_dict(state["task"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        gen.set_state(state["gen"].cpu())
        history = [EpochStats(int(e), *v) for e, *v in state["history"]]
        if on_resume:
            on_resume(len(history), state.get("owner"))
        for h in history:
            if on_epoch:
                on_epoch(h)
    if cfg.compile:
        task.encoder.compile()  # in place: parameter names, checkpoints and momentum copies are unchanged
    try:
        saved_at = time.monotonic()
        for epoch in range(len(history) + 1, length.epochs + 1):
            start = time.perf_counter()
            task.on_epoch_start(epoch, length.epochs)
            taken = length.steps_in(epoch)  # steps; the last epoch of a fixed compute is cut short
            if reference:
                source = epoch_batches(host_images, transform, batch, seed, epoch, workers, device.type == "cuda")
                batches = itertools.islice(source, taken)
            else:
                order = torch.randperm(n, device=device, generator=gen)
                if isinstance(images, StreamedPool):
                    batches = images.batches(order, batch, taken)
                else:
                    batches = (images[order[step * batch : (step + 1) * batch]] for step in range(taken))
            total = torch.zeros((), device=device)
            for step, item in enumerate(batches):
                task.before_step((epoch - 1) * steps + step + 1, length.steps)
                with autocast(device):
                    if reference:
                        loss = task.loss_views(*(v.to(device, non_blocking=True) for v in item))
                    else:
                        loss = task.loss(item, gen)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                task.after_step((epoch - 1) * steps + step + 1, length.steps)
                total += loss.detach().float()
                if on_step:
                    on_step(epoch, step + 1, taken)
            if reference:
                source.close()  # now, not when collected: its workers stop and the caller's random state is back
            mean = (total / taken).item()  # one host sync per epoch
            if not math.isfinite(mean):
                raise NonFiniteLoss(f"pretraining loss became {mean} in epoch {epoch}")
            seconds = time.perf_counter() - start
            measures: dict[str, float] = {}
            for hook in hooks:
                measures |= hook(epoch, task)
            history.append(EpochStats(epoch, mean, seconds, taken * batch / seconds, measures))
            if (
                state_path is not None
                and epoch < length.epochs
                and time.monotonic() - saved_at >= cfg.checkpoint_every_s
            ):
                _save_state(state_path, task, opt, sched, gen, history, owner)
                saved_at = time.monotonic()
            if on_epoch:
                on_epoch(history[-1])
    finally:
        if cfg.compile:
            task.encoder._compiled_call_impl = None  # evaluation runs eager: other batch shapes, no recompiles
    return history


def _saved_state(path: Path, device: torch.device, say: Callable[[str], None]) -> dict | None:
    """The state an interrupted run saved, or None (none saved, or unreadable: then it is moved aside and
    training starts over, which gives the same result as an uninterrupted run)."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any damage means: start over
        aside = path.with_name(path.name + ".unreadable")
        os.replace(path, aside)
        say(
            f"{path}: the saved training state is unreadable ({type(e).__name__}); moved to {aside.name}, training "
            "this cell from the start"
        )
        return None


def _save_state(path: Path, task, opt, sched, gen, history: list[EpochStats], owner: dict | None) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "task": task.state_dict(),
        "opt": opt.state_dict(),
        "sched": sched.state_dict(),
        "gen": gen.get_state(),
        "history": [list(astuple(h)) for h in history],
        "owner": owner,
    }
    write_atomic(path, torch_bytes(state))  # a kill during the save leaves the previous state intact
