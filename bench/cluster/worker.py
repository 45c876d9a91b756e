"""A Ray worker: the driver's suite, data and environment checked, then the cells and studies it is sent run
under the driver's lease and parent run, with the local code of ``bench.run.cells``."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator

import mlflow
import torch
from mlflow.tracking import fluent
from rich.console import Console
from rich.progress import Progress

from bench.cluster.connect import RayPlanning, _ray
from bench.cluster.studies import SharedTuner
from bench.config.suite import Suite
from bench.data.pool import on_device_if_it_fits
from bench.errors import ServiceError
from bench.run.cells import GroupRun, resolve_device
from bench.run.runner import Runner
from bench.store.lease import verify
from bench.store.runlog import MlflowTrials
from bench.store.tracking import environment_tags


class WorkerRunner(Runner):
    """The runner inside a Ray worker: the driver's suite, data checked against the driver's, the driver's lease
    and parent run."""

    def __init__(self, job: dict) -> None:
        ray = _ray()
        suite: Suite = job["suite"]
        suite.register_entries()  # plug-ins and backbones by library, as the driver's validation registered them
        super().__init__(suite, job["suite_path"], Console(highlight=False, soft_wrap=True), RayPlanning())
        node = ray.util.get_node_ip_address()
        planned = job["environment"]
        if self.environment != planned:
            differ = [
                k for k in sorted(set(self.environment) | set(planned)) if self.environment.get(k) != planned.get(k)
            ]
            what = ", ".join(f"{k} {self.environment.get(k)} here, {planned.get(k)} planned" for k in differ)
            raise ServiceError(
                f"node {node} ({socket.gethostname()}): cells here would run under another environment than the "
                f"driver planned ({what}); set device = 'cpu' or 'cuda' in the suite and install the driver's "
                "library versions on every node"
            )
        if self.data.identity != job["identity"]:
            from bench.data.datasets import data_root

            raise ServiceError(
                f"node {node} ({socket.gethostname()}): the data under {data_root(suite.dataset)} is not the "
                f"driver's (identity {self.data.identity}, driver {job['identity']}); put the same "
                f"{suite.dataset.name} files there (BENCH_DATA) on every node"
            )
        unknown = set(job["keys"]) - {c.key for c in self.cells}
        if unknown:
            raise ServiceError(
                f"node {node} ({socket.gethostname()}): bench here plans other cells than the driver's (e.g. "
                f"{sorted(unknown)[0]}): its code or its suite differs; install the driver's bench on every node"
            )
        self.job = job
        self.device = resolve_device(suite.device)
        self.tracker.experiment_id = job["experiment_id"]
        self.tracker.env = environment_tags(self.device) | {"ray_node": node, "ray_worker_pid": str(os.getpid())}
        mlflow.set_experiment(experiment_id=job["experiment_id"])
        self.train_x = on_device_if_it_fits(self.data.train_x, self.device)
        self.labels = self.draw_labels()

    def check_lease(self) -> None:
        if self.job["lease"] is not None:
            experiment_id, token = self.job["lease"]
            verify(self.tracker.client, experiment_id, self.suite.name, token)

    def tuner(self, worker: int = 0) -> SharedTuner:
        return SharedTuner(
            self.suite,
            self.data,
            self.device,
            self.prepared_encoder,
            self.source,
            MlflowTrials(),
            worker=worker,
            retries=self.suite.execution.retries,
        )

    @contextlib.contextmanager
    def under_parent(self) -> Iterator[None]:
        """The driver's parent run as this process's active run, so cell and trial runs nest under it; taken
        off again without ending it (the driver ends it)."""
        stack = fluent._active_run_stack.get()
        stack.append(fluent.ActiveRun(self.tracker.client.get_run(self.job["parent_run_id"])))
        try:
            yield
        finally:
            stack.pop()

    def close_attempts(self, keys: list[str]) -> None:
        """Runs of these cells left RUNNING by an attempt whose worker died: marked KILLED (the driver
        dispatches a cell once at a time, so nothing else runs them)."""
        for key in keys:
            for run in self.tracker.runs(f"attributes.status = 'RUNNING' and tags.cell_key = '{key}'"):
                self.tracker.client.set_terminated(run.info.run_id, "KILLED")

    def run_cells(self, task: str, seed: int, keys: list[str]) -> dict[str, str]:
        cells = [c for c in self.cells if c.key in set(keys)]
        self.close_attempts(keys)
        failed: dict[str, str] = {}
        progress = Progress(console=self.console, disable=True)
        bar = progress.add_task("cells", total=len(cells))
        group = GroupRun(self, self.data, self.train_x, self.labels, self.device, progress, bar, failed, self.tuner())
        with self.under_parent():
            group.run(task, seed, cells)
        return failed

    def run_study(self, task: str, protocol: str, budget, seed: int, worker: int, draw: int | None = None) -> None:
        with self.under_parent():
            self.tuner(worker).params(task, protocol, budget, seed, draw)


_WORKER: dict[str, WorkerRunner] = {}  # this worker process's runner, for the job it serves (data loaded once)


def _worker(job: dict) -> WorkerRunner:
    """This process's runner for ``job``. Torch gets the CPU threads the driver planned the cells with (its own
    count, or ``execution.threads``): Ray limits a worker to one thread, and CPU results depend on the count."""
    torch.set_num_threads(job["environment"].get("threads") or len(os.sched_getaffinity(0)))
    if job["id"] not in _WORKER:
        _WORKER.clear()
        _WORKER[job["id"]] = WorkerRunner(job)
    return _WORKER[job["id"]]


def run_cells(job: dict, task: str, seed: int, keys: list[str]) -> dict[str, str]:
    """Ray task: a pretraining cell, or an evaluation group; returns the failed cells (label -> reason)."""
    return _worker(job).run_cells(task, seed, keys)


def run_study(job: dict, task: str, protocol: str, budget, seed: int, worker: int, draw: int | None = None) -> None:
    """Ray task: trials of one study (of ``draw``'s labels, with draws) until it has all its finished trials."""
    _worker(job).run_study(task, protocol, budget, seed, worker, draw)


_REMOTE = {"cells": run_cells, "study": run_study}
