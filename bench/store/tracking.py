"""MLflow conventions: one experiment per suite, one parent run per invocation that has work, one nested child run
per cell. A cell is done when a FINISHED run carries its ``cell_key`` tag; nothing else counts.

The runner hands this module the facts of a run (the cell, the suite, the data, what a protocol chose and scored);
how they appear in MLflow (run names, params, metrics, tags, descriptions) is decided here alone:

- run names fit the UI's name column and say what distinguishes a run in its experiment: ``rotation linear 100 s0``,
  ``rotation pretrain s0`` (sorting by name groups the seeds of one cell group; the ``cell_group`` tag, e.g.
  ``rotation/linear/100``, finds them across invocations);
- settings, label counts and pool sizes are params; only measured values are metrics;
- an evaluation of a pretrained encoder links the run that pretrained it (tag ``source_run_id``);
- the dataset is logged as an MLflow dataset input (name, data identity as digest, source folder);
- the git commit is MLflow's own ``mlflow.source.git.commit`` tag.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch
from mlflow.utils.git_utils import get_git_commit
from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT

from bench.cell import Cell
from bench.config.settings import Settings
from bench.config.suite import Suite
from bench.data.datasets import Dataset
from bench.store import ui
from bench.store.client import open_client
from bench.store.runlog import EvalLog, PretrainLog, ended, into_artifacts
from bench.tasks.base import Task
from bench.version import version

# bench names each run's place in the UI itself (ui_hint); MLflow would print a line per run against a server
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")

RUN_PAGE = 1000
NOTE = "mlflow.note.content"  # the description MLflow shows for a run or an experiment


def _flatten(data: Any, prefix: str = "") -> dict[str, str]:
    if isinstance(data, dict):
        out: dict[str, str] = {}
        for k, v in data.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): json.dumps(data) if isinstance(data, list) else str(data)}


def device_name(device: torch.device) -> str:
    """ "cpu", or the accelerator's own name ("NVIDIA H200")."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else device.type


def environment_tags(device: torch.device) -> dict[str, str]:
    """Versions, device, and the git commit of bench's own source under MLflow's tag for it. MLflow fills that
    tag from the entry script's folder (``sys.argv[0]``), which is not bench's source under an installed
    ``bench`` script or pytest, so it is given here from the package's folder, with MLflow's own git helper."""
    commit = get_git_commit(str(Path(__file__).resolve().parents[1]))  # bench/
    return {
        MLFLOW_GIT_COMMIT: commit or "unknown",
        "bench_version": version(),
        "torch_version": torch.__version__,
        "mlflow_version": mlflow.__version__,
        "python_version": platform.python_version(),
        "device": device_name(device),
        "cpu": platform.processor() or platform.machine(),
    }


def without_passwords(data: Any) -> Any:
    """``data`` with the password of every ``scheme://user:password@host`` URL replaced by ``***`` (a storage URL
    from ``bench server`` carries one; the run's artifacts are readable by everyone who can read the store)."""
    if isinstance(data, dict):
        return {k: without_passwords(v) for k, v in data.items()}
    if isinstance(data, list):
        return [without_passwords(v) for v in data]
    if isinstance(data, str):
        return re.sub(r"(://[^/:@\s]+:)[^@/\s]+@", r"\1***@", data)
    return data


def run_name(cell: Cell) -> str:
    """Short enough for the UI's name column; the suite is the experiment, so it is not repeated."""
    if cell.kind == "pretrain":
        return f"{cell.task} pretrain s{cell.seed}"
    return f"{cell.task} {cell.protocol} {cell.budget} s{cell.seed}" + ("" if cell.draw is None else f" d{cell.draw}")


def suite_description(suite: Suite) -> str:
    """What the suite compares, for the experiment's description in the UI."""
    tasks = list(suite.selected_tasks())
    budgets = ", ".join(str(b) for b in suite.sorted_budgets())
    return (
        f"**{suite.name}**: which self-supervised pretext task gives the best `{suite.encoder.name}` encoder on "
        f"`{suite.dataset.name}` at each label budget, and by how much it beats training on the labels alone.\n\n"
        f"- tasks: {', '.join(tasks)}\n- label budgets: {budgets}\n- protocols: {', '.join(suite.protocols)}\n"
        f"- seeds: {', '.join(map(str, suite.seeds))}\n- pretraining: {suite.pretrain.epochs} epochs\n\n"
        "Each child run is one cell (task, protocol, budget, seed) with `test_acc`; the latest parent run "
        "(kind = suite) holds the results table in its description and the full report as artifacts."
    )


class Tracker:
    """The experiment of one suite in one MLflow store. Reading never creates the experiment: it is created
    when the first run starts."""

    def __init__(self, uri: str, experiment: str, artifact_root: Path | None = None) -> None:
        mlflow.set_tracking_uri(uri)
        self.uri, self.name, self.artifact_root = uri, experiment, artifact_root
        self.client = open_client(uri)
        found = self.client.get_experiment_by_name(experiment)
        self.experiment_id: str | None = found.experiment_id if found else None
        self.env: dict[str, str] = {}
        self.guard: Callable[[], None] | None = None  # raises when this invocation may no longer write
        self._source_runs: dict[str, str] = {}  # pretraining cell key -> run id, from this invocation

    # ------------------------------------------------------------------ reading

    def runs(self, filter_string: str = "") -> list[mlflow.entities.Run]:
        if self.experiment_id is None:
            return []
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

    def finished_run(self, cell_key: str) -> mlflow.entities.Run | None:
        """The FINISHED run of one cell, or None: one query for that key, whatever the store holds."""
        query = f"attributes.status = 'FINISHED' and tags.cell_key = '{cell_key}'"
        found = self.client.search_runs([self.experiment_id], query, max_results=1) if self.experiment_id else []
        return found[0] if found else None

    def close_stale(self) -> int:
        """Runs left RUNNING by a killed invocation are marked KILLED, so they never count as done. Called only
        by the holder of the suite's lease: every other writer of the suite is then gone."""
        stale = self.runs("attributes.status = 'RUNNING'")
        for run in stale:
            self.client.set_terminated(run.info.run_id, "KILLED")
        return len(stale)

    def invalidate(self, cell_key: str, reason: str) -> None:
        """A FINISHED run whose product is lost (its checkpoint is damaged everywhere) no longer counts as done:
        marked FAILED with the reason, so the cell runs again and keeps exactly one FINISHED run."""
        run = self.finished_run(cell_key)
        if run is not None:
            self.client.set_tag(run.info.run_id, "failure_reason", reason[:5000])
            self.client.set_terminated(run.info.run_id, "FAILED")

    def ui_hint(self, command: str) -> str:
        """Where the suite's runs table is in the MLflow UI, once ``command`` (``bench ui SUITE``) serves it."""
        return ui.runs_hint(self.client, self.uri, self.name, self.experiment_id, command)

    def _experiment(self, suite) -> str:
        if self.experiment_id is None:
            root = self.artifact_root
            location = (root / self.name).resolve().as_uri() if root else None
            self.experiment_id = self.client.create_experiment(self.name, artifact_location=location)
        for key, value in {**ui.EXPERIMENT_TAGS, NOTE: suite_description(suite)}.items():
            self.client.set_experiment_tag(self.experiment_id, key, value)
        mlflow.set_experiment(experiment_id=self.experiment_id)
        return self.experiment_id

    @contextlib.contextmanager
    def suite_run(
        self, suite: Suite, suite_path: Path, data: Dataset, device: torch.device, plan: str = ""
    ) -> Iterator[mlflow.ActiveRun]:
        """The parent run of one invocation that has work: the suite file, the resolved suite, the dataset; tagged
        with the ``plan`` (``bench.cell.plan_digest``) of the cells it is for."""
        self._experiment(suite)
        self.env = environment_tags(device)
        name = f"{suite.name} {time.strftime('%Y-%m-%d %H:%M')}"
        tags = {"kind": "suite", "plan": plan, **self.env}
        with ended(mlflow.start_run(run_name=name, tags=tags)) as run:
            with into_artifacts():
                mlflow.log_artifact(str(suite_path))
                mlflow.log_dict(without_passwords(suite.model_dump(mode="json")), "suite_resolved.json")
            self._log_dataset(suite, data)
            yield run

    def report_run(self, suite: Suite, plan: str) -> mlflow.entities.Run:
        """A parent run of its own for a report whose cells no earlier invocation ran together (an edited suite
        reported before it is run): the report goes there, and no earlier record is rewritten."""
        name = f"{suite.name} report {time.strftime('%Y-%m-%d %H:%M')}"
        run = self.client.create_run(self.experiment_id, run_name=name, tags={"kind": "suite", "plan": plan})
        self.client.set_terminated(run.info.run_id, "FINISHED")
        return self.client.get_run(run.info.run_id)

    @staticmethod
    def _log_dataset(suite, data) -> None:
        """The dataset as an MLflow input: its name, its identity (content digest) and the folder it came from."""
        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.meta_dataset import MetaDataset

        from bench.data.datasets import data_root

        with warnings.catch_warnings():  # MLflow registers the local source class twice and warns about it
            warnings.simplefilter("ignore")
            source = resolve_dataset_source(str(data_root(suite.dataset) / data.name))
        mlflow.log_input(MetaDataset(source=source, name=data.name, digest=data.identity), context="suite")

    @contextlib.contextmanager
    def _cell_run(self, cell, tags: dict[str, str], params: dict) -> Iterator[mlflow.ActiveRun]:
        """A nested child run for one cell. It ends FINISHED only if the body completes; otherwise FAILED, with
        the exception in the ``failure_reason`` tag (the exception still propagates to the caller)."""
        tags = cell.tags() | self.env | tags
        with ended(mlflow.start_run(run_name=run_name(cell), nested=True, tags=tags), self.guard) as run:
            try:
                mlflow.log_params(_flatten(params))  # MLflow batches them to the store's limits
                yield run
            except Exception as e:
                with contextlib.suppress(Exception):  # the store itself may be what failed
                    mlflow.set_tag("failure_reason", f"{type(e).__name__}: {e}"[:5000])
                    mlflow.log_text("".join(traceback.format_exception(e)), "traceback.txt")
                raise

    @contextlib.contextmanager
    def pretrain_run(self, cell: Cell, task: Task, suite: Suite, data: Dataset) -> Iterator[PretrainLog]:
        params = {
            "task": cell.task,
            "task_cfg": task.cfg.model_dump(),
            "encoder": suite.encoder.name,
            "pretrain": suite.pretrain.model_dump(),
            "dataset": suite.dataset.model_dump(),
            "seed": cell.seed,
            "pool": data.pool_composition,  # train, unlabelled, duplicates dropped, pool size
        }
        if suite.pretrain.health_every:  # RankMe's images: as set, or the whole pool when it is smaller
            params["health_images_measured"] = min(suite.pretrain.health_images, len(data.pool))
        with self._cell_run(cell, {"cell_group": f"{cell.task}/pretrain"}, params) as run:
            yield PretrainLog()
        self._source_runs[cell.key] = run.info.run_id

    def source_run_id(self, cell: Cell) -> str | None:
        """The run that pretrained the encoder ``cell`` starts from (None for baselines)."""
        if cell.source not in self._source_runs:
            run = self.finished_run(cell.source)
            if run is None or run.data.tags.get("kind") != "pretrain":
                return None
            self._source_runs[cell.source] = run.info.run_id
        return self._source_runs[cell.source]

    @contextlib.contextmanager
    def eval_run(
        self, cell: Cell, suite: Suite, settings: Settings, hparams: dict, hp_source: str, idx: np.ndarray
    ) -> Iterator[EvalLog]:
        params = {
            "task": cell.task,
            "protocol": cell.protocol,
            "budget": cell.budget,
            "seed": cell.seed,
            **({} if cell.draw is None else {"draw": cell.draw}),
            "n_labels": len(idx),
            "encoder": suite.encoder.name,
            "source_key": cell.source,
            "dataset": suite.dataset.model_dump(),
            cell.protocol: settings.model_dump(),
            "hp_source": hp_source,
            "hp": hparams,
        }
        tags = {
            "hp_source": "tuned" if hparams else "default",
            "cell_group": f"{cell.task}/{cell.protocol}/{cell.budget}",
        }
        source = self.source_run_id(cell)
        if source:
            tags["source_run_id"] = source
        with self._cell_run(cell, tags, params):
            drawn = {"budget": cell.budget, "seed": cell.seed, "draw": cell.label_draw, "indices": idx.tolist()}
            with into_artifacts():
                mlflow.log_dict(drawn, "labels.json")
            yield EvalLog()

    def set_note(self, run_id: str, text: str) -> None:
        self.client.set_tag(run_id, NOTE, text)
