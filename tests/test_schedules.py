"""Schedules that scale with the run, and the compute on the record.

Momentum encoders renew as much over a run as in the reference run their momentum comes from, however short;
DINO's last layer is frozen for a fraction of the steps, not for epochs; DINO is evaluated on its teacher. A
suite can fix the optimiser steps or the images seen instead of epochs; every pretraining records what it cost,
and the report shows it beside the accuracy.
"""

import math

import mlflow
import pandas as pd
import pytest
import torch

from bench.cli import main
from bench.config.load import load_suite
from bench.config.sections import DatasetConfig, PretrainConfig
from bench.data.datasets import load_dataset
from bench.errors import ConfigError
from bench.models.encoders import build_encoder
from bench.run.plan import build_plan
from bench.tasks import TASKS
from bench.train.loop import pretrain

from .conftest import SMOKE, store_overrides

DATA = "d" * 16
SMALL = {
    "dino": {"hidden_dim": 32, "bottleneck_dim": 16, "out_dim": 64},
    "byol": {"hidden_dim": 32, "out_dim": 16},
    "moco": {"hidden_dim": 32, "out_dim": 16, "queue_size": 0},
}
COPY = {"dino": "teacher", "byol": "target", "moco": "key"}  # the task's Momentum


def make(name: str, **overrides):
    torch.manual_seed(0)
    cls = TASKS[name]
    return cls(build_encoder("small_cnn", 0), cls.Config(**SMALL.get(name, {}) | overrides), 32)


@pytest.fixture(scope="module")
def images():
    return load_dataset(DatasetConfig(name="synthetic", synthetic={"train": 64, "test": 8})).train_x


# ---------------------------------------------------------------------------------------------- momentum


@pytest.mark.parametrize("name", ["dino", "byol", "moco"])
def test_a_short_run_leaves_little_of_the_momentum_copys_initialisation(name):
    """With the online weights at zero, what the copy holds after the run is its initial weights times the
    product of the momenta: the share of its initialisation it still holds. A fixed 0.996 (0.99) over 234 steps
    leaves 63% (31%); scaled to the reference run's renewal, next to nothing."""
    task, total = make(name), 234
    copy = getattr(task, COPY[name]).copies[0]
    before = next(copy.parameters()).detach().clone()
    with torch.no_grad():
        for p in task.encoder.parameters():
            p.zero_()
    for step in range(1, total + 1):
        task.after_step(step, total)
    after = next(copy.parameters())
    share = (after[before != 0] / before[before != 0]).mean().item()
    assert share < 0.01
    assert task.records()["momentum_start"] == pytest.approx(0.9)  # the floor: at least ~10 steps averaged


@pytest.mark.parametrize(
    ("name", "reference_steps", "momentum"), [("dino", 125_100, 0.996), ("byol", 78_000, 0.99), ("moco", 78_000, 0.99)]
)
def test_the_start_momentum_keeps_the_reference_runs_renewal(name, reference_steps, momentum):
    ema = getattr(make(name), COPY[name])
    assert ema.start_for(reference_steps) == pytest.approx(momentum)
    assert ema.start_for(10 * reference_steps) == pytest.approx(momentum)  # never above the reference value
    assert 1 - ema.start_for(reference_steps // 4) == pytest.approx(4 * (1 - momentum), rel=1e-3)
    assert ema.start_for(100) == pytest.approx(0.9)
    fixed = getattr(make(name, momentum_steps=None), COPY[name])
    assert fixed.start_for(100) == momentum


# ---------------------------------------------------------------------------------------------- DINO's freeze


def frozen_steps(images, epochs: int, batch: int) -> tuple[int, int]:
    """(optimiser steps, steps in which the head's last layer had no gradient) of a DINO pretraining; its loss is
    replaced by a cheap one of the same parameters (the loop, its hooks and the optimiser are the real ones)."""
    task, frozen = make("dino"), []

    def loss(batch, gen):
        frozen.append(not task.head.last_layer.weight_v.requires_grad)
        return sum(p.square().sum() for p in task.head.parameters() if p.requires_grad)

    task.loss = loss
    pretrain(task, images, PretrainConfig(epochs=epochs, batch_size=batch, lr=0.05, health_every=0), seed=0)
    return len(frozen), sum(frozen)


def test_dino_freezes_its_last_layer_for_one_percent_of_the_steps_whatever_the_epochs(images):
    assert frozen_steps(images, epochs=25, batch=8) == (200, 2)  # 8 steps an epoch
    assert frozen_steps(images, epochs=50, batch=16) == (200, 2)  # 4 steps an epoch


def test_dino_is_evaluated_on_its_teacher():
    task = make("dino")
    assert task.evaluated_encoder() is task.teacher.copies[0]
    for name in ("byol", "moco", "rotation"):  # their papers evaluate the online (query) encoder
        other = make(name)
        assert other.evaluated_encoder() is other.encoder


# ---------------------------------------------------------------------------------------------- fixed compute


def recorded(task):
    """``task`` with its hooks recording (hook, step, total_steps)."""
    calls = []
    for hook in ("before_step", "after_step"):
        inner = getattr(task, hook)
        setattr(task, hook, lambda s, t, inner=inner, hook=hook: (calls.append((hook, s, t)), inner(s, t)))
    return task, calls


@pytest.mark.parametrize("length", [{"steps": 10}, {"images": 150}])  # ceil(150 / 16) = 10 steps
def test_a_fixed_compute_runs_that_many_steps_and_cuts_the_last_epoch_short(images, length):
    cfg = PretrainConfig(epochs=1, batch_size=16, lr=0.05, health_every=0, **length)  # epochs: overridden
    task, calls = recorded(make("rotation", head_hidden=16))
    history = pretrain(task, images, cfg, seed=0)
    assert [h.epoch for h in history] == [1, 2, 3]  # 4 + 4 + 2 steps
    assert [c for c in calls if c[0] == "before_step"] == [("before_step", s, 10) for s in range(1, 11)]
    assert [c for c in calls if c[0] == "after_step"] == [("after_step", s, 10) for s in range(1, 11)]
    assert history[-1].images_per_s > 0


def test_a_killed_fixed_compute_run_resumes_to_the_same_weights(images, tmp_path):
    cfg = PretrainConfig(steps=6, batch_size=16, lr=0.05, checkpoint_every_s=0, health_every=0)  # 4 + 2 steps
    reference = make("byol")
    pretrain(reference, images, cfg, seed=0)

    def die_after_one(stats):
        if stats.epoch == 1:
            raise KeyboardInterrupt  # stands in for a kill after epoch 1's state was saved

    state = tmp_path / "state.pt"
    with pytest.raises(KeyboardInterrupt):
        pretrain(make("byol"), images, cfg, seed=0, on_epoch=die_after_one, state_path=state)
    resumed, seen = make("byol"), []
    pretrain(resumed, images, cfg, seed=0, on_epoch=lambda s: seen.append(s.epoch), state_path=state)
    assert seen == [1, 2]
    for a, b in zip(reference.state_dict().values(), resumed.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-5)
    assert resumed.records() == reference.records() == {"momentum_start": pytest.approx(0.9)}


def test_steps_and_images_are_exclusive_and_enter_the_key_only_when_set():
    with pytest.raises(ConfigError) as e:
        load_suite(SMOKE, ["pretrain.steps=10", "pretrain.images=100"])
    assert len(str(e.value).splitlines()) == 1 and "steps" in str(e.value) and "images" in str(e.value)
    suite = load_suite(SMOKE)
    assert not {"steps", "images"} & set(suite.pretrain.key_content())  # the keys of suites that fix no compute
    assert "checkpoint_every_s" not in suite.pretrain.key_content()
    keys = {c.key for c in build_plan(suite, DATA) if c.kind == "pretrain"}
    fixed = load_suite(SMOKE, ["pretrain.steps=10", "pretrain.epochs=0"])  # epochs 0 is valid beside steps
    assert keys.isdisjoint(c.key for c in build_plan(fixed, DATA) if c.kind == "pretrain")


# ---------------------------------------------------------------------------------------------- on the record


def test_a_pretraining_records_its_cost_and_dino_saves_its_teacher(tmp_path, monkeypatch, capsys):
    import bench.run.cells as cells

    built = []
    real = cells.build_task
    monkeypatch.setattr(cells, "build_task", lambda *a, **k: built.append(real(*a, **k)) or built[-1])
    args = [
        "tasks={dino={hidden_dim=32, bottleneck_dim=16, out_dim=64}, random={}}",
        "seeds=[0]",
        "budgets=[8]",
        'protocols=["knn"]',
        "pretrain.steps=5",
        *store_overrides(tmp_path),
    ]
    assert main(["run", str(SMOKE), *(f"--set={a}" for a in args)]) == 0
    (task,) = built
    (path,) = [p for p in (tmp_path / "results" / "cache" / "checkpoints").glob("*.pt") if "partial" not in p.name]
    saved = torch.load(path, weights_only=True)
    teacher, student = task.teacher.copies[0].state_dict(), task.encoder.state_dict()
    assert all(torch.equal(saved[k], teacher[k].cpu()) for k in saved)
    assert any(not torch.equal(saved[k], student[k].cpu()) for k in saved if saved[k].is_floating_point())

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("smoke").experiment_id], "tags.kind = 'pretrain'")
    (metrics,) = [r.data.metrics for r in runs]
    assert metrics["pretrain_steps"] == 5 and metrics["pretrain_images_seen"] == 5 * 64
    assert metrics["pretrain_device_s"] == metrics["pretrain_wall_s"] > 0
    assert metrics["momentum_start"] == pytest.approx(0.9) and metrics["last_layer_frozen_steps"] == 0

    report = tmp_path / "results" / "smoke"
    rows = pd.read_csv(report / "runs.csv").set_index("task")
    assert rows.loc["dino", "pretrain_steps"] == 5 and rows.loc["dino", "pretrain_images_seen"] == 320
    assert rows.loc["random", ["pretrain_steps", "pretrain_wall_s", "pretrain_device_s"]].tolist() == [0, 0, 0]
    text = (report / "cost.md").read_text()
    assert "| dino | 5 | 320 |" in text and "| random | 0 | 0 | 0.0 | 0.0 |" in text


def frame() -> pd.DataFrame:
    rows = []
    for task, steps, seconds in (("a", 100, 10.0), ("b", 100, 30.0), ("random", 0, 0.0)):
        for seed in (0, 1):
            for budget, acc in (("8", 0.3), ("full", 0.6)):
                rows.append(
                    {
                        "task": task,
                        "protocol": "linear",
                        "budget": budget,
                        "seed": seed,
                        "test_acc": acc + 0.01 * seed,
                        "pretrain_steps": steps,
                        "pretrain_images_seen": steps * 64,
                        "pretrain_wall_s": seconds and seconds + seed,
                        "pretrain_device_s": seconds and seconds + seed,
                        "n_labels": 8.0 if budget == "8" else 256.0,
                    }
                )
    return pd.DataFrame(rows)


def test_the_cost_section_shows_the_mean_cost_beside_the_accuracy():
    from bench.report.cost import cost_markdown

    text = cost_markdown(frame())
    assert "| task | steps | images seen | wall s | device s | 8 labels | full (256 labels) |" in text
    assert "| a | 100 | 6,400 | 10.5 | 10.5 | 0.3050 range [0.300, 0.310] (n=2) |" in text
    assert "| b | 100 | 6,400 | 30.5 | 30.5 |" in text and "| random | 0 | 0 | 0.0 | 0.0 |" in text
    assert "same 100 optimiser steps (6,400 images)" in text


def test_no_cost_columns_no_cost_section():
    from bench.report.cost import cost_markdown

    assert cost_markdown(frame().drop(columns=["pretrain_steps"])) is None
    missing = frame().assign(pretrain_wall_s=math.nan)
    assert "| a | 100 | 6,400 | — |" in cost_markdown(missing)  # an older run that logged no cost
