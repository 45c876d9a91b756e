"""Suite -> plan of cells -> execution, with every finished cell found by key and skipped.

A pretraining cell (task, seed) trains once and its checkpoint serves every budget and protocol of that seed.
An evaluation cell (task, seed, budget, protocol) scores one classifier on the test set. Baselines without
pretraining start from the seeded random initialisation, the same one the pretext tasks start from.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bench.checkpoints import CheckpointUnusable, checkpoint_path, load_encoder, save_encoder
from bench.config import ConfigError, Suite, tracking_uri
from bench.data import Dataset, budget_indices, load_dataset
from bench.encoders import build_encoder
from bench.evaluate import extract_features, finetune, knn_classifier, linear_probe, recalibrate_bn
from bench.files import check_writable, inside, is_environmental
from bench.lease import Lease, LeaseLost, acquire
from bench.plan import Cell, build_plan
from bench.pretrain import EpochStats, pretrain
from bench.publish import publish
from bench.staleness import stale_reasons
from bench.store import StoreError
from bench.summary import render_summary
from bench.tasks import TASKS
from bench.tracking import Tracker
from bench.tuning import Tuner, settings_with


def resolve_device(choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device = 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda":
        torch.backends.cudnn.benchmark = True
    return torch.device(choice)


@dataclass
class Outcome:
    planned: int
    already_done: int
    ran: int
    failed: dict[str, str]  # cell label -> reason
    tables: str


class Runner:
    def __init__(self, suite: Suite, suite_path: str | Path, console: Console | None = None) -> None:
        self.suite, self.suite_path = suite, Path(suite_path)
        self.console = console or Console()
        try:  # the data's identity is part of every key, so the plan needs the data (or its cache)
            self.data = load_dataset(suite.dataset)
        except ConfigError as e:
            raise ConfigError(f"{self.suite_path}: key 'dataset': {e}") from None
        self.cells = build_plan(suite, self.data.identity)
        results = Path(suite.results_dir)
        self.cache = inside(results, "cache")
        uri = tracking_uri(suite)
        local = uri.startswith("sqlite:") or uri.startswith("file:") or "://" not in uri
        self.tracker = Tracker(uri, suite.name, results / "mlartifacts" if local else None)
        self.tracker.guard = self.check_lease  # a run ends FINISHED only while this invocation holds the suite
        self._leases = (results / "mlartifacts" / "leases").resolve().as_uri() if local else None
        self.lease: Lease | None = None
        self._prepared: dict[tuple[str, int], torch.nn.Module] = {}

    def check(self) -> dict[tuple[int, int | str], np.ndarray]:
        """Everything a run refuses before training, on the loaded data; the dry run calls it too. Returns the
        drawn label indices per (seed, budget)."""
        labels = self._draw_labels(self.data)
        for name in self.suite.selected_tasks():
            try:
                TASKS[name].check_data(self.data.pool_x)
            except ValueError as e:
                raise ConfigError(f"{self.suite_path}: key 'tasks.{name}': {e} ({self.data.name})") from None
        return labels

    def describe_data(self) -> str:
        d = self.data
        _, c, h, w = d.train_x.shape
        pool = ", ".join(f"{k} {v:,}" for k, v in d.pool_composition.items())
        return (
            f"data: {d.name}, {len(d.classes)} classes, {c} x {h} x {w} px; train {len(d.train_x):,}, "
            f"test {len(d.test_x):,}; pretraining pool: {pool}; identity {d.identity}"
        )

    def run(self, dry_run: bool = False, report: bool = True, wait_s: float = 0.0) -> Outcome:
        """Run the cells not yet done, print the summary tables and (with ``report``) write results/<suite>/.
        Holds the suite's lease throughout (waiting up to ``wait_s`` for another holder, else LeaseBusy)."""
        start = time.perf_counter()
        self.console.print(self.describe_data(), soft_wrap=True, highlight=False)
        labels = self.check()
        if dry_run:
            return self._run(start, labels, dry_run, report)
        check_writable(self.suite.results_dir)
        say = lambda text: self.console.print(text, highlight=False)  # noqa: E731
        self.lease = acquire(self.tracker.client, self.suite.name, wait_s, say=say, artifact_location=self._leases)
        try:
            return self._run(start, labels, dry_run, report)
        finally:
            self.lease.release()

    def _run(self, start: float, labels: dict, dry_run: bool, report: bool) -> Outcome:
        stale = 0 if dry_run else self.tracker.close_stale()
        done = self.tracker.finished()
        todo = [c for c in self.cells if c.key not in done]
        n_pre = sum(c.kind == "pretrain" for c in todo)
        self.console.print(
            f"[bold]{self.suite.name}[/]: {len(self.cells)} cells, {len(self.cells) - len(todo)} already done, "
            f"{len(todo)} to run ({n_pre} pretraining, {len(todo) - n_pre} evaluation)"
            + (f"; {stale} interrupted runs marked KILLED" if stale else "")
        )
        if dry_run:
            reasons = stale_reasons(self.tracker, todo)
            for c in self.cells:
                why = f"  [yellow]stale: {reasons[c.key]}[/]" if c.key in reasons else ""
                self.console.print(
                    f"  {'done' if c.key in done else 'todo'}  {c.label}  [dim]{c.key}[/]{why}", soft_wrap=True
                )
            if reasons:
                self.console.print(f"{len(reasons)} cell(s) have results from other code or data; they will rerun")
            return Outcome(len(self.cells), len(self.cells) - len(todo), 0, {}, "")
        failed: dict[str, str] = {}
        if todo:
            failed = self._execute(todo, labels)
        tables = render_summary(self.console, self.tracker, self.cells)
        if report:
            self.report()
        self.console.print(self.tracker.ui_hint(), soft_wrap=True, highlight=False)
        self.console.print(f"wall time {time.perf_counter() - start:.0f} s")
        return Outcome(len(self.cells), len(self.cells) - len(todo), len(todo) - len(failed), failed, tables)

    def check_lease(self) -> None:
        if self.lease is not None:
            self.lease.check()

    def report(self) -> list[Path]:
        """Write results/<suite>/ from the suite's runs and attach it to the latest parent run."""
        return publish(self.tracker, self.cells, self.suite, self.data, self.console)

    # ------------------------------------------------------------------ execution

    def _execute(self, todo: list[Cell], labels: dict) -> dict[str, str]:
        suite, data = self.suite, self.data
        device = self.device = resolve_device(suite.device)
        train_x = data.train_x.to(device)
        tuner = Tuner(suite, data, device, self.prepared_encoder, self._source)
        failed: dict[str, str] = {}
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with self.tracker.suite_run(suite, self.suite_path, data, device):
            with Progress(*columns, console=self.console) as progress:
                bar = progress.add_task("cells", total=len(todo))
                for (task, seed), cells in self._groups(todo, tuner.seed):
                    ctx = _GroupContext(self, data, train_x, labels, device, progress, bar, failed, tuner)
                    ctx.run(task, seed, cells)
        if failed:
            self.console.print(
                f"[red]{len(failed)} cell(s) failed[/] (each run's traceback.txt in MLflow has the details):"
            )
            for label, reason in failed.items():
                self.console.print(f"  {label}: {reason}")
        return failed

    def _draw_labels(self, data: Dataset) -> dict[tuple[int, int | str], np.ndarray]:
        try:
            return {
                (seed, b): budget_indices(data.train_y.numpy(), b, seed)
                for seed in self.suite.seeds
                for b in self.suite.budgets
            }
        except ConfigError as e:
            raise ConfigError(f"{self.suite_path}: key 'budgets': {e} ({data.name})") from None

    def _source(self, task: str, seed: int) -> str:
        return next(c.source for c in self.cells if c.task == task and c.seed == seed)

    def _encoder(self, task: str, seed: int) -> torch.nn.Module:
        """The encoder (task, seed) produced: a finished pretraining, or the seeded init for baselines."""
        if not TASKS[task].pretrains:
            return build_encoder(self.suite.encoder.name, seed)
        source = self._source(task, seed)
        run = self.tracker.finished().get(source)
        if run is None and not checkpoint_path(self.cache, source).exists():
            raise FileNotFoundError(f"the pretraining of {task} seed={seed} has not finished (cell {source})")
        return load_encoder(self.cache, source, self.suite.encoder.name, run)

    def prepared_encoder(self, task: str, seed: int) -> torch.nn.Module:
        """The encoder every protocol of (task, seed) receives: the checkpoint (or the seeded init), with
        BatchNorm statistics recalibrated on whole images of the pool if ``evaluation.bn_recalibration``, the
        same for every task and baseline."""
        if (task, seed) not in self._prepared:
            encoder = self._encoder(task, seed)
            cfg = self.suite.evaluation
            if cfg.bn_recalibration:
                pool = self.data.pool_x
                if len(pool) > cfg.bn_recalibration_images:  # a seeded subset, the same for every task
                    keep = np.random.default_rng(seed).permutation(len(pool))[: cfg.bn_recalibration_images]
                    pool = pool[np.sort(keep)]
                encoder = recalibrate_bn(encoder, pool, self.device, TASKS[task].eval_input)
            self._prepared = {(task, seed): encoder}  # one at a time: encoders can be large
        return self._prepared[(task, seed)]

    @staticmethod
    def _groups(todo: list[Cell], first_seed: int) -> Iterator[tuple[tuple[str, int], list[Cell]]]:
        """Cells grouped by (task, seed); within a task the tuning study's seed comes first, so its encoder
        exists before any study asks for it."""
        groups: dict[tuple[str, int], list[Cell]] = {}
        for c in todo:
            groups.setdefault((c.task, c.seed), []).append(c)
        tasks = list(dict.fromkeys(t for t, _ in groups))
        order = sorted(groups, key=lambda g: (tasks.index(g[0]), g[1] != first_seed))
        for g in order:
            yield g, groups[g]


@dataclass
class _GroupContext:
    """Runs the cells of one (task, seed): pretraining at most once, features at most once."""

    runner: Runner
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
            if _fatal(e):  # a full disk, a read-only folder, a lost lease: every later cell would fail too
                raise
            reason = _reason(e)
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
            if _fatal(e):
                raise
            reason = _reason(e)
            for c in evals:
                self.failed[c.label] = f"not run: no encoder ({reason})"
                self.progress.advance(self.bar)
            return
        prepare = TASKS[task].eval_input
        features = None
        for cell in evals:
            self.progress.update(self.bar, description=cell.label)
            try:
                if cell.protocol in ("linear", "knn") and features is None:
                    start = time.perf_counter()
                    features = (
                        extract_features(encoder, self.train_x, self.device, prepare=prepare),
                        extract_features(encoder, self.data.test_x, self.device, prepare=prepare),
                        time.perf_counter() - start,
                    )
                self._evaluate(cell, encoder, features)
            except Exception as e:  # noqa: BLE001
                if _fatal(e):
                    raise
                self.failed[cell.label] = _reason(e)
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
        console = self.progress.console
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cell.seed)  # the head's initialisation is part of the cell, not of what ran before
            task = TASKS[cell.task](
                build_encoder(suite.encoder.name, cell.seed), suite.selected_tasks()[cell.task], self.data.image_size
            )
        task.flip = suite.dataset.flip
        epochs = suite.pretrain.epochs
        tracker = self.runner.tracker
        with tracker.pretrain_run(cell, task, suite, self.data) as log:

            def on_epoch(s: EpochStats) -> None:
                self.runner.check_lease()  # a lost lease stops pretraining within an epoch
                log.epoch(s)
                console.print(
                    f"  {cell.task} seed={cell.seed} epoch {s.epoch}/{epochs}  loss {s.loss:.4f}  "
                    f"{s.images_per_s:,.0f} img/s  {s.seconds:.1f} s"
                )

            start = time.perf_counter()
            pool = self.data.pool_x.to(self.device)
            partial = checkpoint_path(self.runner.cache, cell.key).with_suffix(".partial.pt")
            if partial.exists():
                console.print(f"  {cell.label}: resuming from the state saved by an interrupted run")
            say = lambda text: console.print(f"  {text}", highlight=False)  # noqa: E731
            history = pretrain(task, pool, suite.pretrain, cell.seed, on_epoch, state_path=partial, say=say)
            self.runner.check_lease()  # before touching files another holder may now own
            path, stamp = save_encoder(task.encoder, self.runner.cache, cell.key)
            partial.unlink(missing_ok=True)
            mean_rate = float(np.mean([h.images_per_s for h in history])) if history else 0.0
            log.done(path, stamp, time.perf_counter() - start, mean_rate)
        self.progress.advance(self.bar)
        return task.encoder

    def _evaluate(self, cell: Cell, encoder: torch.nn.Module, features) -> None:
        suite, data = self.runner.suite, self.data
        idx = self.labels[(cell.seed, cell.budget)]
        self.runner.check_lease()
        hparams, hp_source = self.tuner.params(cell.task, cell.protocol, cell.budget)
        settings = settings_with(suite, cell.protocol, hparams)
        with self.runner.tracker.eval_run(cell, suite, settings, hparams, hp_source, idx) as log:
            start = time.perf_counter()
            seconds = {}
            train_y = data.train_y[idx].to(self.device)
            if cell.protocol in ("linear", "knn"):
                train_feats, test_inputs, seconds["feature_extract_s"] = features
                if cell.protocol == "linear":
                    fitted = linear_probe(train_feats[idx], train_y, data.num_classes, settings, cell.seed)
                else:
                    fitted = knn_classifier(train_feats[idx], train_y, data.num_classes, settings)
            else:
                fitted = finetune(
                    encoder,
                    self.train_x[idx],
                    train_y,
                    data.num_classes,
                    settings,
                    cell.seed,
                    prepare=TASKS[cell.task].eval_input,
                    flip=suite.dataset.flip,
                )
                test_inputs = data.test_x
            seconds["fit_s"] = time.perf_counter() - start
            # The only place test labels are read: one score per cell, after every choice has been made.
            test_acc = data.score(fitted.predict(test_inputs))
            seconds["wall_s"] = time.perf_counter() - start
            log.done(fitted, test_acc, seconds)
        self.progress.console.print(f"  {cell.label}: test_acc {test_acc:.4f}")


def _fatal(e: BaseException) -> bool:
    """Errors of the machine or the store, not of one cell: the run stops instead of failing every cell."""
    return isinstance(e, (LeaseLost, StoreError)) or is_environmental(e) or "database is locked" in str(e)


def _reason(e: BaseException) -> str:
    """One line for a failed cell (its traceback is in the cell's MLflow run, ``traceback.txt``)."""
    first = (str(e).strip().splitlines() or [""])[0][:300]
    return f"{type(e).__name__}: {first}"
