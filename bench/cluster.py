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

import contextlib
import os
import socket
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import mlflow
import optuna
import torch
from mlflow.tracking import fluent
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bench.cells import GroupRun, failure_reason, is_fatal, resolve_device
from bench.config import ConfigError, Suite, tracking_uri
from bench.identity import plan_environment
from bench.lease import alive_here, machine_id, process_start, verify
from bench.plan import Cell
from bench.runner import Runner
from bench.tracking import MlflowTrials, environment_tags
from bench.tuning import DONE, Tuner, redo_interrupted
from bench.validation import validation_folds

RUNNING = optuna.trial.TrialState.RUNNING
WAITING = optuna.trial.TrialState.WAITING
POLL_S = 1.0  # how often a tuning worker looks at trials running elsewhere
HEARTBEAT_S = 30  # Optuna's trial heartbeat on a database storage; a trial silent for 4x this has failed


def _ray():
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")  # read at import: every cell's line, even when two say the same
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "execution.backend = 'ray' needs Ray and the PostgreSQL driver: pip install 'pretext-bench[cluster]'"
        ) from None
    return ray


def is_shared(uri: str) -> bool:
    """A store every machine of a cluster can reach (a server or a database server, not a file here)."""
    return not (uri.startswith("sqlite:") or uri.startswith("file:") or "://" not in uri)


class RayExecutor:
    """The runner's executor seam (``bench.runner.Executor``) on Ray: the driver plans, holds the suite's lease,
    dispatches and shows progress; workers compute each cell with ``bench.cells``, under the same keys."""

    def environment(self, suite: Suite) -> dict:
        """The local plan's, with the thread count every worker will use (``execution.threads``, else this
        machine's): the workers' numbers then equal a local run's, and a worker whose device or libraries
        differ refuses to run."""
        return plan_environment(suite, suite.execution.threads)

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
            with runner.tracker.suite_run(self.suite, runner.suite_path, runner.data, torch.device("cpu")) as parent:
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
    """What may run when, for one invocation: pretraining first, then the studies of the tuning seed, then the
    evaluation groups; each submitted to Ray as soon as what it needs has finished."""

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
        # task -> studies still running; a task without tuned cells has none to wait for
        self.studies: dict[str, set[tuple]] = {
            task: set() for task, _ in self.evals if not any(self._tuned(c) for c in self._cells_of(task))
        }
        self.pending: dict = {}  # ObjectRef -> (kind, what)

    def _cells_of(self, task: str) -> list[Cell]:
        return [c for (t, _), cells in self.evals.items() if t == task for c in cells]

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
            for task in dict.fromkeys(t for t, _ in self.evals):
                if (task, self.tuner.seed) not in self.pretrain:
                    self._start_studies(task)
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

    def _start_studies(self, task: str) -> None:
        """Each tuned study of ``task`` whose trials are missing, on ``tuning_workers`` tasks at once."""
        wanted = {(c.protocol, c.budget) for g, cells in self.evals.items() if g[0] == task for c in cells}
        running: set[tuple] = set()
        tuning_seed = self.pretrain.get((task, self.tuner.seed))
        if tuning_seed is not None and tuning_seed.label in self.failed:
            wanted = set()  # no encoder to tune on: the evaluations say so, cell by cell
        for protocol, budget in sorted(wanted, key=str):
            if self.tuner.prepare(task, protocol, budget):
                running.add((protocol, budget))
                for worker in range(self.ex.tuning_workers):
                    self._submit("study", (task, protocol, budget), self.ex.tune, task, protocol, budget, worker)
        self.studies[task] = running

    def _dispatch_evaluations(self) -> None:
        for group in [g for g in self.evals if g in self.pretrained and not self.studies.get(g[0], {0})]:
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
            task, protocol, budget = what
            self.studies[task].discard((protocol, budget))  # the evaluations finish a study that fell short
            said = "done" if reason is None else f"a worker stopped: {reason}"
            if reason is not None or not any(k == "study" and w == what for k, w in self.pending.values()):
                self.progress.console.print(f"  study {task} {protocol} {budget}: {said}", highlight=False)
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
            if seed == self.tuner.seed and task not in self.studies:
                self._start_studies(task)


# ---------------------------------------------------------------------------------------------- worker side


class SharedTuner(Tuner):
    """Trials of one study on several workers at once, all reading and writing one Optuna storage (PostgreSQL on
    a cluster; the journal file works on one machine).

    - Exactly ``tuning.trials`` finished trials per study: a trial runs only if fewer than that many trials
      numbered before it are finished or running (the storage numbers trials atomically); otherwise it ends FAIL,
      tagged ``surplus``, without running. (Optuna's MaxTrialsCallback stops a worker after a trial finished, so
      workers that started trials at once overshoot.)
    - A trial whose worker died is failed -- by Optuna's heartbeat on a database storage, or at once when its
      process on this machine is gone -- and retried once more with its parameters (RetryFailedTrialCallback).
    - The driver creates each study and enqueues trial 0, the configured defaults, before any worker starts.
    - Each worker's TPE sampler has its own seed (``sampler_seed`` + worker number) and treats running trials as
      bad ("constant liar"), so workers do not suggest the same point; the order in which parallel trials finish
      decides what TPE sees, so a study on several workers is not repeatable trial by trial (its trial count is).
      With one worker it matches the local backend.
    """

    def __init__(self, *args, worker: int = 0, retries: int = 2) -> None:
        super().__init__(*args)
        self.worker = worker
        self.retry = _retry_callback(retries)
        url = self.cfg.storage or ""
        if self.cfg.enabled and url.split(":", 1)[0].split("+", 1)[0] in ("postgresql", "mysql", "sqlite"):
            with warnings.catch_warnings():  # Optuna calls the heartbeat experimental
                warnings.simplefilter("ignore")
                self.storage = optuna.storages.RDBStorage(
                    url, heartbeat_interval=HEARTBEAT_S, grace_period=4 * HEARTBEAT_S, failed_trial_callback=self.retry
                )

    def _open(self, task: str, protocol: str, budget, create: bool):
        idx = self._labelled(budget)
        folds = validation_folds(idx, self.data.train_y.numpy(), self.cfg.val_fraction, self.seed)
        if not folds:
            return None
        name = self.study_name(task, protocol, budget)
        pruner = optuna.pruners.MedianPruner(n_startup_trials=2) if self.cfg.prune else optuna.pruners.NopPruner()
        sampler = optuna.samplers.TPESampler(seed=self.cfg.sampler_seed + self.worker, constant_liar=True)
        make = optuna.create_study if create else optuna.load_study
        extra = {"direction": "maximize", "load_if_exists": True} if create else {}
        try:
            study = make(study_name=name, storage=self.storage, sampler=sampler, pruner=pruner, **extra)
        except KeyError:  # load_study of a study the driver never created
            study = None
        return study, folds, name

    def _labelled(self, budget):
        from bench.data import budget_indices

        return budget_indices(self.data.train_y.numpy(), budget, self.seed)

    def prepare(self, task: str, protocol: str, budget) -> bool:
        """Driver: create the study with trial 0 (the defaults) and redo trials a killed invocation left; True
        when trials are missing."""
        if not self.suite.tuned(protocol, budget):
            return False
        opened = self._open(task, protocol, budget, create=True)
        if opened is None:
            return False
        study = opened[0]
        if self.cfg.start_from_defaults and not study.trials:
            study.enqueue_trial(self._defaults(protocol))
        redo_interrupted(study)
        return sum(t.state in DONE for t in study.get_trials(deepcopy=False)) < self.cfg.trials

    def _study(self, task: str, protocol: str, budget) -> tuple[dict, str]:
        opened = self._open(task, protocol, budget, create=False)
        if opened is None:  # too few labels to validate on: the base says so without a study
            return super()._study(task, protocol, budget)
        study, folds, name = opened
        if study is None:
            raise RuntimeError(
                f"study {name} was never created: the pretraining of the tuning seed ({self.seed}) has not finished"
            )
        target, objective = self.cfg.trials, None
        while True:
            trials = study.get_trials(deepcopy=False)
            done = sum(t.state in DONE for t in trials)
            running = [t for t in trials if t.state == RUNNING]
            if done >= target:
                break
            if done + len(running) >= target:  # the rest is running elsewhere: wait, failing dead workers' trials
                fail_dead_trials(study, running, self.retry)
                with warnings.catch_warnings():  # "experimental"
                    warnings.simplefilter("ignore")
                    optuna.storages.fail_stale_trials(study)
                time.sleep(POLL_S)
                continue
            objective = objective or self._claimed(self._objective(task, protocol, budget, folds, name), target)
            n = target - done - len(running)
            study.optimize(objective, n_trials=n, catch=(Surplus,), callbacks=[stop_on_surplus])
        best = study.best_trial
        return dict(best.params), f"tuned ({done} trials, study {name}, best val_acc {best.value:.4f})"

    def _claimed(self, objective, target: int):
        me = {"worker_host": socket.gethostname(), "worker_machine": machine_id(), "worker_pid": os.getpid()}
        me["worker_started"] = process_start(os.getpid())

        def claimed(trial: optuna.Trial) -> float:
            states = (*DONE, RUNNING, WAITING)  # a retried trial is numbered when enqueued, run later
            ahead = [t for t in trial.study.get_trials(deepcopy=False, states=states) if t.number < trial.number]
            if len(ahead) >= target:
                trial.set_user_attr("surplus", True)  # and stop_on_surplus ends this worker's loop
                raise Surplus(f"trial {trial.number}: {target} trials are finished or running already")
            for key, value in {**me, "worker_trial": trial.number}.items():  # a retried copy keeps the
                trial.set_user_attr(key, value)  # attributes of its original: the number tells them apart
            return objective(trial)

        return claimed


def fail_dead_trials(study: optuna.Study, running: list, retry) -> list[int]:
    """Of the ``running`` trials, those whose worker is gone: failed and handed to ``retry`` (which enqueues
    their parameters again). Gone means its process on this machine has ended, or it died between Optuna's ask
    and recording itself (no heartbeat either) and started over the grace period ago. Trials of another machine
    are left to Optuna's heartbeat. Returns the numbers of the trials failed."""
    now, failed = time.time(), []
    for t in running:
        attrs = t.user_attrs
        if attrs.get("worker_trial") != t.number:  # a retried copy keeps its original's attributes
            started = t.datetime_start.timestamp() if t.datetime_start else now
            if now - started < 4 * HEARTBEAT_S:
                continue
        elif attrs.get("worker_machine") != machine_id():
            continue
        elif alive_here(int(attrs["worker_pid"]), attrs.get("worker_started", "")):
            continue
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
            if study._storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL):
                retry(study, study._storage.get_trial(t._trial_id))
                failed.append(t.number)
    return failed


def _retry_callback(retries: int):
    """Optuna's callback that enqueues a failed trial's parameters again (renamed in Optuna 4.9)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "experimental" and "deprecated" notices of the two names
        make = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)
        if make is None:
            make = optuna.storages.RetryFailedTrialCallback
        return make(max_retry=retries)


def stop_on_surplus(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Optuna callback: a surplus trial means the study has all it needs; this worker stops asking."""
    if trial.user_attrs.get("surplus"):
        study.stop()


class Surplus(Exception):
    """A trial started after the study had all its trials finished or running."""


class WorkerRunner(Runner):
    """The runner inside a Ray worker: the driver's suite, data checked against the driver's, the driver's lease
    and parent run."""

    def __init__(self, job: dict) -> None:
        ray = _ray()
        suite: Suite = job["suite"]
        super().__init__(suite, job["suite_path"], Console(highlight=False, soft_wrap=True), RayExecutor())
        node = ray.util.get_node_ip_address()
        planned = job["environment"]
        if self.environment != planned:
            differ = [
                k for k in sorted(set(self.environment) | set(planned)) if self.environment.get(k) != planned.get(k)
            ]
            what = ", ".join(f"{k} {self.environment.get(k)} here, {planned.get(k)} planned" for k in differ)
            raise ConfigError(
                f"node {node} ({socket.gethostname()}): cells here would run under another environment than the "
                f"driver planned ({what}); set device = 'cpu' or 'cuda' in the suite and install the driver's "
                "library versions on every node"
            )
        if self.data.identity != job["identity"]:
            from bench.data import data_root

            raise ConfigError(
                f"node {node} ({socket.gethostname()}): the data under {data_root(suite.dataset)} is not the "
                f"driver's (identity {self.data.identity}, driver {job['identity']}); put the same "
                f"{suite.dataset.name} files there (BENCH_DATA) on every node"
            )
        unknown = set(job["keys"]) - {c.key for c in self.cells}
        if unknown:
            raise ConfigError(
                f"node {node} ({socket.gethostname()}): bench here plans other cells than the driver's (e.g. "
                f"{sorted(unknown)[0]}): its code or its suite differs; install the driver's bench on every node"
            )
        self.job = job
        self.device = resolve_device(suite.device)
        self.tracker.experiment_id = job["experiment_id"]
        self.tracker.env = environment_tags(self.device) | {"ray_node": node, "ray_worker_pid": str(os.getpid())}
        mlflow.set_experiment(experiment_id=job["experiment_id"])
        self.train_x = self.data.train_x.to(self.device)
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

    def run_study(self, task: str, protocol: str, budget, worker: int) -> None:
        with self.under_parent():
            self.tuner(worker).params(task, protocol, budget)


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


def run_study(job: dict, task: str, protocol: str, budget, worker: int) -> None:
    """Ray task: trials of one study until it has all its finished trials."""
    _worker(job).run_study(task, protocol, budget, worker)


_REMOTE = {"cells": run_cells, "study": run_study}
