"""The smoke suite end to end into a temporary MLflow store: runs, tags, metrics; resume; kill; failure."""

import json
import os
import signal
import subprocess
import sys

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from bench.cli import main
from bench.config.load import load_suite
from bench.run.runner import Runner

from .conftest import ROOT, SMOKE

pytestmark = pytest.mark.slow


def runs(tmp_path, status=None):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("smoke")
    found = client.search_runs([exp.experiment_id], max_results=5000)
    return [r for r in found if status is None or r.info.status == status]


def finished_per_key(tmp_path):
    counts = {}
    for r in runs(tmp_path, "FINISHED"):
        if "cell_key" in r.data.tags:
            counts[r.data.tags["cell_key"]] = counts.get(r.data.tags["cell_key"], 0) + 1
    return counts


def test_smoke_suite_end_to_end_then_rerun_adds_nothing(smoke_store, capsys):
    """The shared smoke run (``smoke_store``): its runs, tags, metrics and report; a rerun adds nothing."""
    tmp_path, store, client = smoke_store.folder, smoke_store.sets, MlflowClient(smoke_store.uri)
    plan = Runner(load_suite(SMOKE, store), SMOKE).cells
    all_runs = runs(tmp_path)
    cells = [r for r in all_runs if "cell_key" in r.data.tags]
    assert len(cells) == len(plan) and {r.data.tags["cell_key"] for r in cells} == {c.key for c in plan}
    assert [r.data.tags["kind"] for r in all_runs].count("suite") == 1
    parent = next(r for r in all_runs if r.data.tags["kind"] == "suite")
    for r in cells:
        tags = r.data.tags
        assert r.info.status == "FINISHED"
        assert tags["mlflow.parentRunId"] == parent.info.run_id
        for key in ("task", "seed", "kind", "mlflow.source.git.commit", "torch_version", "device"):
            assert tags[key]
        if tags["kind"] == "eval":
            assert {"budget", "protocol"} <= set(tags)
            assert 0.0 <= r.data.metrics["test_acc"] <= 1.0 and r.data.metrics["wall_s"] > 0
            if tags["protocol"] == "linear":
                assert "val_acc" in r.data.metrics
            if tags["protocol"] == "finetune":  # diagnostics: per-epoch loss and accuracy, final training accuracy
                curve = client.get_metric_history(r.info.run_id, "finetune_train_acc")
                assert len(curve) >= 2 and [m.step for m in curve] == list(range(1, len(curve) + 1))
                assert client.get_metric_history(r.info.run_id, "finetune_train_loss")
                assert 0.0 <= r.data.metrics["train_acc"] <= 1.0
            art = [a.path for a in client.list_artifacts(r.info.run_id)]
            assert "labels.json" in art
        else:
            history = client.get_metric_history(r.info.run_id, "train_loss")
            assert len(history) == 2 and r.data.metrics["images_per_s"] > 0
            assert r.data.params["pool.train"] == "256" and r.data.params["pool.duplicates_dropped"] == "0"
            assert tags["parts"] and tags["environment"] and tags["data_identity"] and tags["config_key"]
            assert (
                json.loads(tags["parts"])["task.rotation"] == 1 and json.loads(tags["environment"])["device"] == "cpu"
            )
    out = smoke_store.out
    assert "linear: test accuracy" in out and "│ rotation" in out and "(n=2)" in out
    report_dir = tmp_path / "results" / "smoke"  # bench run ends by writing the suite's report
    assert {"table.md", "table.tex", "stats.md", "stats.csv", "runs.csv", "label_efficiency.png"} <= {
        p.name for p in report_dir.iterdir()
    }
    table = pd.read_csv(report_dir / "runs.csv")
    finetuned = table[table.protocol == "finetune"]
    assert finetuned.train_acc.between(0, 1).all() and table[table.protocol == "linear"].train_acc.isna().all()
    assert "Code: git commit" in (report_dir / "table.md").read_text()
    logged = client.list_artifacts(parent.info.run_id, "report")
    assert "report/table.md" in {a.path for a in logged}  # and attaches it to the parent run

    assert main(["run", str(SMOKE), *(f"--set={s}" for s in store)]) == 0
    assert len(runs(tmp_path)) == len(all_runs)  # nothing recomputed, no new runs at all
    assert "0 to run" in capsys.readouterr().out


def test_killed_run_resumes_with_one_finished_run_per_cell(tmp_path, store):
    args = [*store, "seeds=[0]", "pretrain.epochs=30"]
    cmd = [sys.executable, "-m", "bench", "run", str(SMOKE), *(f"--set={s}" for s in args)]
    env = dict(os.environ, COLUMNS="200")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    for line in proc.stdout:  # random's cells come first; kill in the middle of rotation's pretraining
        if "epoch 3/30" in line:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    before = finished_per_key(tmp_path)
    assert before and all(n == 1 for n in before.values())
    survivors = {r.info.run_id for r in runs(tmp_path, "FINISHED")}

    plan = Runner(load_suite(SMOKE, args), SMOKE).cells
    assert main(["run", str(SMOKE), *(f"--set={s}" for s in args)]) == 0
    after = finished_per_key(tmp_path)
    assert after == {c.key: 1 for c in plan}
    assert survivors <= {r.info.run_id for r in runs(tmp_path, "FINISHED")}  # finished cells were not redone
    assert runs(tmp_path, "RUNNING") == []
    assert len(runs(tmp_path, "KILLED")) >= 2  # the killed parent and the killed pretraining cell


def test_non_finite_loss_fails_that_cell_and_the_sweep_goes_on(tmp_path, store, capsys):
    args = [*store, "seeds=[0]", "pretrain.lr=1e30", "pretrain.epochs=1"]
    assert main(["run", str(SMOKE), *(f"--set={s}" for s in args)]) == 1
    failed = runs(tmp_path, "FAILED")
    assert len(failed) == 1 and "NonFiniteLoss" in failed[0].data.tags["failure_reason"]
    finished_tasks = {r.data.tags.get("task") for r in runs(tmp_path, "FINISHED")}
    assert {"scratch", "random"} <= finished_tasks  # the other tasks still ran
    out = capsys.readouterr().out
    assert "failed" in out and "NonFiniteLoss" in out and "PARTIAL" in out


def test_results_do_not_depend_on_what_ran_before(tmp_path):
    import torch

    accs = []
    for name, noise in (("a", 1), ("b", 2)):
        torch.manual_seed(noise)  # a different global RNG state before each run
        torch.rand(noise * 7)
        store = [f"results_dir={str(tmp_path / name)!r}", f"tracking_uri='sqlite:///{tmp_path / name}.db'"]
        args = [*store, "seeds=[0]", "budgets=[8]", "pretrain.epochs=1"]
        assert main(["run", str(SMOKE), *(f"--set={s}" for s in args)]) == 0
        client = MlflowClient(f"sqlite:///{tmp_path / name}.db")
        exp = client.get_experiment_by_name("smoke")
        found = client.search_runs([exp.experiment_id], "tags.kind = 'eval'")
        accs.append({r.data.tags["cell_key"]: r.data.metrics["test_acc"] for r in found})
    assert accs[0] == accs[1] and len(accs[0]) == 6  # linear, knn (random, rotation), finetune (rotation, scratch)


def test_parity_runs_both_data_paths_and_compares_them_by_seed(tmp_path, store):
    overrides = [*store, "protocols=['knn', 'finetune']", "budgets=['full']", "pretrain.workers=0"]
    args = ["parity", str(SMOKE)] + [x for o in overrides for x in ("--set", o)]
    assert main(args) == 0
    result = json.loads((tmp_path / "results" / "smoke" / "parity.json").read_text())
    rows = {(r["task"], r["protocol"]): r for r in result["rows"]}
    assert set(rows) == {("rotation", "knn"), ("rotation", "finetune"), ("random", "knn"), ("scratch", "finetune")}
    rotation = rows[("rotation", "knn")]
    assert rotation["seeds"] == [0, 1] and len(rotation["device"]) == len(rotation["lightly"]) == 2
    assert rotation["device"] != rotation["lightly"]  # two different pretrainings
    assert rotation["diff"] == pytest.approx(rotation["lightly_mean"] - rotation["device_mean"])
    assert rotation["diff_ci_low"] <= rotation["diff"] <= rotation["diff_ci_high"]
    # the baselines do not pretrain: both paths share their cells, so they agree exactly
    scratch = rows[("scratch", "finetune")]
    assert scratch["device"] == scratch["lightly"] and scratch["within_noise"]
    pretrained = [r for r in runs(tmp_path, "FINISHED") if r.data.tags.get("kind") == "pretrain"]
    assert sorted(r.data.params["pretrain.augment"] for r in pretrained) == ["device"] * 2 + ["lightly"] * 2
    assert "| rotation | knn | full | 2 |" in (tmp_path / "results" / "smoke" / "parity.md").read_text()
    assert sorted(p.name for p in (tmp_path / "results" / "smoke").iterdir()) == ["parity.json", "parity.md"]
