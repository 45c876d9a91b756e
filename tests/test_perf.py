import json
from pathlib import Path

import torch

from bench.perf import run_perf


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
