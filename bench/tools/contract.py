"""The task contract: what a task must do for bench to benchmark it, checked in seconds on generated images
(``bench check-task NAME_OR_MODULE:CLASS``). bench's own tasks pass it in the test suite; a user's task is
checked with the same functions before it costs a pretraining.

Each check is a function of the task class and a ``Probe`` (the encoder and image size to check on, a batch of 8
generated images) that returns a one-line detail or raises ``ContractFailure`` saying what is wrong.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from rich.console import Console
from rich.markup import escape

from bench.config.sections import DatasetConfig
from bench.data.datasets import load_dataset
from bench.errors import ConfigError
from bench.models.encoders import build_encoder
from bench.plugins import import_target
from bench.registry import ENCODERS, TASKS
from bench.tasks.base import Task, as_plugin

STEPS = 20  # optimiser steps on one batch of 8 with the same random draws every step: a fixed objective


class ContractFailure(AssertionError):
    """A check of the contract that the task fails; the message says what it did."""


@dataclass(frozen=True)
class Probe:
    encoder: str  # the shared encoder the task is built on
    size: int  # image side in px
    images: torch.Tensor  # uint8 (8, 3, size, size)


def default_encoder(task: type[Task]) -> str:
    """The encoder a task's contract runs on: the small CNN, or ViT-Tiny for a task that runs on ViTs only."""
    return "small_cnn" if "cnn" in task.encoder_kinds else "vit_tiny"


def probe_for(task: type[Task], encoder: str | None = None, size: int | None = None) -> Probe:
    """8 generated class-dependent images at ``size`` px (default: 32, or the task's minimum if larger)."""
    encoder = encoder or default_encoder(task)
    kind = ENCODERS[encoder].kind
    if kind not in task.encoder_kinds:
        raise ConfigError(
            f"task {task.name!r} does not run on a {kind} encoder ({encoder}); it needs {task.encoder_kinds}"
        )
    size = size or max(32, task.min_image_size)
    synthetic = {"train": 8, "test": 4, "classes": 4, "size": size}
    images = load_dataset(DatasetConfig(name="synthetic", synthetic=synthetic)).train_x
    return Probe(encoder, size, images)


def build(task: type[Task], probe: Probe, seed: int = 0) -> Task:
    """The task on a freshly seeded shared encoder, with the settings its contract runs under."""
    torch.manual_seed(seed)
    return task(build_encoder(probe.encoder, seed), task.Config(**task.contract_overrides), probe.size)


def _described(task: type[Task], probe: Probe) -> str:
    if not (task.summary and task.reference and task.evaluated_by):
        raise ContractFailure("set summary, reference and evaluated_by")
    if not set(task.evaluated_by) <= {"frozen", "trained"}:
        raise ContractFailure(f"evaluated_by {task.evaluated_by} may hold only 'frozen' and 'trained'")
    return f"{task.summary} ({task.reference})"


def _config(task: type[Task], probe: Probe) -> str:
    cfg = task.Config(**task.contract_overrides)
    return f"{type(cfg).__name__}: {len(type(cfg).model_fields)} keys, defaults valid"


def _size(task: type[Task], probe: Probe) -> str:
    task.check_data(probe.images)
    if task.min_image_size <= 1:
        return "no minimum image size"
    small = torch.zeros(2, 3, task.min_image_size - 1, task.min_image_size - 1, dtype=torch.uint8)
    try:
        task.check_data(small)
    except ValueError:
        return f"refuses images under {task.min_image_size} px before training"
    raise ContractFailure(f"min_image_size = {task.min_image_size}, but check_data accepts smaller images")


def _loss(task: type[Task], probe: Probe) -> str:
    loss = build(task, probe).loss(probe.images, torch.Generator().manual_seed(0))
    if not (isinstance(loss, torch.Tensor) and loss.shape == ()):
        raise ContractFailure(f"loss must be a scalar tensor, got {getattr(loss, 'shape', type(loss))}")
    if not torch.isfinite(loss):
        raise ContractFailure(f"loss is {loss.item()} on a batch of 8")
    return f"scalar, {loss.item():.4f} on a batch of 8"


def _same_seed(task: type[Task], probe: Probe) -> str:
    a = build(task, probe).loss(probe.images, torch.Generator().manual_seed(3))
    b = build(task, probe).loss(probe.images, torch.Generator().manual_seed(3))
    if not torch.equal(a, b):
        raise ContractFailure(f"two builds with seed 0 and one generator seed gave {a.item()} and {b.item()}")
    return "one seed, one loss"


def _learns(task: type[Task], probe: Probe) -> str:
    model = build(task, probe)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = [p.detach().clone() for p in model.encoder.parameters()]
    losses = []
    for step in range(1, STEPS + 1):
        loss = model.loss(probe.images, torch.Generator().manual_seed(0))
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.after_step(step, STEPS)
        losses.append(loss.item())
    if all(torch.equal(a, b) for a, b in zip(before, model.encoder.parameters())):
        raise ContractFailure("the encoder's weights did not change: the loss sends it no gradient")
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    if task.monotone_loss and not last < first:
        raise ContractFailure(f"{STEPS} Adam steps on one batch did not lower the loss ({first:.4f} -> {last:.4f})")
    return f"{first:.4f} -> {last:.4f} in {STEPS} steps" + ("" if task.monotone_loss else " (not required to fall)")


def _loads(task: type[Task], probe: Probe) -> str:
    model = build(task, probe)
    model.loss(probe.images, torch.Generator().manual_seed(0)).backward()
    trained = model.evaluated_encoder()
    fresh = build_encoder(probe.encoder, seed=1)
    try:
        fresh.load_state_dict(trained.state_dict())  # strict: same keys, same shapes
    except RuntimeError as e:
        raise ContractFailure(f"the evaluated encoder's weights do not load into {probe.encoder}: {e}") from None
    x = task.eval_input(probe.images[:2])
    trained.eval(), fresh.eval()
    if not torch.allclose(fresh(x), trained(x)):
        raise ContractFailure("the loaded encoder gives other features than the trained one")
    return f"into a fresh {probe.encoder}, same features"


def _eval_input(task: type[Task], probe: Probe) -> str:
    x = task.eval_input(probe.images)
    if not (x.is_floating_point() and x.shape[0] == len(probe.images) and x.shape[-2:] == probe.images.shape[-2:]):
        raise ContractFailure(f"eval_input must give float (B, C, H, W) of the same B, H, W, got {x.dtype} {x.shape}")
    encoder = build_encoder(probe.encoder, 0).eval()
    with torch.no_grad():
        feats = encoder(x)
    if feats.shape != (len(x), encoder.out_dim) or not torch.isfinite(feats).all():
        raise ContractFailure(f"the encoder maps eval_input to {tuple(feats.shape)}, not (B, {encoder.out_dim})")
    return f"float {tuple(x.shape[1:])} -> {encoder.out_dim}-d features"


CHECKS: dict[str, Callable[[type[Task], Probe], str]] = {
    "described": _described,
    "config": _config,
    "image size": _size,
    "finite loss": _loss,
    "deterministic": _same_seed,
    "learns": _learns,
    "weights load": _loads,
    "evaluation input": _eval_input,
}
PRETRAINING_ONLY = ("finite loss", "deterministic", "learns", "weights load")


def task_class(target: str) -> type[Task]:
    """A registered task's class by name, or a user's by ``module:attribute`` (checked like a suite's plug-in)."""
    if ":" not in target:
        return TASKS[target]
    cls = import_target("task", target)
    return as_plugin(getattr(cls, "name", target), cls)


def check_task(
    task: type[Task], encoder: str | None = None, size: int | None = None, say: Callable[[str, bool, str], None] = None
) -> dict[str, str | None]:
    """Every check of the contract on ``task``: check name -> None when it passed, else what failed. ``say(check,
    passed, detail)`` hears each as it ends."""
    probe = probe_for(task, encoder, size)
    results: dict[str, str | None] = {}
    for name, check in CHECKS.items():
        if name in PRETRAINING_ONLY and not task.pretrains:
            continue
        start = time.perf_counter()
        try:
            detail, failure = check(task, probe), None
        except ContractFailure as e:
            detail = failure = str(e)
        except Exception as e:  # noqa: BLE001 - the task's own bug is what this command reports
            detail = failure = f"{type(e).__name__}: {e}"
        results[name] = failure
        if say is not None:
            say(name, failure is None, f"{detail} ({time.perf_counter() - start:.1f} s)")
    return results


def report_contract(target: str, encoder: str | None, size: int | None, console: Console) -> int:
    """``bench check-task``: each check on a line as it ends; exit status 1 when any failed."""
    task = task_class(target)
    encoder = encoder or default_encoder(task)
    console.print(f"task contract of {task.name!r} ({task.__module__}) on {encoder}:", highlight=False)

    def say(check: str, passed: bool, detail: str) -> None:
        mark = "[green]pass[/]" if passed else "[red]FAIL[/]"
        console.print(f"  {mark}  {check}: {escape(detail)}", highlight=False)

    failed = [name for name, failure in check_task(task, encoder, size, say).items() if failure]
    if failed:
        console.print(f"[red]{len(failed)} check(s) failed[/]: {', '.join(failed)}", highlight=False)
        return 1
    console.print(f"{task.name}: the task meets the contract", highlight=False)
    return 0
