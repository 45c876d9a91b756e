"""Hyperparameter tuning that is fair to the baselines: one Optuna study per (task, protocol, budget), the same
number of finished trials for every task and baseline, validation accuracy on labels drawn from inside the budget
(hold-out or k-fold, ``bench.protocols.validation``), never the test set.

Each study belongs to one seed: it uses that seed's encoder and validates on that seed's budget labels only, so
every choice a cell's result depends on is made with the cell's own labels (a study of another seed's labels would
give each cell a second labelled subset, silently doubling its budget). Its best hyperparameters are used for the
final evaluation of that seed's cell and recorded on its run. Studies live in
Optuna storage (a journal file next to the MLflow store by default, any storage URL otherwise) and resume: a
study that was interrupted runs only its missing trials. Every trial is also a nested MLflow run.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
import torch
from torch import nn

from bench.cell import eval_seed, label_draw
from bench.clock import Every
from bench.config.settings import digest
from bench.config.suite import Suite
from bench.data.budgets import budget_indices
from bench.data.datasets import Dataset
from bench.errors import ConfigError
from bench.protocols.base import Labelled, Watch
from bench.protocols.features import extract_features
from bench.protocols.validation import validation_folds
from bench.registry import PROTOCOLS, TASKS
from bench.train.optim import NonFiniteLoss

DONE = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
# Optuna logs a failed or interrupted trial as a warning with its traceback; bench reports a failure itself, in
# one line, and an interrupt as "interrupted; rerun to resume"
optuna.logging.set_verbosity(optuna.logging.ERROR)


def storage_for(suite: Suite) -> optuna.storages.BaseStorage | str:
    if suite.tuning.storage:
        return suite.tuning.storage
    return journal_storage(Path(suite.results_dir) / "optuna.journal")


def journal_storage(path: Path) -> optuna.storages.JournalStorage:
    """Optuna's journal file at ``path``. A record cut short by a kill during a write (no final newline) is
    removed first: Optuna skips it when reading, but would glue the next record onto it and lose both. A damaged
    record elsewhere is a ConfigError naming the file and how to recover."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file() and path.stat().st_size:
        data = path.read_bytes()
        if not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            with open(path, "r+b") as f:
                f.truncate(keep)
            print(f"{path}: removed its last record, cut short by an interrupted write ({len(data) - keep} bytes)")
    try:
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    except (ValueError, UnicodeDecodeError) as e:  # json.JSONDecodeError is a ValueError
        raise ConfigError(
            f"{path}: the Optuna journal is damaged ({type(e).__name__}: {e}); move it aside to tune again from the "
            "start (finished cells keep their runs), or delete the damaged line"
        ) from None


def redo_interrupted(study: optuna.Study) -> list[int]:
    """Trials a killed invocation left RUNNING (one writer per suite: nothing else runs them), and trials an
    interrupt (Ctrl-C, SIGTERM) ended FAIL, are evaluated again: RUNNING ones are marked FAIL, and the parameters
    of each are enqueued once more (once: the new trial records ``redo_of``), so the configured defaults of trial
    0 are never lost. Returns the numbers of the trials redone."""
    trials = study.get_trials(deepcopy=False)
    already = {t.user_attrs.get("redo_of") for t in trials}
    redone = []
    for t in trials:
        stopped = t.state == optuna.trial.TrialState.FAIL and t.user_attrs.get("interrupted")
        if t.number in already or not (t.state == optuna.trial.TrialState.RUNNING or stopped):
            continue
        if t.state == optuna.trial.TrialState.RUNNING:
            study._storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
        params = t.system_attrs.get("fixed_params") or t.params
        if params:
            study.enqueue_trial(dict(params), user_attrs={"redo_of": t.number}, skip_if_exists=False)
        redone.append(t.number)
    return redone


class TrialRecord:
    """Where a trial's parameters, tags and metrics go (``bench.store.tracking.MlflowTrials`` in a run); this one keeps
    nothing (the golden check, tests)."""

    @contextlib.contextmanager
    def trial(self, name: str, tags: dict[str, str], params: dict) -> Iterator[TrialRecord]:
        yield self

    def tag(self, key: str, value: str) -> None:
        pass

    def metric(self, key: str, value: float, step: int | None = None) -> None:
        pass

    def history(self, history: list[dict], prefix: str) -> None:
        pass


def trial_name(task: str, protocol: str, budget, seed: int, number: int, draw: int | None = None) -> str:
    at = "" if draw is None else f" draw={draw}"
    return f"{task} {protocol} {budget} seed={seed}{at} trial {number}"


class Tuner:
    def __init__(
        self,
        suite: Suite,
        data: Dataset,
        device: torch.device,
        encoder_for: Callable[[str, int], nn.Module],
        source_for: Callable[[str, int], str],
        trials: TrialRecord | None = None,
        storage: optuna.storages.BaseStorage | None = None,
        say: Callable[[str], None] | None = None,
    ):
        """``encoder_for(task, seed)``: the encoder the protocols receive; ``source_for(task, seed)``: its key;
        ``trials``: where each trial is recorded; ``storage``: the studies' (default: ``tuning.storage``, else
        a journal file next to the MLflow store); ``say``: where a line goes when a trial starts and ends."""
        self.suite, self.data, self.device, self.encoder_for = suite, data, device, encoder_for
        self.trials = trials or TrialRecord()
        self.say = say or (lambda text: None)
        self.source_for = source_for
        self.cfg = suite.tuning
        self.storage = storage if storage is not None else storage_for(suite) if self.cfg.enabled else None
        self.results: dict[tuple, tuple[dict, str]] = {}
        self.features: dict[tuple[str, int], torch.Tensor] = {}
        self.labels_used: dict[tuple, set[int]] = {}  # (task, protocol, budget, seed, draw) -> label indices read

    def params(self, task: str, protocol: str, budget, seed: int, draw: int | None = None) -> tuple[dict, str]:
        """(hyperparameters to use, how they were obtained) for the final evaluation of (task, protocol, budget,
        seed, draw), chosen on that cell's budget labels (``draw``'s; None: the seed's own draw)."""
        if not self.suite.tuned(protocol, budget):
            return {}, "default"
        key = (task, protocol, budget, seed, draw)
        if key not in self.results:
            self.results[key] = self._study(task, protocol, budget, seed, draw)
        return self.results[key]

    def study_name(self, task: str, protocol: str, budget, seed: int, draw: int | None = None) -> str:
        """A study's identity: the task, protocol, budget, seed and label draw, the tuning settings, and the
        seed's encoder and the draw's labels. More trials extend the same study, so the trial count is not part
        of it."""
        identity = {
            "tuning": self.cfg.model_dump(exclude={"storage", "enabled", "trials"}),
            "source": self.source_for(task, seed),
            "settings": self.suite.protocol(protocol).model_dump(),
            "seed": seed,
            "flip": self.suite.dataset.flip,
        } | ({} if draw is None else {"draw": draw})
        at = "" if draw is None else f"draw{draw}:"
        return f"{self.suite.name}:{task}:{protocol}:{budget}:seed{seed}:{at}{digest(identity, 12)}"

    def folds(self, budget, seed: int, draw: int | None = None) -> list[tuple]:
        """The (fit, val) splits of the budget labels of (``seed``, ``draw``) that every trial of its studies is
        scored on."""
        train_y, labels = self.data.train_y.numpy(), label_draw(seed, draw)
        return validation_folds(budget_indices(train_y, budget, labels), train_y, self.cfg.val_fraction, labels)

    def _study(self, task: str, protocol: str, budget, seed: int, draw: int | None = None) -> tuple[dict, str]:
        folds = self.folds(budget, seed, draw)
        if not folds:
            return {}, "default (one label per class: nothing to validate on)"
        name = self.study_name(task, protocol, budget, seed, draw)
        pruner = optuna.pruners.MedianPruner(n_startup_trials=2) if self.cfg.prune else optuna.pruners.NopPruner()
        study = optuna.create_study(
            study_name=name,
            storage=self.storage,
            direction="maximize",
            load_if_exists=True,
            sampler=optuna.samplers.TPESampler(seed=self.cfg.sampler_seed),
            pruner=pruner,
        )
        if self.cfg.start_from_defaults and not study.trials:
            study.enqueue_trial(self._defaults(protocol))  # the configured values are trial 0 of every study
        redo_interrupted(study)
        missing = self.cfg.trials - sum(t.state in DONE for t in study.trials)
        if missing > 0:
            objective = self._objective(task, protocol, budget, seed, folds, name, draw)
            study.optimize(objective, n_trials=missing)
        n_done = sum(t.state in DONE for t in study.trials)
        best = study.best_trial
        return dict(best.params), f"tuned ({n_done} trials, study {name}, best val_acc {best.value:.4f})"

    def _defaults(self, protocol: str) -> dict:
        """The protocol's configured values, clipped into the search space."""
        space = self.cfg.space[protocol]
        values = PROTOCOLS[protocol].configured(self.suite.protocol(protocol))
        return {k: type(v)(min(max(v, getattr(space, k)[0]), getattr(space, k)[1])) for k, v in values.items()}

    def _protocol_input(self, task: str, protocol: str, seed: int, draw: int | None = None) -> Labelled:
        """The whole labelled pool as the protocol's input (folds index into it): frozen features for a frozen
        protocol (extracted once per task and seed), the uint8 images otherwise."""
        encoder = self.encoder_for(task, seed)
        x, y = self.data.train_x, self.data.train_y
        images, features, labels = x, None, y
        if PROTOCOLS[protocol].frozen:
            if (task, seed) not in self.features:
                feats = extract_features(encoder, x, self.device, prepare=TASKS[task].eval_input)
                self.features[(task, seed)] = feats
            images, features, labels = None, self.features[(task, seed)], y.to(self.device)
        prepare, flip = TASKS[task].eval_input, self.suite.dataset.flip
        classes = self.data.num_classes
        return Labelled(encoder, images, features, labels, classes, eval_seed(seed, draw), prepare, flip)

    def _objective(self, task: str, protocol: str, budget, seed: int, folds, study_name: str, draw=None):
        kind = PROTOCOLS[protocol]
        space = self.cfg.space[protocol]
        data = self._protocol_input(task, protocol, seed, draw)
        used = self.labels_used.setdefault((task, protocol, budget, seed, draw), set())
        for fit_idx, val_idx in folds:
            used.update(map(int, fit_idx))
            used.update(map(int, val_idx))

        def objective(trial: optuna.Trial) -> float:
            try:
                return evaluate(trial)
            except KeyboardInterrupt:  # Optuna records the trial FAIL; the next invocation evaluates it again
                trial.set_user_attr("interrupted", True)
                raise

        def evaluate(trial: optuna.Trial) -> float:
            params = kind.suggest(trial, space)
            tags = {
                "kind": "trial",
                "task": task,
                "protocol": protocol,
                "budget": str(budget),
                "seed": str(seed),
                "study": study_name,
                "trial": str(trial.number),
            } | ({} if draw is None else {"draw": str(draw)})
            pruned = False
            name = trial_name(task, protocol, budget, seed, trial.number, draw)
            with self.trials.trial(name, tags, params) as record:
                start = time.perf_counter()
                position = sum(t.state in DONE for t in trial.study.get_trials(deepcopy=False)) + 1
                self.say(f"{name}: started ({position} of {self.cfg.trials} in its study)")
                settings = self.suite.protocol_settings(protocol, params)

                every = Every()

                def report(progress: float, acc: float) -> None:
                    if every.due():  # a trial of minutes is not silent
                        self.say(f"{name}: {progress:.0%} of its schedule, val_acc {acc:.4f} ({every.elapsed():.0f} s)")
                    if self.cfg.prune:
                        record.metric("val_acc_during", acc, step=round(100 * progress))  # % of the schedule
                        trial.report(acc, step=round(100 * progress))
                        if trial.should_prune():
                            raise optuna.TrialPruned()

                watch = Watch(report, record, self.device)
                try:
                    score = kind.score(settings, data, folds, watch)
                except optuna.TrialPruned:
                    pruned, score = True, float("nan")
                except NonFiniteLoss:  # a diverging setting is a legitimate, bad outcome
                    score = 0.0
                    record.tag("diverged", "true")
                record.tag("trial_state", "PRUNED" if pruned else "COMPLETE")
                if not pruned:
                    record.metric("val_acc", score)
                seconds = time.perf_counter() - start
                self.say(f"{name}: " + ("pruned" if pruned else f"val_acc {score:.4f}") + f" in {seconds:.0f} s")
            if pruned:
                raise optuna.TrialPruned()
            return score

        return objective
