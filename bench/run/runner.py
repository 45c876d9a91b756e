"""Suite -> plan of cells -> execution, with every finished cell found by key and skipped.

A pretraining cell (task, seed) trains once and its checkpoint serves every budget and protocol of that seed.
An evaluation cell (task, seed, budget, protocol) scores one classifier on the test set. Baselines without
pretraining start from the seeded random initialisation, the same one the pretext tasks start from.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bench.cell import Cell, plan_digest
from bench.config.load import tracking_uri
from bench.config.suite import Suite
from bench.data.datasets import load_dataset
from bench.data.pool import on_device_if_it_fits
from bench.errors import ConfigError, DataError
from bench.files import check_writable, inside
from bench.protocols.tuning import Tuner
from bench.registry import TASKS
from bench.report.publish import publish
from bench.report.summary import render_summary
from bench.run.cells import GroupRun, draw_labels, prepare_encoder, resolve_device, trained_encoder
from bench.run.dryrun import print_plan
from bench.run.eta import CellTimes, EtaColumn, estimate_line
from bench.run.identity import plan_environment
from bench.run.plan import build_plan
from bench.run.staleness import stale_reasons
from bench.store.lease import Lease, acquire
from bench.store.relocate import relocate
from bench.store.runlog import MlflowTrials
from bench.store.tracking import Tracker

__all__ = ["Executor", "LocalExecutor", "Outcome", "Runner", "resolve_device"]


class Executor(Protocol):
    """Where a runner's cells run. ``execute`` runs ``todo`` (cells not yet done) for ``runner`` and returns the
    failed cells (label -> one-line reason). Every executor computes each cell with ``bench.run.cells`` (GroupRun),
    so the keys and the numbers are the same whichever runs them."""

    def environment(self, suite: Suite) -> dict:
        """What decides numbers about where the cells will run (device, precision, threads, library versions)."""
        ...

    def execute(self, runner: Runner, todo: list[Cell], labels: dict) -> dict[str, str]: ...


class LocalExecutor:
    """Every cell in this process, one (task, seed) group after another."""

    def environment(self, suite: Suite) -> dict:
        return plan_environment(suite)

    def execute(self, runner: Runner, todo: list[Cell], labels: dict) -> dict[str, str]:
        suite, data = runner.suite, runner.data
        device = runner.device = resolve_device(suite.device)
        train_x = on_device_if_it_fits(data.train_x, device)
        say = lambda text: runner.console.print(f"  {text}", highlight=False, markup=False)  # noqa: E731
        tuner = Tuner(suite, data, device, runner.prepared_encoder, runner.source, MlflowTrials(), say=say)
        failed: dict[str, str] = {}
        order = [c for _, cells in runner.groups(todo) for c in cells]  # as GroupRun runs them
        eta = EtaColumn(runner.cell_times(), order)
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), eta)
        with runner.tracker.suite_run(suite, runner.suite_path, data, device, plan_digest(runner.cells)):
            with Progress(*columns, console=runner.console) as progress:
                bar = progress.add_task("cells", total=len(todo))
                for (task, seed), cells in runner.groups(todo):
                    group = GroupRun(runner, data, train_x, labels, device, progress, bar, failed, tuner)
                    group.run(task, seed, cells)
        return failed


@dataclass
class Outcome:
    planned: int
    already_done: int
    ran: int
    failed: dict[str, str]  # cell label -> reason
    tables: str


class Runner:
    """Plans a suite, skips what is done, hands the rest to its executor (``LocalExecutor`` unless given), and
    reports."""

    def __init__(
        self, suite: Suite, suite_path: str | Path, console: Console | None = None, executor: Executor | None = None
    ) -> None:
        self.suite, self.suite_path = suite, Path(suite_path)
        self.console = console or Console()
        self.executor = executor or LocalExecutor()
        try:  # the data's identity is part of every key, so the plan needs the data (or its cache)
            self.data = load_dataset(suite.dataset)
        except DataError as e:
            raise DataError(f"{self.suite_path}: key 'dataset': {e}") from None
        self.environment = self.executor.environment(suite)
        self.device = torch.device(self.environment["device"])  # resolved (and checked) again when cells run
        self.cells = build_plan(suite, self.data.identity, self.environment)
        results = Path(suite.results_dir)
        self.cache = inside(results, "cache")
        uri = tracking_uri(suite)
        local = uri.startswith("sqlite:") or uri.startswith("file:") or "://" not in uri
        self.tracker = Tracker(uri, suite.name, results / "mlartifacts" if local else None)
        olds, moved = relocate(uri, results)
        if moved:
            self.console.print(
                f"the results folder was moved: {moved} artifact locations now point into {results.resolve()}, "
                f"not {', '.join(olds)}",
                markup=False,
            )
        self.tracker.guard = self.check_lease  # a run ends FINISHED only while this invocation holds the suite
        self._leases = (results / "mlartifacts" / "leases").resolve().as_uri() if local else None
        self.lease: Lease | None = None
        self._prepared: dict[tuple[str, int], torch.nn.Module] = {}
        self._sources: dict[tuple[str, int], str] | None = None
        self._finished: dict = {}
        self.ui_command = f"bench ui {shlex.quote(str(suite_path))}"  # what serves this suite's store

    def check(self) -> dict[tuple[int, int | str], np.ndarray]:
        """Everything a run refuses before training, on the loaded data; the dry run calls it too. Returns the
        drawn label indices per (seed, budget)."""
        labels = self.draw_labels()
        if self.suite.execution.backend == "local":  # Ray workers resolve the device where they run
            try:
                resolve_device(self.suite.device)
            except ConfigError as e:
                raise ConfigError(f"{self.suite_path}: key 'device': {e}") from None
        for name in self.suite.selected_tasks():
            try:
                TASKS[name].check_data(self.data.pool)
            except ValueError as e:
                raise DataError(f"{self.suite_path}: key 'tasks.{name}': {e} ({self.data.name})") from None
        return labels

    def describe_data(self) -> str:
        d = self.data
        _, c, h, w = d.train_x.shape
        pool = ", ".join(f"{k} {v:,}" for k, v in d.pool_composition.items())
        return (
            f"data: {d.name}, {len(d.classes)} classes, {c} x {h} x {w} px; train {len(d.train_x):,}, "
            f"test {len(d.test_x):,}; pretraining pool: {pool}; identity {d.identity}"
        )

    def run(self, dry_run: bool = False, report: bool = True, wait_s: float = 0.0, verbose: bool = False) -> Outcome:
        """Run the cells not yet done, print the summary tables and (with ``report``) write <results_dir>/<suite>/.
        Holds the suite's lease throughout (waiting up to ``wait_s`` for another holder, else LeaseBusy)."""
        start = time.perf_counter()
        self.console.print(self.describe_data(), soft_wrap=True, highlight=False)
        for warning in self.data.warnings:
            self.console.print(f"[yellow]warning:[/] {escape(warning)}", soft_wrap=True, highlight=False)
        labels = self.check()
        if dry_run:
            return self._run(start, labels, dry_run, report, verbose)
        check_writable(self.suite.results_dir)
        say = lambda text: self.console.print(text, highlight=False)  # noqa: E731
        self.lease = acquire(self.tracker.client, self.suite.name, wait_s, say=say, artifact_location=self._leases)
        try:
            return self._run(start, labels, dry_run, report, verbose)
        finally:
            self.lease.release()

    def _run(self, start: float, labels: dict, dry_run: bool, report: bool, verbose: bool = False) -> Outcome:
        stale = 0 if dry_run else self.tracker.close_stale()
        done = self.tracker.finished()
        todo = [c for c in self.cells if c.key not in done]
        n_pre = sum(c.kind == "pretrain" for c in todo)
        self.console.print(
            f"[bold]{self.suite.name}[/]: {len(self.cells)} cells, {len(self.cells) - len(todo)} already done, "
            f"{len(todo)} to run ({n_pre} pretraining, {len(todo) - n_pre} evaluation)"
            + (f"; {stale} interrupted runs marked KILLED" if stale else "")
        )
        self._finished = done
        if dry_run:
            print_plan(self.console, self.cells, set(done), stale_reasons(self.tracker, todo), verbose)
            self.console.print(estimate_line(self.cell_times(), todo), highlight=False, markup=False)
            return Outcome(len(self.cells), len(self.cells) - len(todo), 0, {}, "")
        failed: dict[str, str] = {}
        if todo:
            failed = self.executor.execute(self, todo, labels)
            self._say_failed(failed)
        tables = render_summary(self.console, self.tracker, self.cells, self.suite.report.equivalence_margin)
        if report:
            self.report()
        self.console.print(self.tracker.ui_hint(self.ui_command), soft_wrap=True, highlight=False, markup=False)
        self.console.print(f"wall time {time.perf_counter() - start:.0f} s")
        return Outcome(len(self.cells), len(self.cells) - len(todo), len(todo) - len(failed), failed, tables)

    def cell_times(self) -> CellTimes:
        """Measured cell times of this suite's finished runs (``bench.run.eta``)."""
        trials = self.tracker.runs("tags.kind = 'trial'") if self.suite.tuning.enabled else []
        return CellTimes.from_runs(self._finished.values(), trials)

    def check_lease(self) -> None:
        if self.lease is not None:
            self.lease.check()

    def report(self) -> list[Path]:
        """Write <results_dir>/<suite>/ from the suite's runs and attach it to the latest parent run."""
        return publish(self.tracker, self.cells, self.suite, self.data, self.console)

    # ------------------------------------------------------------------ what executors use

    def _say_failed(self, failed: dict[str, str]) -> None:
        if failed:
            self.console.print(
                f"[red]{len(failed)} cell(s) failed[/] (each run's traceback.txt in MLflow has the details):"
            )
            for label, reason in failed.items():
                self.console.print(f"  {label}: {reason}")

    def draw_labels(self) -> dict[tuple[int, int | str], np.ndarray]:
        """The labelled subset of every (seed, budget)."""
        try:
            return draw_labels(self.suite, self.data)
        except DataError as e:
            raise DataError(f"{self.suite_path}: key 'budgets': {e} ({self.data.name})") from None

    def source(self, task: str, seed: int) -> str:
        """The key of the encoder (task, seed) starts from."""
        if self._sources is None:
            self._sources = {(c.task, c.seed): c.source for c in reversed(self.cells)}  # the first cell's
        return self._sources[(task, seed)]

    def _encoder(self, task: str, seed: int) -> torch.nn.Module:
        source = self.source(task, seed)
        return trained_encoder(self.suite, task, seed, source, self.cache, self.tracker.finished_run(source))

    def prepared_encoder(self, task: str, seed: int) -> torch.nn.Module:
        """The encoder every protocol of (task, seed) receives (``bench.run.cells.prepare_encoder``), one at a time."""
        if (task, seed) not in self._prepared:
            encoder = prepare_encoder(self._encoder(task, seed), self.suite, self.data, self.device, task, seed)
            self._prepared = {(task, seed): encoder}  # one at a time: encoders can be large
        return self._prepared[(task, seed)]

    @staticmethod
    def groups(todo: list[Cell]) -> Iterator[tuple[tuple[str, int], list[Cell]]]:
        """Cells grouped by (task, seed), in plan order: a group's pretraining comes first in it, and its
        tuning studies use that seed's encoder and labels alone."""
        groups: dict[tuple[str, int], list[Cell]] = {}
        for c in todo:
            groups.setdefault((c.task, c.seed), []).append(c)
        yield from groups.items()
