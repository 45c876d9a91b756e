"""Suite -> plan of cells -> execution, with every finished cell found by key and skipped.

A pretraining cell (task, seed) trains once and its checkpoint serves every budget and protocol of that seed.
An evaluation cell (task, seed, budget, protocol) scores one classifier on the test set. Baselines without
pretraining start from the seeded random initialisation, the same one the pretext tasks start from.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bench.checkpoints import checkpoint_path, load_encoder, save_encoder
from bench.config import SPEED_ONLY, ConfigError, Suite, digest, tracking_uri
from bench.data import Dataset, budget_indices, load_dataset
from bench.encoders import build_encoder
from bench.evaluate import extract_features, finetune, knn_classifier, linear_probe
from bench.pretrain import EpochStats, pretrain
from bench.report import tidy, write_report
from bench.summary import summary_tables
from bench.tasks import TASKS
from bench.tracking import Tracker, cell_run, environment_tags
from bench.tuning import Tuner, settings_with, tuned

KEY_VERSION = 2  # bump when a change to the code makes old results incomparable


@dataclass(frozen=True)
class Cell:
    kind: str  # "pretrain" or "eval"
    task: str
    seed: int
    key: str
    source: str  # key of the encoder the cell starts from (a pretraining cell's own key, or the random init)
    budget: int | str | None = None
    protocol: str | None = None

    @property
    def label(self) -> str:
        if self.kind == "pretrain":
            return f"pretrain {self.task} seed={self.seed}"
        return f"{self.task}+{self.protocol} budget={self.budget} seed={self.seed}"

    def tags(self) -> dict[str, str]:
        tags = {"kind": self.kind, "task": self.task, "seed": str(self.seed), "cell_key": self.key}
        tags["source_key"] = self.source
        if self.kind == "eval":
            tags |= {"budget": str(self.budget), "protocol": str(self.protocol)}
        return tags


def _data_identity(suite: Suite) -> dict:
    data = suite.dataset.model_dump()
    if data["name"] != "imagefolder":
        data.pop("root")  # where a torchvision dataset lives does not change it
    if data["name"] != "synthetic":
        data.pop("synthetic")
    return data


def task_protocols(suite: Suite, name: str) -> list[str]:
    cfg, task = suite.selected_tasks()[name], TASKS[name]
    chosen = [p for p in suite.protocols if p in task.protocols and (cfg.protocols is None or p in cfg.protocols)]
    if not chosen:
        raise ConfigError(
            f"task {name!r} supports protocols {list(task.protocols)}, but the suite asks for {suite.protocols}"
            + (f" and tasks.{name}.protocols for {cfg.protocols}" if cfg.protocols else "")
        )
    return chosen


def build_plan(suite: Suite) -> list[Cell]:
    cells = []
    for name, cfg in suite.selected_tasks().items():
        task = TASKS[name]
        protocols = task_protocols(suite, name)
        for seed in suite.seeds:
            origin = {
                "v": KEY_VERSION,
                "data": _data_identity(suite),
                "encoder": suite.encoder.name,
                "seed": seed,
            }
            if task.pretrains:
                task_cfg = cfg.model_dump(exclude={"protocols"})
                schedule = suite.pretrain.model_dump(exclude=SPEED_ONLY)
                if schedule["augment"] == "device":  # the default path keeps the keys it had before the option
                    del schedule["augment"]
                origin |= {"task": name, "task_cfg": task_cfg, "pretrain": schedule}
                source = digest(origin)
                cells.append(Cell("pretrain", name, seed, source, source))
            else:
                source = digest(origin | {"init": True})
            for budget in suite.sorted_budgets():
                for protocol in protocols:
                    settings = getattr(suite, protocol).model_dump()
                    if tuned(suite, protocol, budget):
                        settings = {"base": settings, "tuning": suite.tuning.model_dump(exclude={"storage"})}
                    key = digest(
                        {
                            "v": KEY_VERSION,
                            "source": source,
                            "task": name,
                            "budget": budget,
                            "protocol": protocol,
                            "settings": settings,
                            "seed": seed,
                        }
                    )
                    cells.append(Cell("eval", name, seed, key, source, budget, protocol))
    return cells


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
        self.cells = build_plan(suite)
        results = Path(suite.results_dir)
        self.cache = results / "cache"
        uri = tracking_uri(suite)
        local = uri.startswith("sqlite:") or uri.startswith("file:") or "://" not in uri
        self.tracker = Tracker(uri, suite.name, results / "mlartifacts" if local else None)

    def run(self, dry_run: bool = False, report: bool = True) -> Outcome:
        """Run the cells not yet done, print the summary tables and (with ``report``) write results/<suite>/."""
        start = time.perf_counter()
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
            for c in self.cells:
                self.console.print(f"  {'done' if c.key in done else 'todo'}  {c.label}  [dim]{c.key}[/]")
            return Outcome(len(self.cells), len(self.cells) - len(todo), 0, {}, "")
        failed: dict[str, str] = {}
        if todo:
            failed = self._execute(todo)
        tables = summary_tables(self.tracker, self.cells)
        self.console.print(tables, soft_wrap=True, highlight=False)
        if report:
            self.report()
        self.console.print(f"wall time {time.perf_counter() - start:.0f} s")
        return Outcome(len(self.cells), len(self.cells) - len(todo), len(todo) - len(failed), failed, tables)

    def report(self) -> list[Path]:
        """Write results/<suite>/ from the suite's runs and attach it to the latest parent run."""
        out = Path(self.suite.results_dir) / self.suite.name
        written = write_report(tidy(self.tracker, self.cells), out)
        parents = self.tracker.runs("tags.kind = 'suite'")
        if parents:
            latest = max(parents, key=lambda r: r.info.start_time)
            self.tracker.client.log_artifacts(latest.info.run_id, str(out), artifact_path="report")
        self.console.print(f"report: {out}/ ({len(written)} files)")
        return written

    # ------------------------------------------------------------------ execution

    def _execute(self, todo: list[Cell]) -> dict[str, str]:
        suite = self.suite
        device = resolve_device(suite.device)
        data = load_dataset(suite.dataset)
        labels = self._draw_labels(data)  # before any training: a budget the data cannot meet fails here
        for name in {c.task for c in todo}:
            try:
                TASKS[name].check_data(data.pool_x)
            except ValueError as e:
                raise ConfigError(f"{self.suite_path}: key 'tasks.{name}': {e} ({data.name})") from None
        train_x = data.train_x.to(device)
        tuner = Tuner(suite, data, device, lambda task, seed: self._encoder(task, seed))
        failed: dict[str, str] = {}
        env = environment_tags(device)
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with mlflow.start_run(
            run_name=f"{suite.name} {time.strftime('%Y-%m-%d %H:%M')}", tags={"kind": "suite", **env}
        ):
            mlflow.log_artifact(str(self.suite_path))
            mlflow.log_dict(suite.model_dump(mode="json"), "suite_resolved.json")
            with Progress(*columns, console=self.console) as progress:
                bar = progress.add_task("cells", total=len(todo))
                for (task, seed), cells in self._groups(todo):
                    ctx = _GroupContext(self, data, train_x, labels, device, env, progress, bar, failed, tuner)
                    ctx.run(task, seed, cells)
        if failed:
            self.console.print(f"[red]{len(failed)} cell(s) failed:[/]")
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

    def _encoder(self, task: str, seed: int) -> torch.nn.Module:
        """The encoder an evaluation of (task, seed) starts from: a finished pretraining, or the seeded init."""
        if not TASKS[task].pretrains:
            return build_encoder(self.suite.encoder.name, seed)
        source = next(c.source for c in self.cells if c.task == task and c.seed == seed)
        run = self.tracker.finished().get(source)
        return load_encoder(self.cache, source, self.suite.encoder.name, run.info.run_id if run else None)

    @staticmethod
    def _groups(todo: list[Cell]) -> Iterator[tuple[tuple[str, int], list[Cell]]]:
        groups: dict[tuple[str, int], list[Cell]] = {}
        for c in todo:
            groups.setdefault((c.task, c.seed), []).append(c)
        yield from groups.items()


@dataclass
class _GroupContext:
    """Runs the cells of one (task, seed): pretraining at most once, features at most once."""

    runner: Runner
    data: Dataset
    train_x: torch.Tensor
    labels: dict
    device: torch.device
    env: dict
    progress: Progress
    bar: int
    failed: dict
    tuner: Tuner

    def run(self, task: str, seed: int, cells: list[Cell]) -> None:
        pre = next((c for c in cells if c.kind == "pretrain"), None)
        evals = [c for c in cells if c.kind == "eval"]
        try:
            if pre is not None:
                encoder = self._pretrain(pre)
            else:
                encoder = self.runner._encoder(task, seed)
        except Exception as e:  # noqa: BLE001 - a failed cell is recorded and the sweep goes on
            reason = _reason(e)
            for c in cells:
                self.failed[c.label] = reason if c is pre else f"not run: pretraining failed ({reason})"
                self.progress.advance(self.bar)
            return
        features = None
        for cell in evals:
            self.progress.update(self.bar, description=cell.label)
            try:
                if cell.protocol in ("linear", "knn") and features is None:
                    start = time.perf_counter()
                    features = (
                        extract_features(encoder, self.train_x, self.device),
                        extract_features(encoder, self.data.test_x, self.device),
                        time.perf_counter() - start,
                    )
                self._evaluate(cell, encoder, features)
            except Exception as e:  # noqa: BLE001
                self.failed[cell.label] = _reason(e)
            self.progress.advance(self.bar)

    def _pretrain(self, cell: Cell) -> torch.nn.Module:
        suite = self.runner.suite
        self.progress.update(self.bar, description=cell.label)
        console = self.progress.console
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cell.seed)  # the head's initialisation is part of the cell, not of what ran before
            task = TASKS[cell.task](
                build_encoder(suite.encoder.name, cell.seed), suite.selected_tasks()[cell.task], self.data.image_size
            )
        params = {
            "task": cell.task,
            "task_cfg": task.cfg.model_dump(),
            "encoder": suite.encoder.name,
            "pretrain": suite.pretrain.model_dump(),
            "dataset": suite.dataset.model_dump(),
            "seed": cell.seed,
        }
        epochs = suite.pretrain.epochs

        def on_epoch(s: EpochStats) -> None:
            mlflow.log_metrics({"train_loss": s.loss, "images_per_s": s.images_per_s, "epoch_s": s.seconds}, s.epoch)
            console.print(
                f"  {cell.task} seed={cell.seed} epoch {s.epoch}/{epochs}  loss {s.loss:.4f}  "
                f"{s.images_per_s:,.0f} img/s  {s.seconds:.1f} s"
            )

        with cell_run(cell.label, cell.tags() | self.env, params):
            start = time.perf_counter()
            pool = self.data.pool_x.to(self.device)
            partial = checkpoint_path(self.runner.cache, cell.key).with_suffix(".partial.pt")
            if partial.exists():
                console.print(f"  {cell.label}: resuming from the state saved by an interrupted run")
            history = pretrain(task, pool, suite.pretrain, cell.seed, on_epoch, state_path=partial)
            path = save_encoder(task.encoder, self.runner.cache, cell.key)
            partial.unlink(missing_ok=True)
            mlflow.log_artifact(str(path))
            wall = time.perf_counter() - start
            mean_rate = float(np.mean([h.images_per_s for h in history])) if history else 0.0
            mlflow.log_metrics({"wall_s": wall, "mean_images_per_s": mean_rate, "pool_images": len(pool)})
        self.progress.advance(self.bar)
        return task.encoder

    def _evaluate(self, cell: Cell, encoder: torch.nn.Module, features) -> None:
        suite, data = self.runner.suite, self.data
        idx = self.labels[(cell.seed, cell.budget)]
        hparams, hp_source = self.tuner.params(cell.task, cell.protocol, cell.budget, cell.source)
        settings = settings_with(suite, cell.protocol, hparams)
        params = {
            "task": cell.task,
            "protocol": cell.protocol,
            "budget": cell.budget,
            "seed": cell.seed,
            "n_labels": len(idx),
            "encoder": suite.encoder.name,
            "source_key": cell.source,
            "dataset": suite.dataset.model_dump(),
            cell.protocol: settings.model_dump(),
        }
        tags = cell.tags() | self.env | {"hp_source": "tuned" if hparams else "default"}
        params |= {"hp_source": hp_source, "hp": hparams}
        with cell_run(cell.label, tags, params):
            mlflow.log_dict({"budget": cell.budget, "seed": cell.seed, "indices": idx.tolist()}, "labels.json")
            start = time.perf_counter()
            train_y = data.train_y[idx].to(self.device)
            if cell.protocol in ("linear", "knn"):
                train_feats, test_inputs, extract_s = features
                mlflow.log_metric("feature_extract_s", extract_s)
                if cell.protocol == "linear":
                    fitted = linear_probe(train_feats[idx], train_y, data.num_classes, settings, cell.seed)
                else:
                    fitted = knn_classifier(train_feats[idx], train_y, data.num_classes, settings)
            else:
                fitted = finetune(encoder, self.train_x[idx], train_y, data.num_classes, settings, cell.seed)
                test_inputs = data.test_x
            fit_s = time.perf_counter() - start
            # The only place test labels are read: one score per cell, after every choice has been made.
            test_acc = data.score(fitted.predict(test_inputs))
            metrics = {
                "test_acc": test_acc,
                "wall_s": time.perf_counter() - start,
                "fit_s": fit_s,
                "n_labels": len(idx),
            }
            if fitted.val_acc is not None:
                metrics["val_acc"] = fitted.val_acc
            mlflow.log_metrics(metrics)
            mlflow.log_dict(fitted.chosen, "chosen.json")
            mlflow.log_params({f"chosen.{k}": v for k, v in fitted.chosen.items() if not isinstance(v, dict)})
        self.progress.console.print(f"  {cell.label}: test_acc {test_acc:.4f}")


def _reason(e: BaseException) -> str:
    traceback.print_exception(e)
    return f"{type(e).__name__}: {e}"
