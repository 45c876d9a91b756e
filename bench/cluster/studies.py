"""Optuna studies shared by several Ray workers: exactly the planned number of finished trials, trials of dead
workers failed and retried, surplus trials stopped."""

from __future__ import annotations

import contextlib
import os
import socket
import time
import warnings

import optuna

from bench.cluster.connect import HEARTBEAT_S, POLL_S, RUNNING, WAITING
from bench.protocols.tuning import DONE, Tuner, redo_interrupted
from bench.store.lease import alive_here, machine_id, process_start

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

    def _open(self, task: str, protocol: str, budget, seed: int, create: bool, draw: int | None = None):
        folds = self.folds(budget, seed, draw)
        if not folds:
            return None
        name = self.study_name(task, protocol, budget, seed, draw)
        pruner = optuna.pruners.MedianPruner(n_startup_trials=2) if self.cfg.prune else optuna.pruners.NopPruner()
        sampler = optuna.samplers.TPESampler(seed=self.cfg.sampler_seed + self.worker, constant_liar=True)
        make = optuna.create_study if create else optuna.load_study
        extra = {"direction": "maximize", "load_if_exists": True} if create else {}
        try:
            study = make(study_name=name, storage=self.storage, sampler=sampler, pruner=pruner, **extra)
        except KeyError:  # load_study of a study the driver never created
            study = None
        return study, folds, name

    def prepare(self, task: str, protocol: str, budget, seed: int, draw: int | None = None) -> bool:
        """Driver: create the study with trial 0 (the defaults) and redo trials a killed invocation left; True
        when trials are missing."""
        if not self.suite.tuned(protocol, budget):
            return False
        opened = self._open(task, protocol, budget, seed, create=True, draw=draw)
        if opened is None:
            return False
        study = opened[0]
        if self.cfg.start_from_defaults and not study.trials:
            study.enqueue_trial(self._defaults(protocol))
        redo_interrupted(study)
        return sum(t.state in DONE for t in study.get_trials(deepcopy=False)) < self.cfg.trials

    def _study(self, task: str, protocol: str, budget, seed: int, draw: int | None = None) -> tuple[dict, str]:
        opened = self._open(task, protocol, budget, seed, create=False, draw=draw)
        if opened is None:  # too few labels to validate on: the base says so without a study
            return super()._study(task, protocol, budget, seed, draw)
        study, folds, name = opened
        if study is None:
            raise RuntimeError(f"study {name} was never created: {task} seed={seed} has not finished pretraining")
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
            if objective is None:
                objective = self._claimed(self._objective(task, protocol, budget, seed, folds, name, draw), target)
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
