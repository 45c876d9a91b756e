"""Label-free health measures (bench.health): known answers, and logged during pretraining without changing it."""

import math

import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from bench.augment.ops import to_input
from bench.cli import main
from bench.train.health import collapse_std, rankme

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
    sets += [f"pretrain.health_every={health_every}", "pretrain.health_images=100000"]  # more than the pool
    assert main(["run", str(SMOKE), *(f"--set={s}" for s in sets)]) == 0
    client = MlflowClient(store)
    exp = client.get_experiment_by_name("smoke")
    runs = client.search_runs([exp.experiment_id], "tags.task = 'rotation'")
    return client, {r.data.tags["kind"]: r for r in runs}


@pytest.mark.slow
def test_health_is_logged_by_epoch_and_leaves_the_results_unchanged(tmp_path):
    client, measured = cells(tmp_path, health_every=2)
    _, unmeasured = cells(tmp_path, health_every=0)
    pre = measured["pretrain"]
    history = client.get_metric_history(pre.info.run_id, "rankme")
    assert [m.step for m in history] == [2, 3]  # every 2 epochs, and the last
    assert all(1.0 <= m.value <= 128 for m in history)
    assert [m.step for m in client.get_metric_history(pre.info.run_id, "collapse_std")] == [2, 3]
    assert pre.data.params["health_images_measured"] == "256"  # the whole pool, not the 100,000 asked for
    measured_s = sum(m.value for m in client.get_metric_history(pre.info.run_id, "health_s"))
    assert pre.data.metrics["health_wall_s"] == pytest.approx(measured_s)  # the total the report reads
    assert "rankme" not in unmeasured["pretrain"].data.metrics
    # health is part of the pretraining's identity (health.md publishes it), yet measuring it changes nothing
    # trained: bitwise the same training loss and test accuracy with and without the measurement
    assert measured["eval"].data.tags["cell_key"] != unmeasured["eval"].data.tags["cell_key"]
    assert measured["pretrain"].data.metrics["train_loss"] == unmeasured["pretrain"].data.metrics["train_loss"]
    assert measured["eval"].data.metrics["test_acc"] == unmeasured["eval"].data.metrics["test_acc"]
    # the report: each evaluation row carries its pretraining's final RankMe, and health.md says why no correlation
    runs = pd.read_csv(tmp_path / "r2" / "smoke" / "runs.csv")
    rotation, baselines = runs[runs.task == "rotation"], runs[runs.task != "rotation"]
    assert len(rotation) and list(rotation.rankme) == pytest.approx([history[-1].value] * len(rotation), rel=1e-12)
    assert len(baselines) and baselines.rankme.isna().all()  # no pretraining, no RankMe
    assert (rotation.health_cost > 0).all() and baselines.health_cost.isna().all()
    assert "Not computed at any budget: 1 pretraining task" in (tmp_path / "r2" / "smoke" / "health.md").read_text()
    assert not (tmp_path / "r0" / "smoke" / "health.md").exists()  # nothing measured, no file
    unmeasured_rows = pd.read_csv(tmp_path / "r0" / "smoke" / "runs.csv")
    assert unmeasured_rows.rankme.isna().all() and unmeasured_rows.health_cost.isna().all()  # not a cost of 0


def test_a_resumed_pretraining_reports_the_health_of_every_epoch_as_an_uninterrupted_one(tmp_path):
    """Health is measured by the training loop's hook and saved with the training state: a run killed after
    epoch 2 and resumed reports, for epochs 1-4, bitwise the measures of an uninterrupted run."""
    from bench.config.sections import DatasetConfig, PretrainConfig
    from bench.data.datasets import load_dataset
    from bench.models.encoders import build_encoder
    from bench.tasks import TASKS
    from bench.train.health import HealthHook
    from bench.train.loop import pretrain

    images = load_dataset(DatasetConfig(name="synthetic", synthetic={"train": 64, "test": 8})).train_x
    cfg = PretrainConfig(epochs=4, batch_size=16, lr=0.05, checkpoint_every_s=0, health_every=2)

    def task():
        torch.manual_seed(0)
        return TASKS["rotation"](build_encoder("small_cnn", 0), TASKS["rotation"].Config(head_hidden=32), 32)

    def hooks():
        return [HealthHook(images[:32], cfg.health_every, cfg.epochs, to_input)]

    def measures(history):
        return [(h.epoch, h.measures.get("rankme"), h.measures.get("collapse_std")) for h in history]

    uninterrupted = measures(pretrain(task(), images, cfg, seed=0, hooks=hooks()))
    assert [e for e, rankme, _ in uninterrupted if rankme is not None] == [2, 4]

    def die_after_three(stats):
        if stats.epoch == 3:
            raise KeyboardInterrupt

    state = tmp_path / "state.pt"
    with pytest.raises(KeyboardInterrupt):
        pretrain(task(), images, cfg, seed=0, on_epoch=die_after_three, state_path=state, hooks=hooks())
    seen = []
    resumed = pretrain(task(), images, cfg, seed=0, on_epoch=seen.append, state_path=state, hooks=hooks())
    assert [s.epoch for s in seen] == [1, 2, 3, 4]  # epochs 1-3 replayed from the saved state
    assert measures(resumed) == uninterrupted and measures(seen) == uninterrupted
