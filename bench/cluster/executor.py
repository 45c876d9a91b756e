"""A suite's cells as Ray tasks (``[execution] backend = "ray"``): the driver plans, holds the suite's lease,
dispatches and shows progress; workers run the cells with the runner's own code.

- A pretraining cell is one task (``execution.pretrain`` resources, a GPU by default when the cluster has any).
- An evaluation group -- every protocol and budget of one (task, seed) -- is one task, dispatched once its
  pretraining has finished, so its features are extracted once (``execution.evaluate``).
- A tuned (task, protocol, budget) study runs on ``execution.tuning_workers`` tasks at once, after the
  pretraining of the tuning seed; the evaluation groups of that task wait for its studies (``SharedTuner``).
- A task whose worker died (process killed, machine lost) runs again, up to ``execution.retries`` times; a
  pretraining resumes from the state it saved on that machine (``pretrain.checkpoint_every_s``). A cell's run
  left RUNNING by the dead attempt is marked KILLED, so exactly one FINISHED run per cell remains.

Workers share nothing with the driver but the tracking store and Optuna's storage: runs and checkpoints (as run
artifacts) go through MLflow, so on several machines both must be servers (``bench server``). Every worker loads
the data from its own ``BENCH_DATA`` (or ``dataset.root``) and refuses to run when its data's identity differs
from the driver's. Workers check the driver's lease in the store before every epoch and every run they finish.

Ray schedules, retries and moves the tasks; this module only decides what may run when (a pretraining before
its evaluations, a study before the evaluations that use it).
"""

from __future__ import annotations

import socket
from pathlib import Path

import mlflow
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bench.cell import Cell, plan_digest
from bench.cluster.connect import RayPlanning, _ray, is_shared
from bench.cluster.studies import SharedTuner
from bench.cluster.worker import _REMOTE
from bench.config.load import tracking_uri
from bench.errors import ConfigError
from bench.run.cells import failure_reason, is_fatal
from bench.run.runner import Runner


class RayExecutor(RayPlanning):
    """The runner's executor seam (``bench.run.runner.Executor``) on Ray: the driver plans, holds the suite's
    lease, dispatches and shows progress; workers compute each cell with ``bench.run.cells``, under the same
    keys."""

    def execute(self, runner: Runner, todo: list[Cell], labels: dict) -> dict[str, str]:
        ray = _ray()
        self.runner, self.suite = runner, runner.suite
        ex = self.suite.execution
        started_here = not ray.is_initialized()
        if started_here:
            address = None if ex.address == "local" else ex.address
            ray.init(address=address, include_dashboard=False, log_to_driver=True, logging_level="ERROR")
        try:
            nodes = [n for n in ray.nodes() if n.get("Alive")]
            self.refuse_local_stores(len(nodes))
            gpus = ray.cluster_resources().get("GPU", 0)
            say = f"ray: {len(nodes)} node(s), {ray.cluster_resources().get('CPU', 0):g} CPUs, {gpus:g} GPUs"
            runner.console.print(say, highlight=False)
            plan = plan_digest(runner.cells)
            with runner.tracker.suite_run(
                self.suite, runner.suite_path, runner.data, torch.device("cpu"), plan
            ) as parent:
                mlflow.set_tag("execution", say)
                job = self._job(parent.info.run_id)
                return _Dispatch(runner, job, todo, gpus > 0).run()
        finally:
            if started_here:
                ray.shutdown()

    def refuse_local_stores(self, n_nodes: int) -> None:
        if n_nodes < 2:
            return
        uri = tracking_uri(self.suite)
        hint = "start the tracking service (bench server --host ADDRESS) and point the suite at it"
        if not is_shared(uri):
            raise ConfigError(
                f"tracking URI {uri} is a file on this machine, but the Ray cluster has {n_nodes} machines whose "
                f"workers cannot write to it; {hint}: export MLFLOW_TRACKING_URI=http://ADDRESS:5000"
            )
        storage = self.suite.tuning.storage or ""
        if self.suite.tuning.enabled and not is_shared(storage):
            raise ConfigError(
                f"tuning.storage {storage or '(the journal file in results_dir)'} is on this machine, but the Ray "
                f"cluster has {n_nodes} machines; {hint}: --set tuning.storage=postgresql+psycopg://..."
            )

    def _job(self, parent_run_id: str) -> dict:
        """Everything a worker needs, with every path made absolute (a worker's folder is not the driver's)."""
        runner = self.runner
        update: dict = {
            "results_dir": str(Path(self.suite.results_dir).resolve()),
            "tracking_uri": tracking_uri(self.suite),
        }
        if self.suite.dataset.root:
            root = str(Path(self.suite.dataset.root).resolve())
            update["dataset"] = self.suite.dataset.model_copy(update={"root": root})
        suite = self.suite.model_copy(update=update)
        return {
            "id": parent_run_id,
            "suite": suite,
            "suite_path": str(runner.suite_path),
            "experiment_id": runner.tracker.experiment_id,
            "parent_run_id": parent_run_id,
            "lease": (runner.lease.experiment_id, runner.lease.holder.token) if runner.lease else None,
            "identity": runner.data.identity,
            "environment": runner.environment,
            "keys": [c.key for c in runner.cells],
            "driver": socket.gethostname(),
        }


class _Dispatch:
    """What may run when, for one invocation: pretraining first, then the studies of each (task, seed), then that
    seed's evaluation group; each submitted to Ray as soon as what it needs has finished."""

    def __init__(self, runner: Runner, job: dict, todo: list[Cell], cluster_has_gpus: bool) -> None:
        self.ray = _ray()
        self.runner, self.job, self.gpu_default = runner, job, 1.0 if cluster_has_gpus else 0.0
        self.ex = runner.suite.execution
        self.tuner = SharedTuner(runner.suite, runner.data, torch.device("cpu"), runner.prepared_encoder, runner.source)
        self.pretrain = {(c.task, c.seed): c for c in todo if c.kind == "pretrain"}
        self.evals: dict[tuple[str, int], list[Cell]] = {}
        for c in todo:
            if c.kind == "eval":
                self.evals.setdefault((c.task, c.seed), []).append(c)
        self.failed: dict[str, str] = {}
        self.pretrained = {g for g in self.evals if g not in self.pretrain}
        # (task, seed) -> its studies still running; a group without tuned cells has none to wait for
        self.studies: dict[tuple[str, int], set[tuple]] = {
            group: set() for group, cells in self.evals.items() if not any(self._tuned(c) for c in cells)
        }
        self.pending: dict = {}  # ObjectRef -> (kind, what)

    def _tuned(self, cell: Cell) -> bool:
        return self.runner.suite.tuned(cell.protocol, cell.budget)

    def _options(self, resources) -> dict:
        gpus = self.gpu_default if resources.gpus is None else resources.gpus
        return {"num_cpus": resources.cpus, "num_gpus": gpus, "max_retries": self.ex.retries}

    def _submit(self, kind: str, what, resources, *args) -> None:
        remote = self.ray.remote(_REMOTE[kind]).options(**self._options(resources))
        self.pending[remote.remote(self.job, *args)] = (kind, what)

    def run(self) -> dict[str, str]:
        total = len(self.pretrain) + sum(map(len, self.evals.values()))
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=self.runner.console) as progress:
            self.progress = progress
            self.bar = progress.add_task("cells (ray)", total=total)
            for (task, seed), cell in self.pretrain.items():
                self._submit("cells", (task, seed, [cell]), self.ex.pretrain, task, seed, [cell.key])
            for group in list(self.evals):
                if group not in self.pretrain and group not in self.studies:
                    self._start_studies(*group)
            self._dispatch_evaluations()
            try:
                while self.pending:
                    ready, _ = self.ray.wait(list(self.pending), num_returns=1)
                    self._finished(ready[0])
                    self._dispatch_evaluations()
            finally:
                for ref in self.pending:  # Ctrl-C or a fatal error: what still runs is stopped (its runs
                    self.ray.cancel(ref)  # end KILLED; the next invocation resumes)
        return self.failed

    def _start_studies(self, task: str, seed: int) -> None:
        """Each tuned study of (``task``, ``seed``) whose trials are missing, on ``tuning_workers`` tasks at
        once; its encoder has finished pretraining."""
        wanted = {(c.protocol, c.budget, c.draw) for c in self.evals.get((task, seed), []) if self._tuned(c)}
        running: set[tuple] = set()
        for protocol, budget, draw in sorted(wanted, key=str):
            if self.tuner.prepare(task, protocol, budget, seed, draw):
                running.add((protocol, budget, draw))
                what = (task, seed, protocol, budget, draw)
                for worker in range(self.ex.tuning_workers):
                    self._submit("study", what, self.ex.tune, task, protocol, budget, seed, worker, draw)
        self.studies[(task, seed)] = running

    def _dispatch_evaluations(self) -> None:
        for group in [g for g in self.evals if g in self.pretrained and not self.studies.get(g, {0})]:
            task, seed = group
            cells = self.evals.pop(group)
            self._submit("cells", (task, seed, cells), self.ex.evaluate, task, seed, [c.key for c in cells])

    def _finished(self, ref) -> None:
        kind, what = self.pending.pop(ref)
        reason = None  # why the task itself failed
        try:
            failed = self.ray.get(ref)
        except self.ray.exceptions.RayTaskError as e:
            cause = e.cause if isinstance(e.cause, BaseException) else e
            if isinstance(cause, ConfigError) or is_fatal(cause):
                raise cause from None  # the data, the store or the lease: every other task would fail too
            failed, reason = None, failure_reason(cause)
        except self.ray.exceptions.RayError as e:  # the worker died more often than execution.retries
            failed, reason = None, f"worker lost after {self.ex.retries} retries ({type(e).__name__})"
        if kind == "study":
            task, seed, protocol, budget, draw = what
            # the evaluations finish a study that fell short
            self.studies[(task, seed)].discard((protocol, budget, draw))
            said = "done" if reason is None else f"a worker stopped: {reason}"
            if reason is not None or not any(k == "study" and w == what for k, w in self.pending.values()):
                at = "" if draw is None else f" draw={draw}"
                line = f"  study {task} seed={seed}{at} {protocol} {budget}: {said}"
                self.progress.console.print(line, highlight=False)
            return
        task, seed, cells = what
        if reason is not None:
            failed = {c.label: reason for c in cells}
        self.failed.update(failed)
        self.progress.advance(self.bar, len(cells))
        if cells[0].kind == "pretrain":
            pre = cells[0]
            if pre.label in failed:
                for c in self.evals.pop((task, seed), []):
                    self.failed[c.label] = f"not run: pretraining failed ({failed[pre.label]})"
                    self.progress.advance(self.bar)
            else:
                self.pretrained.add((task, seed))
                if (task, seed) not in self.studies:
                    self._start_studies(task, seed)
