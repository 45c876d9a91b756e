"""What a run logs and how it ends: per-epoch pretraining metrics, an evaluation's scores and choices, tuning
trials as nested runs, and FINISHED / FAILED / KILLED by how the body ended."""

from __future__ import annotations

import contextlib
import time
import typing
from collections.abc import Callable, Iterator
from pathlib import Path

import mlflow
from mlflow.entities import Metric

from bench.files import naming
from bench.train.loop import EpochStats


def into_artifacts(uri: str | None = None):
    """Name the run's artifact folder (``uri``, default the active run's) in a write error raised inside."""
    return naming((uri or mlflow.get_artifact_uri()).removeprefix("file://"))


@contextlib.contextmanager
def ended(run: mlflow.ActiveRun, guard: Callable[[], None] | None = None) -> Iterator[mlflow.ActiveRun]:
    """The run ends FINISHED when the body completes (and ``guard``, called last, does not raise), KILLED when
    interrupted (Ctrl-C, SIGTERM), else FAILED. (MLflow's own context manager marks an interrupted run FAILED.)"""
    try:
        yield run
        if guard is not None:
            guard()
    except KeyboardInterrupt:
        _end(run, "KILLED")
        raise
    except BaseException:
        _end(run, "FAILED")
        raise
    _end(run, "FINISHED")


def _end(run: mlflow.ActiveRun, status: str) -> None:
    active = mlflow.active_run()
    if active is not None and active.info.run_id == run.info.run_id:
        try:
            mlflow.end_run(status)  # pops the run first, so a failing store leaves no run active here
        except Exception:  # noqa: BLE001 - the store failed: the next holder marks the run KILLED
            if status == "FINISHED":
                raise


class PretrainLog:
    """Per-epoch metrics of a pretraining run, the label-free health measures (``bench.train.health``) among them,
    stepped by epoch."""

    @staticmethod
    def epoch(stats: EpochStats) -> None:
        metrics = {"train_loss": stats.loss, "images_per_s": stats.images_per_s, "epoch_s": stats.seconds}
        mlflow.log_metrics(metrics | stats.measures, stats.epoch)

    @staticmethod
    def done(
        checkpoint: Path,
        fingerprint: dict[str, str],
        wall_s: float,
        mean_images_per_s: float,
        metrics: dict[str, float] | None = None,
    ) -> None:
        """``metrics``: what the run cost (``bench.train.loop.cost``: ``pretrain_steps``, ``pretrain_images_seen``,
        ``pretrain_wall_s``, ``pretrain_device_s``) and the values the task's schedules took (``Task.records``)."""
        with into_artifacts():
            mlflow.log_artifact(str(checkpoint))
        mlflow.set_tags(fingerprint)  # size and SHA-256, verified whenever the checkpoint is loaded
        mlflow.log_metrics({"wall_s": wall_s, "mean_images_per_s": mean_images_per_s} | (metrics or {}))


class Result(typing.Protocol):
    """What an evaluation logs of the classifier a protocol fitted (``bench.protocols.features.Fitted``)."""

    val_acc: float | None
    chosen: dict
    history: list[dict]
    caveats: list[str]


def recorded(accuracy: float) -> float:
    """An accuracy as recorded: to 6 decimals, so the UI shows 0.2507 rather than float32's 0.25069999694824
    (a millionth is a hundredth of one test image in 10,000)."""
    return round(float(accuracy), 6)


class EvalLog:
    @staticmethod
    def done(fitted: Result, test_acc: float, seconds: dict[str, float]) -> None:
        metrics = {"test_acc": recorded(test_acc), **seconds}
        if fitted.val_acc is not None:
            metrics["val_acc"] = recorded(fitted.val_acc)
        if "train_acc" in fitted.chosen:  # fine-tuning: accuracy on its own training labels
            metrics["train_acc"] = recorded(fitted.chosen["train_acc"])
        mlflow.log_metrics(metrics)
        mlflow.set_tag("caveat", "; ".join(fitted.caveats))  # empty: the protocol reached what it looks for
        log_history(fitted.history, prefix="finetune_")
        with into_artifacts():
            mlflow.log_dict(fitted.chosen, "chosen.json")
        mlflow.log_params({f"chosen.{k}": v for k, v in fitted.chosen.items() if not isinstance(v, dict)})


def log_history(history: list[dict], prefix: str) -> None:
    """Per-epoch metrics (``{"epoch": e, name: value, ...}``) in one batch, stepped by epoch (MlflowClient's
    log_batch splits it to the store's limits)."""
    now = int(time.time() * 1000)
    metrics = [
        Metric(prefix + k, float(v), now, int(h["epoch"])) for h in history for k, v in h.items() if k != "epoch"
    ]
    if metrics:
        mlflow.MlflowClient().log_batch(mlflow.active_run().info.run_id, metrics=metrics)


class MlflowTrials:
    """Each tuning trial as a nested run under the active one (``bench.protocols.tuning.TrialRecord``): its
    parameters and tags, the validation accuracy, the fine-tuning curve; it ends FINISHED, FAILED or KILLED like a
    cell's run."""

    @contextlib.contextmanager
    def trial(self, name: str, tags: dict[str, str], params: dict) -> Iterator[MlflowTrials]:
        with ended(mlflow.start_run(run_name=name, nested=True, tags=tags)):
            mlflow.log_params(params)
            yield self

    @staticmethod
    def tag(key: str, value: str) -> None:
        mlflow.set_tag(key, value)

    @staticmethod
    def metric(key: str, value: float, step: int | None = None) -> None:
        mlflow.log_metric(key, recorded(value) if key.endswith("_acc") else value, step=step)

    @staticmethod
    def history(history: list[dict], prefix: str) -> None:
        log_history(history, prefix)
