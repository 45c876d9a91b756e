"""Taking the winner out: `bench export` writes the encoder a cell's protocols received, loadable into the same
architecture without bench's store, and as a registered MLflow model."""

import json

import mlflow
import pytest
import torch

import bench
from bench.augment.ops import to_input
from bench.cli import main
from bench.config.load import load_suite
from bench.run.runner import Runner

from .conftest import SMOKE, store_overrides

FAST = ["seeds=[0]", "protocols=['linear']", "budgets=['full']", "tasks={rotation={head_hidden=32}, random={}}"]


def bench_cli(capsys, *argv: str) -> tuple[int, str]:
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out + out.err


@pytest.mark.slow
def test_export_writes_weights_that_load_into_the_same_encoder_and_a_registered_model(tmp_path, capsys):
    sets = [f"--set={s}" for s in [*store_overrides(tmp_path), *FAST]]
    rc, out = bench_cli(capsys, "export", str(SMOKE), "--task", "rotation", "--seed", "0", *sets)
    assert rc == 2 and "has no finished pretraining in the store; run the suite first" in out, out
    assert bench_cli(capsys, "run", str(SMOKE), *sets)[0] == 0
    folder = tmp_path / "exported"
    rc, out = bench_cli(
        capsys, "export", str(SMOKE), "--task", "rotation", "--seed", "0", "--out", str(folder), "--mlflow", *sets
    )
    assert rc == 0, out
    assert {p.name for p in folder.iterdir()} == {"encoder.pt", "export.json", "load.py"}
    record = json.loads((folder / "export.json").read_text())
    suite = load_suite(SMOKE, [s.removeprefix("--set=") for s in sets])
    runner = Runner(suite, SMOKE)
    cell = next(c for c in runner.cells if c.kind == "pretrain" and c.task == "rotation")
    assert record["cell_key"] == cell.key and record["encoder"]["name"] == "small_cnn" and record["out_dim"] == 128
    expected = runner.prepared_encoder("rotation", 0).cpu().eval()
    x = to_input(runner.data.test_x[:16])
    loaded = bench.load_exported(folder)
    with torch.no_grad():
        assert torch.equal(loaded(x), expected(x))
    mlflow.set_tracking_uri(runner.tracker.uri)
    model = mlflow.pytorch.load_model("models:/smoke-rotation-s0/1")
    with torch.no_grad():
        assert torch.allclose(model(x), expected(x))
    assert "bench.load_exported(" in (folder / "load.py").read_text()


def test_export_refuses_a_task_or_seed_the_suite_does_not_have(tmp_path, capsys):
    sets = [f"--set={s}" for s in [*store_overrides(tmp_path), *FAST]]
    rc, out = bench_cli(capsys, "export", str(SMOKE), "--task", "simclr", "--seed", "0", *sets)
    assert rc == 2 and "task 'simclr' is not in suite 'smoke'" in out
    rc, out = bench_cli(capsys, "export", str(SMOKE), "--task", "rotation", "--seed", "7", *sets)
    assert rc == 2 and "seed 7 is not among the seeds [0] of suite 'smoke'" in out
