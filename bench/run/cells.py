"""What one cell computes: a pretraining (task, seed) or the evaluations of one (task, seed), given the data, the
device and the runner that records them.

Everything here that decides a number is part ``cells`` of a cell's identity (``bench.run.identity``): how a task is
built and seeded, the labels a budget draws, the encoder every protocol receives, which protocol fits what, and
the one score on the test set. Recording (MLflow), the lease and progress go through the runner passed in.
"""

from __future__ import annotations

import time
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from mlflow.entities import Run
from rich.progress import Progress

from bench.cell import Cell
from bench.config.settings import Settings
from bench.config.suite import Suite
from bench.data.budgets import budget_indices
from bench.data.datasets import Dataset
from bench.data.pool import Pool
from bench.errors import ConfigError, LeaseLost, StoreError
from bench.files import is_environmental
from bench.models.encoders import build_encoder
from bench.protocols.base import Labelled
from bench.protocols.features import Fitted, extract_features, recalibrate_bn
from bench.registry import PROTOCOLS, TASKS
from bench.run.progress import PretrainProgress
from bench.store.checkpoints import CheckpointUnusable, checkpoint_path, load_encoder, save_encoder
from bench.store.client import store_failure
from bench.store.lease import Holder, describe_saver
from bench.store.tracking import Tracker
from bench.tasks.base import Task
from bench.train.health import HealthHook, health_sample
from bench.train.loop import EpochStats, cost, pretrain, run_length

if TYPE_CHECKING:  # the tuner is passed in; it decides no number of the cell it serves
    from bench.protocols.tuning import Tuner


class Host(typing.Protocol):
    """What a group of cells needs from whoever runs it (``bench.run.runner.Runner``, a Ray worker's runner):
    the suite, the tracking store, the checkpoint cache, the plan, the lease and the prepared encoders."""

    suite: Suite
    tracker: Tracker
    cache: Path
    cells: list[Cell]

    def check_lease(self) -> None: ...

    def prepared_encoder(self, task: str, seed: int) -> torch.nn.Module: ...


def resolve_device(choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device = 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda":
        torch.backends.cudnn.benchmark = True
    return torch.device(choice)


def draw_labels(suite: Suite, data: Dataset) -> dict[tuple[int, int | str], np.ndarray]:
    """The labelled subset of every (label draw, budget): class-balanced, nested across budgets of one draw
    (``Suite.label_draws``: the draws, else the seeds)."""
    train_y = data.train_y.numpy()
    return {(d, b): budget_indices(train_y, b, d) for d in suite.label_draws() for b in suite.budgets}


def build_task(suite: Suite, name: str, seed: int, image_size: int) -> Task:
    """Task ``name`` on the seeded initial encoder; its head's initialisation depends on the seed only."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        task = TASKS[name](build_encoder(suite.encoder.name, seed), suite.selected_tasks()[name], image_size)
    task.flip = suite.dataset.flip
    return task


def health_hooks(suite: Suite, task: Task, pool: Pool | torch.Tensor, seed: int) -> list[HealthHook]:
    cfg = suite.pretrain
    if not cfg.health_every:
        return []
    sample = health_sample(pool, cfg.health_images, seed)
    return [HealthHook(sample, cfg.health_every, run_length(cfg, len(pool)).epochs, type(task).eval_input)]


def trained_encoder(
    suite: Suite, task: str, seed: int, source: str, cache: Path, run: Run | None = None
) -> torch.nn.Module:
    """The encoder (task, seed) produced: its finished pretraining's checkpoint (``run``: that pretraining's
    MLflow run, whose artifact is the fallback copy), or the seeded initialisation for baselines."""
    if not TASKS[task].pretrains:
        return build_encoder(suite.encoder.name, seed)
    if run is None and not checkpoint_path(cache, source).exists():
        raise FileNotFoundError(f"the pretraining of {task} seed={seed} has not finished (cell {source})")
    return load_encoder(cache, source, suite.encoder.name, run)


def prepare_encoder(
    encoder: torch.nn.Module, suite: Suite, data: Dataset, device: torch.device, task: str, seed: int
) -> torch.nn.Module:
    """The encoder every protocol of (task, seed) receives: as trained (or initialised), with BatchNorm statistics
    recalibrated on whole images of the pool if ``evaluation.bn_recalibration``, the same for every task."""
    cfg = suite.evaluation
    if not cfg.bn_recalibration:
        return encoder
    pool = data.pool
    if len(pool) > cfg.bn_recalibration_images:  # a seeded subset, the same for every task
        keep = np.random.default_rng(seed).permutation(len(pool))[: cfg.bn_recalibration_images]
        pool = pool[np.sort(keep)]
    return recalibrate_bn(encoder, pool, device, TASKS[task].eval_input)


def fit(
    cell: Cell,
    suite: Suite,
    data: Dataset,
    encoder: torch.nn.Module,
    features: tuple[torch.Tensor, torch.Tensor] | None,
    idx: np.ndarray,
    settings: Settings,
    train_x: torch.Tensor,
    device: torch.device,
) -> tuple[Fitted, torch.Tensor]:
    """The classifier of one evaluation cell from its budget's labels (``idx`` into the labelled pool), and the
    test inputs it predicts from. ``features``: (train, test) frozen features, for a frozen protocol."""
    protocol = PROTOCOLS[cell.protocol]
    train_feats, test_feats = features if protocol.frozen else (None, None)
    labelled = Labelled(
        encoder,
        None if protocol.frozen else train_x[idx],
        None if train_feats is None else train_feats[idx],
        data.train_y[idx].to(device),
        data.num_classes,
        cell.eval_seed,
        TASKS[cell.task].eval_input,
        suite.dataset.flip,
    )
    return protocol.fit(settings, labelled), protocol.test_inputs(test_feats, data.test_x)


def is_fatal(e: BaseException) -> bool:
    """Errors of the machine or the store, not of one cell: the run stops instead of failing every cell."""
    return isinstance(e, (LeaseLost, StoreError)) or is_environmental(e) or store_failure(e, "") is not None


def failure_reason(e: BaseException) -> str:
    """One line for a failed cell (its traceback is in the cell's MLflow run, ``traceback.txt``)."""
    first = (str(e).strip().splitlines() or [""])[0][:300]
    return f"{type(e).__name__}: {first}"


@dataclass
class GroupRun:
    """Runs the cells of one (task, seed): pretraining at most once, features at most once. Failed cells are
    recorded in ``failed`` (label -> reason) and the group goes on; fatal errors (``is_fatal``) propagate."""

    runner: Host
    data: Dataset
    train_x: torch.Tensor
    labels: dict
    device: torch.device
    progress: Progress
    bar: int
    failed: dict
    tuner: Tuner

    def run(self, task: str, seed: int, cells: list[Cell]) -> None:
        pre = next((c for c in cells if c.kind == "pretrain"), None)
        evals = [c for c in cells if c.kind == "eval"]
        try:
            if pre is not None:
                self._pretrain(pre)
        except Exception as e:  # noqa: BLE001 - a failed cell is recorded and the sweep goes on
            if is_fatal(e):  # a full disk, a read-only folder, a lost lease: every later cell would fail too
                raise
            reason = failure_reason(e)
            for c in cells:
                self.failed[c.label] = reason if c is pre else f"not run: pretraining failed ({reason})"
                self.progress.advance(self.bar)
            return
        if not evals:
            return
        try:
            # Always the checkpoint as saved, never the object pretraining left (its weights are channels_last,
            # which takes other kernels): an evaluation gives the same numbers whether it runs right after
            # pretraining or in a later invocation.
            try:
                encoder = self.runner.prepared_encoder(task, seed)
            except CheckpointUnusable as e:
                if pre is not None:
                    raise
                encoder = self._pretrain_again(task, seed, str(e))
        except Exception as e:  # noqa: BLE001
            if is_fatal(e):
                raise
            reason = failure_reason(e)
            for c in evals:
                self.failed[c.label] = f"not run: no encoder ({reason})"
                self.progress.advance(self.bar)
            return
        prepare = TASKS[task].eval_input
        features = None
        for cell in evals:
            self.progress.update(self.bar, description=cell.label)
            try:
                if PROTOCOLS[cell.protocol].frozen and features is None:
                    start = time.perf_counter()
                    features = (
                        extract_features(encoder, self.train_x, self.device, prepare=prepare),
                        extract_features(encoder, self.data.test_x, self.device, prepare=prepare),
                        time.perf_counter() - start,
                    )
                self._evaluate(cell, encoder, features)
            except Exception as e:  # noqa: BLE001
                if is_fatal(e):
                    raise
                self.failed[cell.label] = failure_reason(e)
            self.progress.advance(self.bar)

    def _pretrain_again(self, task: str, seed: int, why: str) -> torch.nn.Module:
        """The finished pretraining of (task, seed) left no usable checkpoint: its run is marked FAILED (it no
        longer counts as done) and the cell pretrains again."""
        runner = self.runner
        cell = next(c for c in runner.cells if c.kind == "pretrain" and c.task == task and c.seed == seed)
        self.progress.console.print(f"  {cell.label}: {why}; pretraining again", highlight=False)
        runner.tracker.invalidate(cell.key, f"checkpoint unusable: {why}")
        self.progress.update(self.bar, total=self.progress.tasks[self.bar].total + 1)
        self._pretrain(cell)
        return runner.prepared_encoder(task, seed)

    def _pretrain(self, cell: Cell) -> torch.nn.Module:
        suite = self.runner.suite
        self.runner.check_lease()
        self.progress.update(self.bar, description=cell.label)
        task = build_task(suite, cell.task, cell.seed, self.data.image_size)
        length = run_length(suite.pretrain, len(self.data.pool))
        epochs = length.epochs
        tracker = self.runner.tracker
        say = lambda text: self.progress.console.print(f"  {text}", highlight=False)  # noqa: E731
        ticks = PretrainProgress(say, f"{cell.task} seed={cell.seed}", epochs)
        with tracker.pretrain_run(cell, task, suite, self.data) as log:

            def on_epoch(s: EpochStats) -> None:
                self.runner.check_lease()  # a lost lease stops pretraining within an epoch
                log.epoch(s)
                ticks.epoch(s)

            start = time.perf_counter()
            pool = self.data.pool.on(self.device, suite.execution.pool)
            partial = checkpoint_path(self.runner.cache, cell.key).with_suffix(".partial.pt")
            resumed = lambda done, saver: say(  # noqa: E731
                f"{cell.label}: resuming at epoch {done}/{epochs} from the state saved by {describe_saver(saver)}"
            )
            hooks = health_hooks(suite, task, self.data.pool, cell.seed)
            owner = {"suite": suite.name, **Holder.me(0).tags()}  # saved with the state: who trained it
            history = pretrain(
                task, pool, suite.pretrain, cell.seed, on_epoch, partial, say, hooks, owner, resumed, ticks.step
            )
            self.runner.check_lease()  # before touching files another holder may now own
            encoder = task.evaluated_encoder()  # what the protocols evaluate (DINO: its teacher's encoder)
            path, stamp = save_encoder(encoder, self.runner.cache, cell.key)
            partial.unlink(missing_ok=True)
            mean_rate = float(np.mean([h.images_per_s for h in history])) if history else 0.0
            metrics = cost(history, length) | task.records()
            log.done(path, stamp, time.perf_counter() - start, mean_rate, metrics)
        self.progress.advance(self.bar)
        return encoder

    def _evaluate(self, cell: Cell, encoder: torch.nn.Module, features) -> None:
        suite, data = self.runner.suite, self.data
        idx = self.labels[(cell.label_draw, cell.budget)]
        self.runner.check_lease()
        if suite.tuned(cell.protocol, cell.budget):  # from the (task, protocol, budget, seed, draw) study
            hparams, hp_source = self.tuner.params(cell.task, cell.protocol, cell.budget, cell.seed, cell.draw)
        else:
            hparams, hp_source = {}, "default"
        settings = suite.protocol_settings(cell.protocol, hparams)
        with self.runner.tracker.eval_run(cell, suite, settings, hparams, hp_source, idx) as log:
            start = time.perf_counter()
            seconds = {}
            if features is not None and PROTOCOLS[cell.protocol].frozen:
                seconds["feature_extract_s"] = features[2]
            fitted, test_inputs = fit(
                cell, suite, data, encoder, features and features[:2], idx, settings, self.train_x, self.device
            )
            seconds["fit_s"] = time.perf_counter() - start
            # The only place test labels are read: one score per cell, after every choice has been made.
            test_acc = data.score(fitted.predict(test_inputs))
            seconds["wall_s"] = time.perf_counter() - start
            log.done(fitted, test_acc, seconds)
        self.progress.console.print(f"  {cell.label}: test_acc {test_acc:.4f}")
