"""Take the winner out: ``bench export SUITE --task T --seed S`` writes the encoder a (task, seed) cell's
protocols received (its finished pretraining's checkpoint, with BatchNorm recalibrated where the suite does) as
plain PyTorch weights, with the lines that load them into the same architecture and a record of where they came
from; ``--mlflow`` also logs it with ``mlflow.pytorch.log_model`` under the pretraining's run and registers it in
MLflow's model registry.

The folder holds ``encoder.pt`` (the state dict), ``export.json`` (suite, task, seed, cell key, code and data
identity, encoder table, input normalisation) and ``load.py``; ``bench.load_exported(folder)`` rebuilds the
encoder from it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from rich.console import Console

from bench.augment.ops import MEAN, STD
from bench.config.sections import EncoderConfig
from bench.errors import ConfigError
from bench.files import write_atomic
from bench.models.encoders import build_encoder

LOADER = '''"""The {task} encoder of suite {suite!r}, seed {seed} (cell {key}), exported by bench {version}."""

import bench

encoder = bench.load_exported("{folder}")  # the architecture, rebuilt, with these weights; in eval mode
# input: float images (B, 3, H, W), each channel scaled to [0, 1] then (x - {mean}) / {std}; output: (B, {dim})
'''


def export(
    suite_path: str | Path,
    overrides: list[str],
    task: str,
    seed: int,
    out: Path | None,
    to_mlflow: bool,
    console: Console,
) -> Path:
    """Write the export folder (default ``<results_dir>/<suite>/export/<task>-s<seed>/``) and return it."""
    from bench.config.load import load_suite
    from bench.run.runner import Runner
    from bench.version import version

    suite = load_suite(suite_path, overrides)
    if task not in suite.selected_tasks():
        raise ConfigError(f"task {task!r} is not in suite {suite.name!r} (its tasks: {', '.join(suite.tasks)})")
    if seed not in suite.seeds:
        raise ConfigError(f"seed {seed} is not among the seeds {suite.seeds} of suite {suite.name!r}")
    runner = Runner(suite, suite_path, console)
    cell = next(c for c in runner.cells if c.task == task and c.seed == seed)
    run = runner.tracker.finished_run(cell.source)
    from bench.registry import TASKS

    if TASKS[task].pretrains and run is None:
        raise ConfigError(f"{task} seed={seed} has no finished pretraining in the store; run the suite first")
    encoder = runner.prepared_encoder(task, seed).cpu().eval()
    folder = out or Path(suite.results_dir) / suite.name / "export" / f"{task}-s{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(encoder.state_dict(), folder / "encoder.pt")
    record = {
        "suite": suite.name,
        "task": task,
        "seed": seed,
        "cell_key": cell.source,
        "run_id": run.info.run_id if run else None,
        "encoder": suite.encoder.model_dump(by_alias=True) | {"class": suite.encoder.plugin},
        "out_dim": int(encoder.out_dim),
        "input": {"scale": "uint8 / 255", "mean": MEAN, "std": STD},
        "identity": cell.identity,
        "bench": version(),
    }
    write_atomic(folder / "export.json", (json.dumps(record, indent=1, default=str) + "\n").encode())
    text = LOADER.format(
        task=task,
        suite=suite.name,
        seed=seed,
        key=cell.source,
        version=version(),
        folder=folder.resolve(),
        mean=MEAN,
        std=STD,
        dim=record["out_dim"],
    )
    write_atomic(folder / "load.py", text.encode())
    console.print(f"{task} seed={seed}: encoder written to {folder}/ (encoder.pt, export.json, load.py)")
    if to_mlflow:
        example = TASKS[task].eval_input(runner.data.test_x[:2]).numpy()  # the signature: images in, features out
        _log_model(runner, run, encoder, example, f"{suite.name}-{task}-s{seed}", console)
    return folder


def _log_model(runner, run, encoder: torch.nn.Module, example, name: str, console: Console) -> None:
    import mlflow

    if run is None:
        raise ConfigError("a baseline has no pretraining run to log a model under; export it without --mlflow")
    mlflow.set_tracking_uri(runner.tracker.uri)
    with mlflow.start_run(run_id=run.info.run_id):
        info = mlflow.pytorch.log_model(encoder, name="encoder", input_example=example, registered_model_name=name)
    console.print(f"MLflow model {info.model_uri}, registered as {name!r}")


def load_exported(folder: str | Path) -> torch.nn.Module:
    """The encoder of an export folder: its architecture rebuilt from ``export.json`` (a plug-in's class must be
    importable), its weights from ``encoder.pt``, in eval mode."""
    folder = Path(folder)
    record = json.loads((folder / "export.json").read_text())
    table = {k: v for k, v in record["encoder"].items() if v is not None}
    cfg = EncoderConfig.model_validate(table)  # registers a plug-in or a backbone by library
    encoder = build_encoder(cfg.name, seed=0)
    encoder.load_state_dict(torch.load(folder / "encoder.pt", map_location="cpu", weights_only=True))
    return encoder.eval()
