"""Label-free health measures (bench.health): known answers, and logged during pretraining without changing it."""

import math
from types import SimpleNamespace

import mlflow
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from bench.__main__ import main
from bench.augment import to_input
from bench.health import collapse_std, rankme
from bench.tracking import PretrainLog

from .conftest import SMOKE


@pytest.mark.parametrize("k", [1, 3, 10])
def test_rankme_of_k_equal_singular_values_is_k(k):
    gen = torch.Generator().manual_seed(k)
    u, _ = torch.linalg.qr(torch.randn(200, 32, generator=gen, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(32, 32, generator=gen, dtype=torch.float64))
    s = torch.zeros(32, dtype=torch.float64)
    s[:k] = 3.0
    features = u @ torch.diag(s) @ v.T  # singular values: k times 3, then zeros
    assert rankme(features) == pytest.approx(k, abs=1e-3)


def test_rankme_weighs_unequal_singular_values_by_their_entropy():
    features = torch.diag(torch.tensor([3.0, 1.0], dtype=torch.float64))
    p = torch.tensor([0.75, 0.25])
    assert rankme(features) == pytest.approx(float(torch.exp(-(p * p.log()).sum())), rel=1e-5)


def test_collapse_signal_of_collapsed_and_of_isotropic_features():
    collapsed = torch.ones(500, 64) * torch.randn(1, 64)
    assert collapse_std(collapsed) == pytest.approx(0.0, abs=1e-6)
    isotropic = torch.randn(20000, 64, generator=torch.Generator().manual_seed(0))
    assert collapse_std(isotropic) == pytest.approx(1 / math.sqrt(64), rel=0.02)


def cells(tmp_path, health_every: int):
    store = f"sqlite:///{tmp_path / f'h{health_every}.db'}"
    sets = [f"results_dir={str(tmp_path / f'r{health_every}')!r}", f"tracking_uri={store!r}", "seeds=[0]"]
    sets += [
        "tasks={rotation={head_hidden=64},random={}}",
        "protocols=['knn']",
        "budgets=['full']",
        "pretrain.epochs=3",
    ]
    sets += [f"pretrain.health_every={health_every}", "pretrain.health_images=128"]
    assert main(["run", str(SMOKE), *(f"--set={s}" for s in sets)]) == 0
    client = MlflowClient(store)
    exp = client.get_experiment_by_name("smoke")
    runs = client.search_runs([exp.experiment_id], "tags.task = 'rotation'")
    return client, {r.data.tags["kind"]: r for r in runs}


def test_health_is_logged_by_epoch_and_leaves_the_results_unchanged(tmp_path):
    client, measured = cells(tmp_path, health_every=2)
    _, unmeasured = cells(tmp_path, health_every=0)
    pre = measured["pretrain"]
    history = client.get_metric_history(pre.info.run_id, "rankme")
    assert [m.step for m in history] == [2, 3]  # every 2 epochs, and the last
    assert all(1.0 <= m.value <= 128 for m in history)
    assert [m.step for m in client.get_metric_history(pre.info.run_id, "collapse_std")] == [2, 3]
    assert "rankme" not in unmeasured["pretrain"].data.metrics
    # the same cell keys, and bitwise the same training and test accuracy with and without the measurement
    assert measured["eval"].data.tags["cell_key"] == unmeasured["eval"].data.tags["cell_key"]
    assert measured["pretrain"].data.metrics["train_loss"] == unmeasured["pretrain"].data.metrics["train_loss"]
    assert measured["eval"].data.metrics["test_acc"] == unmeasured["eval"].data.metrics["test_acc"]
    # the report: each evaluation row carries its pretraining's final RankMe, and health.md says why no correlation
    runs = pd.read_csv(tmp_path / "r2" / "smoke" / "runs.csv")
    rotation, baselines = runs[runs.task == "rotation"], runs[runs.task != "rotation"]
    assert len(rotation) and list(rotation.rankme) == pytest.approx([history[-1].value] * len(rotation), rel=1e-12)
    assert len(baselines) and baselines.rankme.isna().all()  # no pretraining, no RankMe
    assert (rotation.health_cost > 0).all() and baselines.health_cost.isna().all()
    assert "too few tasks" in (tmp_path / "r2" / "smoke" / "health.md").read_text()
    assert not (tmp_path / "r0" / "smoke" / "health.md").exists()  # nothing measured, no file
    unmeasured_rows = pd.read_csv(tmp_path / "r0" / "smoke" / "runs.csv")
    assert unmeasured_rows.rankme.isna().all() and unmeasured_rows.health_cost.isna().all()  # not a cost of 0


class _Task:
    eval_input = staticmethod(to_input)

    def __init__(self):
        self.encoder = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 16))


def _logged_steps(tmp_path, name: str, trained: list[bool]) -> list[int]:
    """Epochs 1..len(trained) through a PretrainLog (health every 2 epochs); trained[k] says whether the weights
    changed before epoch k+1's call (False: a resumed run replaying a saved epoch)."""
    task = _Task()
    data = SimpleNamespace(pool_x=torch.randint(0, 255, (64, 3, 8, 8), dtype=torch.uint8))
    cfg = SimpleNamespace(health_every=2, health_images=32, epochs=len(trained))
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'replay.db'}")
    experiment = mlflow.set_experiment("replay")  # not the experiment an earlier test left active in mlflow
    with mlflow.start_run(run_name=name, experiment_id=experiment.experiment_id) as run:
        log = PretrainLog(task, data, cfg, seed=0)
        for epoch, step in enumerate(trained, start=1):
            if step:
                with torch.no_grad():
                    task.encoder[1].weight.add_(0.01 * epoch)
            log.epoch(SimpleNamespace(epoch=epoch, loss=1.0, images_per_s=1.0, seconds=1.0))
    history = MlflowClient().get_metric_history(run.info.run_id, "rankme")
    return [m.step for m in history]


def test_a_resumed_run_logs_health_only_for_the_epochs_its_weights_belong_to(tmp_path):
    assert _logged_steps(tmp_path, "fresh", [True] * 6) == [2, 4, 6]
    # resumed after epoch 4: epochs 1-4 are replayed with epoch 4's weights, then 5 and 6 are trained
    assert _logged_steps(tmp_path, "resumed", [True, False, False, False, True, True]) == [4, 6]
