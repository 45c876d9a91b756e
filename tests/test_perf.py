import json
from pathlib import Path

import pytest
import torch

from bench.cli import main
from bench.tools.perf import run_perf


@pytest.mark.slow
def test_perf_measures_every_path_and_writes_json(tmp_path: Path):
    r = run_perf(
        ["simclr", "rotation"], "small_cnn", batch=8, steps=1, workers=0, device=torch.device("cpu"), out_dir=tmp_path
    )
    saved = json.loads(Path(r["path"]).read_text())
    for task in ("simclr", "rotation"):
        m = saved["tasks"][task]
        assert all(m[k] > 0 for k in ("a_model_step_only", "b_on_device", "c_reference"))
        assert m["ratio_b_over_c"] == m["b_on_device"] / m["c_reference"]
    assert saved["view_generation"]["ratio"] > 0 and saved["probes"]["linear_probe_fit_s"] > 0
    assert saved["peak_memory_mb"] > 0 and saved["encoder"] == "small_cnn"


@pytest.mark.slow
def test_perf_measures_the_compiled_path_and_refuses_tasks_without_a_reference(tmp_path: Path):
    r = run_perf(["rotation"], "small_cnn", 8, 1, 0, torch.device("cpu"), tmp_path, compile_=True)
    m = r["tasks"]["rotation"]
    assert m["b_on_device_compiled"] > 0 and m["compile_s"] > 0
    assert m["cifar10_epoch_s_compiled"] == 50_000 / m["b_on_device_compiled"]
    with pytest.raises(ValueError, match="no reference pipeline for jigsaw"):
        run_perf(["jigsaw"], "small_cnn", 8, 1, 0, torch.device("cpu"), tmp_path)


@pytest.mark.slow
def test_perf_command_prints_every_figure(tmp_path: Path, capsys):
    args = ["perf", "--tasks", "rotation", "--batch", "8", "--steps", "1", "--workers", "0", "--device", "cpu"]
    assert main([*args, "--out", str(tmp_path), "--compile"]) == 0
    out = capsys.readouterr().out
    for needle in ("measuring rotation", "(a) model step only", "b/c", "compiled:", "two SimCLR views", "written:"):
        assert needle in out
    assert len(list(tmp_path.glob("perf-cpu-*.json"))) == 1
