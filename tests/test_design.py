"""Crossed design: pretraining seeds x label draws, in the plan, the run, tuning and the report; bench plan."""

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tomllib

import bench.protocols.tuning
import bench.store.tracking
from bench.cli import main
from bench.config.suite import Suite
from bench.report import planning
from bench.report.planning import Spread, difference_spreads, power
from bench.report.tidy import by_seed
from bench.report.variance import components, variance_markdown
from bench.run.plan import build_plan
from bench.tools.curve import plateau, rankme_lines

SUITE = """
name = "crossed"
seeds = [0, 1]
draws = [0, 1, 2]
budgets = [16, 48, "full"]
protocols = ["linear", "finetune"]
device = "cpu"
[dataset]
name = "synthetic"
synthetic = { classes = 4, train = 96, test = 64, size = 16 }
[encoder]
name = "small_cnn"
[pretrain]
epochs = 1
batch_size = 32
[linear]
max_iter = 20
[finetune]
epochs = 1
min_steps = 8
batch_size = 16
[tuning]
enabled = true
trials = 2
protocols = ["finetune"]
budgets = [16, 48]
[tasks.rotation]
[tasks.scratch]
"""


def evals(text: str) -> list:
    return [c for c in build_plan(Suite.model_validate(tomllib.loads(text)), "data") if c.kind == "eval"]


def test_every_encoder_is_evaluated_on_every_draw_and_all_labels_once():
    cells = evals(SUITE)
    per_seed: dict[tuple, set] = {}
    for c in cells:
        per_seed.setdefault((c.task, c.protocol, c.seed, c.budget), set()).add(c.draw)
    for (*_, budget), draws in per_seed.items():
        assert draws == ({0} if budget == "full" else {0, 1, 2})
    assert len(cells) == (2 + 1) * 2 * (3 + 3 + 1)  # (rotation x 2 protocols, scratch) x seeds x draws at 16, 48, full
    assert len({c.key for c in cells}) == len(cells)
    for c in cells:  # every draw of a seed starts from that seed's one encoder
        assert c.source == next(d.source for d in cells if (d.task, d.seed) == (c.task, c.seed))
        assert f"draw={c.draw}" in c.label and c.tags()["draw"] == str(c.draw)


def test_seeds_alone_keep_their_meaning():
    legacy = evals(SUITE.replace("draws = [0, 1, 2]\n", ""))
    assert all(c.draw is None and c.label_draw == c.seed and "draw" not in c.tags() for c in legacy)
    crossed = evals(SUITE)
    assert {c.key for c in legacy}.isdisjoint(c.key for c in crossed)
    # draw d draws the labels seed d drew without draws, whichever encoder it evaluates
    assert {(c.seed, c.label_draw) for c in crossed if c.budget == 16} == {(s, d) for s in (0, 1) for d in (0, 1, 2)}
    assert len({c.eval_seed for c in crossed if (c.task, c.protocol, c.budget) == ("scratch", "finetune", 16)}) == 6


@pytest.mark.slow
def test_a_crossed_run_fits_and_tunes_each_cell_on_its_own_draw_and_resumes(tmp_path: Path, monkeypatch):
    from bench.data.budgets import budget_indices
    from bench.data.datasets import load_dataset

    studies: dict[str, tuple] = {}  # study name -> (task, budget, seed, draw, label indices it validated on)
    fitted: list[tuple] = []
    original_study, original_eval_run = bench.protocols.tuning.Tuner._study, bench.store.tracking.Tracker.eval_run

    def study(self, task, protocol, budget, seed, draw=None):
        params, source = original_study(self, task, protocol, budget, seed, draw)
        used = self.labels_used[(task, protocol, budget, seed, draw)]
        studies[re.search(r"study (\S+),", source).group(1)] = (task, budget, seed, draw, used)
        return params, source

    def eval_run(self, cell, suite, settings, hparams, hp_source, idx):
        fitted.append((cell, hp_source, {int(i) for i in idx}, suite))
        return original_eval_run(self, cell, suite, settings, hparams, hp_source, idx)

    monkeypatch.setattr(bench.protocols.tuning.Tuner, "_study", study)
    monkeypatch.setattr(bench.store.tracking.Tracker, "eval_run", eval_run)
    path = tmp_path / "crossed.toml"
    path.write_text(SUITE)
    sets = [f"--set=results_dir={str(tmp_path / 'results')!r}", f"--set=tracking_uri='sqlite:///{tmp_path}/m.db'"]
    assert main(["run", str(path), *sets]) == 0

    labels = load_dataset(fitted[0][3].dataset).train_y.numpy()
    assert len(studies) == 2 * 2 * 2 * 3  # finetuned (rotation, scratch) x budgets 16, 48 x seeds x draws
    for name, (_, budget, seed, draw, used) in studies.items():
        assert f":seed{seed}:draw{draw}:" in name
        assert used and used <= set(budget_indices(labels, budget, draw).tolist())
    for cell, source, on, _ in fitted:
        assert on == set(budget_indices(labels, cell.budget, cell.draw).tolist())
        if cell.protocol == "finetune" and cell.budget != "full":
            assert f":seed{cell.seed}:draw{cell.draw}:" in source

    runs = pd.read_csv(tmp_path / "results" / "crossed" / "runs.csv")
    assert len(runs) == len(fitted) == 42 and set(runs.draw) == {0, 1, 2}
    stats = pd.read_csv(tmp_path / "results" / "crossed" / "stats.csv")
    assert set(stats.n) == {2}  # two pretraining seeds, each the mean of its draws

    fitted.clear()
    assert main(["run", str(path), *sets]) == 0
    assert fitted == []  # everything was done: nothing runs again


# ---------------------------------------------------------------- statistics with the right unit

TRUE = {"seed": 0.02, "draw": 0.03, "residual": 0.01}  # standard deviations of the simulated components


def simulate(rng, seeds: int, draws: int, sd=TRUE) -> np.ndarray:
    a = rng.normal(0, sd["seed"], (seeds, 1))
    b = rng.normal(0, sd["draw"], (1, draws))
    return 0.6 + a + b + rng.normal(0, sd["residual"], (seeds, draws))


def test_the_components_of_a_large_simulated_grid_are_the_ones_it_was_made_with():
    comp = components(simulate(np.random.default_rng(0), 60, 60))
    for name, sd in TRUE.items():
        assert comp[name].sd[0] == pytest.approx(sd, rel=0.25), name
        assert comp[name].low < sd**2 < comp[name].high


def test_each_interval_covers_its_true_component_about_as_often_as_it_says():
    rng = np.random.default_rng(1)
    hits = {n: 0 for n in TRUE}
    runs = 400
    for _ in range(runs):
        comp = components(simulate(rng, 4, 5))
        for n, sd in TRUE.items():
            hits[n] += comp[n].low <= sd**2 <= comp[n].high
    for n in TRUE:  # 95% nominal; the modified large-sample intervals are slightly conservative
        assert 0.90 <= hits[n] / runs <= 0.995, (n, hits[n] / runs)


def test_the_estimates_are_statsmodels_reml_on_a_balanced_grid():
    import statsmodels.formula.api as smf

    grid = simulate(np.random.default_rng(2), 8, 8)
    seeds, draws = np.indices(grid.shape)
    frame = pd.DataFrame({"y": grid.ravel(), "seed": seeds.ravel(), "draw": draws.ravel(), "one": 1})
    vc = {"seed": "0 + C(seed)", "draw": "0 + C(draw)"}
    fit = smf.mixedlm("y ~ 1", frame, groups="one", vc_formula=vc, re_formula="0").fit(reml=True)
    reml = dict(zip(fit.model.exog_vc.names, fit.vcomp, strict=True)) | {"residual": fit.scale}
    comp = components(grid)
    for name in TRUE:
        assert comp[name].variance == pytest.approx(reml[name], rel=0.02), name


def test_a_seed_is_the_mean_of_its_draws_and_a_missing_draw_makes_it_missing():
    rows = [
        {
            "task": "t",
            "protocol": "linear",
            "budget": "100",
            "seed": s,
            "draw": d,
            "test_acc": 0.1 * s + 0.01 * d,
            "status": "missing" if (s, d) == (2, 1) else "finished",
            "caveat": "c" if d == 0 else "",
            "n_labels": 100.0,
        }
        for s in range(3)
        for d in range(3)
    ]
    seeds = by_seed(pd.DataFrame(rows))
    assert list(seeds.seed) == [0, 1, 2] and set(seeds.n_draws) == {3}
    assert seeds.test_acc[:2].tolist() == pytest.approx([0.01, 0.11])
    assert seeds.status.tolist() == ["finished", "finished", "missing"] and np.isnan(seeds.test_acc[2])
    assert seeds.caveat[0] == "draw 0: c"
    legacy = pd.DataFrame(rows).assign(draw=lambda f: f.seed).drop_duplicates(["seed"])
    assert by_seed(legacy).drop(columns="n_draws").equals(legacy.drop(columns="draw"))  # without draws: as it was


def test_the_report_gives_the_components_of_each_crossed_cell():
    rng = np.random.default_rng(3)
    grid = simulate(rng, 3, 4)
    rows = [
        {
            "task": "rotation",
            "protocol": "linear",
            "budget": "100",
            "seed": s,
            "draw": d,
            "test_acc": grid[s, d],
            "status": "finished",
        }
        for s in range(3)
        for d in range(4)
    ]
    text = variance_markdown(pd.DataFrame(rows), "demo")
    comp = components(grid)
    assert "| linear | 100 | rotation | 3 x 4 |" in text
    sd, low, high = comp["draw"].sd
    assert f"{100 * sd:.2f} [{100 * low:.2f}, {100 * high:.2f}]" in text
    assert variance_markdown(pd.DataFrame(rows).query("draw == 0"), "demo") is None  # one draw: nothing to split


# ---------------------------------------------------------------- bench plan


def test_power_is_the_paired_t_tests_and_respects_the_exact_tests_granularity():
    from scipy import stats

    spread = Spread(seed=0.02, draw=0.0, residual=0.0)
    assert power(0.5, spread, 3, 1, family=3) == 0.0  # 2/2^3 * 3 > 0.05: no outcome passes
    critical = stats.t.isf(0.05 / 3 / 2, 11)  # the sign-flip test's power is close to the t-test's at 12 seeds
    for delta in (0.01, 0.02):
        expected = stats.nct.sf(critical, 11, delta * math.sqrt(12) / 0.02)
        assert power(delta, spread, 12, 1, family=3) == pytest.approx(expected, abs=0.04)
    assert power(0.0, spread, 12, 1, family=3) < 0.02  # no effect: found about alpha / 2m of the time


def test_draws_buy_power_only_against_the_draw_and_residual_spread():
    draw_bound = Spread(seed=0.002, draw=0.02, residual=0.02)
    assert power(0.02, draw_bound, 7, 8, 3) > power(0.02, draw_bound, 7, 1, 3) + 0.2
    seed_bound = Spread(seed=0.02, draw=0.0, residual=0.0)
    assert power(0.02, seed_bound, 7, 8, 3) == pytest.approx(power(0.02, seed_bound, 7, 1, 3), abs=0.03)


def test_the_plan_recovers_the_spread_of_the_differences_from_a_pilot():
    rng = np.random.default_rng(4)
    seeds, draws = 30, 30
    rows = []
    base = simulate(rng, seeds, draws)
    diff = 0.02 + simulate(rng, seeds, draws, {"seed": 0.01, "draw": 0.02, "residual": 0.005}) - 0.6
    for task, grid in (("scratch", base), ("rotation", base + diff)):
        for s in range(seeds):
            for d in range(draws):
                rows.append(
                    {
                        "task": task,
                        "protocol": "finetune",
                        "budget": "100",
                        "seed": s,
                        "draw": d,
                        "test_acc": grid[s, d],
                        "status": "finished",
                    }
                )
    spread = difference_spreads(pd.DataFrame(rows), "finetune")["100"]
    assert spread.split
    assert (spread.seed, spread.draw, spread.residual) == pytest.approx((0.01, 0.02, 0.005), rel=0.3)


def test_bench_plan_writes_its_table_and_refuses_a_bad_spread(smoke_store, capsys):
    sets = [f"--set={s}" for s in smoke_store.sets]
    assert main(["plan", "smoke", *sets, "--sd", "seed=1,draw=2,residual=1", "--seeds", "5-7", "--draws", "1-4"]) == 0
    plan = (Path(smoke_store.folder) / "results" / "smoke" / "plan.md").read_text()
    assert "| seeds | draws |" in plan and "| 5 |" in plan and "| 7 |" in plan
    assert main(["plan", "smoke", *sets, "--sd", "seeds=1"]) != 0
    assert "unknown component 'seeds'" in capsys.readouterr().out
    assert main(["plan", "smoke", *sets, "--sd", "seed=1,draw=2,residual=1", "--pretrain-epochs", "8"]) == 0
    plan = (Path(smoke_store.folder) / "results" / "smoke" / "plan.md").read_text()
    assert re.search(r"pretraining at 8 epochs: the pilot's \d+ x [\d.]+", plan)


@pytest.mark.slow
def test_bench_curve_runs_one_whole_schedule_per_length_and_writes_the_curve(tmp_path: Path):
    path = tmp_path / "crossed.toml"
    path.write_text(SUITE + "\n[tasks.random]\n")  # scratch has no frozen probe: the curve leaves it out
    sets = [f"--set=results_dir={str(tmp_path / 'results')!r}", f"--set=tracking_uri='sqlite:///{tmp_path}/m.db'"]
    assert main(["curve", str(path), *sets, "--epochs", "1,2", "--budget", "48"]) == 0
    out = tmp_path / "results" / "crossed"
    curve = pd.read_csv(out / "pretrain_curve.csv")
    assert sorted(zip(curve.task, curve.epochs)) == [("random", 1), ("random", 2), ("rotation", 1), ("rotation", 2)]
    steps = dict(zip(curve[curve.task == "rotation"].epochs, curve[curve.task == "rotation"].pretrain_steps))
    assert steps[2] == 2 * steps[1]  # a whole schedule of each length
    assert (out / "pretrain_curve.png").stat().st_size > 0 and "| rotation |" in (out / "pretrain_curve.md").read_text()
    assert not (out / "table.md").exists()  # the suite's report is left alone


def test_plan_costs_the_suites_untimed_tasks_from_the_pilots_others_and_says_so():
    measured = (
        {"rotation": 100.0, "scratch": 0.0},
        {("rotation", "finetune", "100"): 60.0, ("scratch", "finetune", "100"): 40.0},
    )
    kinds = {
        ("rotation", "finetune", "100"),
        ("scratch", "finetune", "100"),
        ("jigsaw", "finetune", "100"),
        ("jigsaw", "linear", "100"),
    }
    pretrain, evals, notes = planning.suite_costs(kinds, {"rotation", "jigsaw"}, measured)
    assert pretrain == {"rotation": 100.0, "jigsaw": 100.0}
    assert evals == {
        ("rotation", "finetune", "100"): 60.0,
        ("scratch", "finetune", "100"): 40.0,
        ("jigsaw", "finetune", "100"): 50.0,
    }
    assert "jigsaw finetune cells as the mean of rotation, scratch's at their budget" in notes
    assert "jigsaw linear cells left out where the pilot has none at the budget" in notes
    assert planning.design_hours(pretrain, evals, seeds=2, draws=3) == pytest.approx((2 * 200 + 2 * 3 * 150) / 3600)


def test_the_curve_names_where_each_task_stopped_improving():
    rows = [("a", e, acc) for e, acc in [(2, 0.30), (4, 0.35), (8, 0.355), (16, 0.358)]]
    rows += [("b", e, acc) for e, acc in [(2, 0.30), (4, 0.305), (8, 0.33), (16, 0.35)]]
    rows += [("c", e, acc) for e, acc in [(2, 0.30), (4, 0.32), (8, 0.30), (16, 0.325)]]
    df = pd.DataFrame(rows, columns=["task", "epochs", "test_acc"])
    assert plateau(df) == {"a": 4, "b": None, "c": 4}  # c: 16 is 0.5 points over 4, below the 1-point bar


def test_the_curve_compares_rankme_with_the_probe_within_each_method():
    rows = [("a", e, acc, r) for e, acc, r in [(2, 0.30, 10.0), (4, 0.35, 12.0), (8, 0.36, 15.0)]]
    rows += [("b", e, acc, r) for e, acc, r in [(2, 0.30, 30.0), (4, 0.32, 20.0), (8, 0.33, 10.0)]]
    rows += [("random", e, 0.2, float("nan")) for e in (2, 4, 8)]
    lines = rankme_lines(pd.DataFrame(rows, columns=["task", "epochs", "test_acc", "rankme"]))
    assert "| a | 10.0 | 12.0 | 15.0 |" in lines
    assert any("a +1.00, b -1.00; mean +0.00" in line for line in lines)
