"""MLflow conventions: one experiment per suite, one parent run per invocation that has work, one nested child run
per cell. A cell is done when a FINISHED run carries its ``cell_key`` tag; nothing else counts."""

from __future__ import annotations

import contextlib
import json
import platform
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import torch
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

import bench

RUN_PAGE = 1000


def _flatten(data: Any, prefix: str = "") -> dict[str, str]:
    if isinstance(data, dict):
        out: dict[str, str] = {}
        for k, v in data.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): json.dumps(data) if isinstance(data, list) else str(data)}


def git_commit() -> str:
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def environment_tags(device: torch.device) -> dict[str, str]:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    return {
        "bench_version": bench.__version__,
        "torch_version": torch.__version__,
        "mlflow_version": mlflow.__version__,
        "python_version": platform.python_version(),
        "git_commit": git_commit(),
        "device": f"{device.type}: {name}",
    }


class Tracker:
    """The experiment of one suite in one MLflow store."""

    def __init__(self, uri: str, experiment: str, artifact_root: Path | None = None) -> None:
        mlflow.set_tracking_uri(uri)
        self.client = MlflowClient(uri)
        found = self.client.get_experiment_by_name(experiment)
        if found is None:
            location = (artifact_root / experiment).resolve().as_uri() if artifact_root else None
            self.experiment_id = self.client.create_experiment(experiment, artifact_location=location)
        else:
            self.experiment_id = found.experiment_id
        mlflow.set_experiment(experiment_id=self.experiment_id)

    def runs(self, filter_string: str = "") -> list[mlflow.entities.Run]:
        out, token = [], None
        while True:
            page = self.client.search_runs([self.experiment_id], filter_string, max_results=RUN_PAGE, page_token=token)
            out += list(page)
            token = page.token
            if not token:
                return out

    def finished(self) -> dict[str, mlflow.entities.Run]:
        """cell_key -> the FINISHED run of that cell."""
        runs = self.runs("attributes.status = 'FINISHED'")
        return {r.data.tags["cell_key"]: r for r in runs if "cell_key" in r.data.tags}

    def close_stale(self) -> int:
        """Runs left RUNNING by a killed invocation are marked KILLED, so they never count as done."""
        stale = self.runs("attributes.status = 'RUNNING'")
        for run in stale:
            self.client.set_terminated(run.info.run_id, "KILLED")
        return len(stale)

    @staticmethod
    def log_params(params: dict) -> None:
        flat = _flatten(params)
        items = list(flat.items())
        for i in range(0, len(items), 100):  # MLflow accepts at most 100 params per batch
            mlflow.log_params(dict(items[i : i + 100]))


@contextlib.contextmanager
def cell_run(name: str, tags: dict[str, str], params: dict) -> Iterator[mlflow.ActiveRun]:
    """A nested child run for one cell. It ends FINISHED only if the body completes; otherwise FAILED, with the
    exception in the ``failure_reason`` tag (the exception still propagates to the caller)."""
    with mlflow.start_run(run_name=name, nested=True, tags=tags) as run:
        try:
            Tracker.log_params(params)
            yield run
        except Exception as e:
            mlflow.set_tag("failure_reason", f"{type(e).__name__}: {e}"[:5000])
            raise


def log_history(history: list[dict], prefix: str) -> None:
    """Per-epoch metrics (``{"epoch": e, name: value, ...}``) in one batch per 1000 values, stepped by epoch."""
    now = int(time.time() * 1000)
    metrics = [
        Metric(prefix + k, float(v), now, int(h["epoch"])) for h in history for k, v in h.items() if k != "epoch"
    ]
    run_id = mlflow.active_run().info.run_id
    for i in range(0, len(metrics), 1000):
        mlflow.MlflowClient().log_batch(run_id, metrics=metrics[i : i + 1000])
