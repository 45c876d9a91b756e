"""Protocols that reach their optimum: fine-tuning runs until it converges (validation, or the training loss at
budgets too small to hold labels out), the linear probe searches L2 over 1e-6..1e5 with k-fold selection at small
budgets, and a run that may have stopped short says so in the report."""

import pandas as pd
import pytest
import torch

from bench.augment.ops import to_input
from bench.config.sections import DatasetConfig
from bench.data.datasets import load_dataset
from bench.models.encoders import build_encoder
from bench.protocols.base import Labelled
from bench.protocols.finetune import Finetune, FinetuneConfig, Plateau, finetune
from bench.protocols.linear import LinearConfig, fit_linear, linear_probe, regularisation_path
from bench.report.write import write_report


@pytest.fixture(scope="module")
def data():
    return load_dataset(DatasetConfig(name="synthetic", synthetic={"classes": 4, "train": 160, "test": 64}))


def blobs(n: int, classes: int, seed: int, spread: float = 1.0):
    centres = torch.randn(classes, 16, generator=torch.Generator().manual_seed(7)) * 2
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    return centres[y] + spread * torch.randn(n, 16, generator=gen), y


def test_the_linear_grid_spans_1e_minus_6_to_1e5():
    grid = LinearConfig().l2_grid
    assert min(grid) == 1e-6 and max(grid) == 1e5 and len(grid) >= 12


def test_a_small_budget_chooses_l2_by_k_fold_and_a_large_one_on_a_hold_out():
    x, y = blobs(100, 10, 0)  # 10 labels per class: a hold-out would hold 2 per class
    assert linear_probe(x, y, 10, LinearConfig(), 0).chosen["validation"] == "5-fold"
    x, y = blobs(3000, 10, 0)  # 60 per class in the hold-out
    assert linear_probe(x, y, 10, LinearConfig(), 0).chosen["validation"] == "hold-out"


def test_a_choice_at_the_edge_of_the_grid_is_a_caveat_and_one_inside_is_not():
    x, y = blobs(200, 4, 0, spread=3.0)  # overlapping classes: the optimum is a moderate penalty
    edge = linear_probe(x, y, 4, LinearConfig(l2_grid=[1e-6, 1e-5, 1e-4]), 0)  # a grid that stops short of it
    assert edge.chosen["l2"] == 1e-4 and edge.caveats == ["l2 0.0001 at the strong end of the grid"]
    inside = linear_probe(x, y, 4, LinearConfig(), 0)
    assert 1e-4 < inside.chosen["l2"] < max(LinearConfig().l2_grid) and inside.caveats == []
    assert inside.val_acc > edge.val_acc


def test_the_warm_started_path_predicts_as_fits_from_zero_do():
    x, y = blobs(300, 3, 0, spread=2.0)
    xt, _ = blobs(300, 3, 1, spread=2.0)
    grid = [1e-3, 1e-1, 10.0]
    path = regularisation_path(x, y, 3, grid, 200)
    for l2 in grid:
        cold = fit_linear(x, y, 3, l2, 200)
        agree = (path[l2](xt) == cold(xt)).float().mean().item()
        assert agree > 0.98, (l2, agree)


def test_a_plateau_drops_the_learning_rate_then_stops():
    p = Plateau(patience=2, decays=1)
    actions = [p.update(s, v)[1] for s, v in enumerate([0.1, 0.5, 0.5, 0.4, 0.6, 0.6, 0.6], start=1)]
    assert actions == ["go", "go", "go", "drop", "go", "go", "stop"]
    assert p.best == 0.6 and p.best_step == 7  # a tie moves the best check later; only a rise resets patience
    assert p.drops == [4] and p.stopped


def test_fine_tuning_stops_on_validation_and_trains_the_whole_budget_for_that_long(data):
    cfg = FinetuneConfig(epochs=60, min_steps=0, batch_size=32, check_steps=1, patience=2, decays=1, val_per_class=5)
    labelled = Labelled(build_encoder("small_cnn", 0), data.train_x, None, data.train_y, 4, 0, to_input)
    fitted = Finetune.fit(cfg, labelled)
    chosen = fitted.chosen
    assert chosen["stopped_on"] == "validation" and chosen["stop"] == "plateau"
    assert chosen["steps"] <= chosen["searched"] < chosen["bound"]  # it stopped before the bound
    assert chosen["epochs"] == round(chosen["steps"] / 5, 2)  # the refit: all 160 labels, 5 batches a pass
    assert fitted.val_acc is not None and fitted.caveats == []


def test_a_budget_too_small_to_hold_out_converges_on_its_training_loss(data):
    idx = torch.cat([torch.nonzero(data.train_y == c)[:5, 0] for c in range(4)])  # 5 labels per class
    cfg = FinetuneConfig(epochs=400, min_steps=0, batch_size=32, check_steps=10, patience=3, decays=1)
    labelled = Labelled(build_encoder("small_cnn", 0), data.train_x[idx], None, data.train_y[idx], 4, 0, to_input)
    fitted = Finetune.fit(cfg, labelled)
    assert fitted.chosen["stopped_on"] == "training loss" and fitted.chosen["stop"] == "plateau"
    assert fitted.chosen["train_acc"] == 1.0 and fitted.caveats == []


def test_a_run_that_meets_its_bound_or_underfits_a_small_budget_carries_caveats(data):
    idx = torch.cat([torch.nonzero(data.train_y == c)[:5, 0] for c in range(4)])
    cfg = FinetuneConfig(epochs=1, min_steps=2, batch_size=32, lr=1e-4)
    labelled = Labelled(build_encoder("small_cnn", 0), data.train_x[idx], None, data.train_y[idx], 4, 0, to_input)
    fitted = Finetune.fit(cfg, labelled)
    assert fitted.caveats[0] == "not converged: training loss still falling at the bound of 2 steps"
    assert fitted.caveats[1].startswith("under-fitted: train_acc ")


def test_the_report_marks_cells_with_a_caveat_and_lists_them_in_stats(tmp_path):
    rows = []
    for task in ("rotation", "scratch"):
        for seed in range(3):
            caveat = "not converged: validation accuracy still rising at the bound of 300 steps"
            rows.append(
                {
                    "task": task,
                    "protocol": "finetune",
                    "budget": "100",
                    "seed": seed,
                    "status": "finished",
                    "test_acc": 0.3 + 0.01 * seed + (0.05 if task == "rotation" else 0),
                    "n_labels": 100.0,
                    "caveat": caveat if (task, seed) == ("rotation", 1) else "",
                }
            )
    write_report(pd.DataFrame(rows), tmp_path, suite="s", dataset="d")
    table = (tmp_path / "table.md").read_text()
    rotation = next(line for line in table.splitlines() if line.startswith("| rotation"))
    scratch = next(line for line in table.splitlines() if line.startswith("| scratch"))
    assert "†" in rotation and "†" not in scratch
    assert "†: in 1 run of the cell the protocol may have stopped short of its optimum" in table
    stats = (tmp_path / "stats.md").read_text()
    assert "| finetune | 100 | rotation | 1 | not converged: validation accuracy still rising" in stats


def test_fine_tuning_history_is_per_check_and_records_validation(data):
    cfg = FinetuneConfig(epochs=4, min_steps=0, batch_size=32, check_steps=1)
    val = (data.train_x[:40], data.train_y[:40])
    fitted = finetune(build_encoder("small_cnn", 0), data.train_x[40:], data.train_y[40:], 4, cfg, 0, val=val)
    assert [h["step"] for h in fitted.history] == [4, 8, 12, 16]
    assert all(0 <= h["val_acc"] <= 1 for h in fitted.history)
    assert fitted.val_acc == max(h["val_acc"] for h in fitted.history)
