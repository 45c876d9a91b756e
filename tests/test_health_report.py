"""health.md: rank correlations of final RankMe and test accuracy across tasks, and when there are too few."""

import math

import numpy as np
import pandas as pd
import pytest

from bench.report.health import MIN_TASKS, correlations, health_markdown, stratified_p, within_methods


def frame(tasks: int, flip: bool = False) -> pd.DataFrame:
    rows = []
    for i in range(tasks):
        for seed in (0, 1):
            acc = 0.3 + 0.05 * i + 0.001 * seed
            rows.append(
                {
                    "task": f"t{i}",
                    "protocol": "linear",
                    "budget": "100",
                    "seed": seed,
                    "test_acc": acc,
                    "rankme": (tasks - i if flip else i + 1) * 10.0 + seed,
                }  # fmt: skip
            )
    rows.append({"task": "scratch", "protocol": "linear", "budget": "100", "seed": 0, "test_acc": 0.2})
    return pd.DataFrame(rows)


def test_tasks_ranked_alike_by_rankme_and_accuracy_correlate_perfectly():
    (row,) = correlations(frame(6)).itertuples()
    assert row.n_tasks == 6  # the baseline, without pretraining, is not a point
    assert row.spearman_rho == pytest.approx(1.0) and row.kendall_tau == pytest.approx(1.0)
    assert row.spearman_p < 0.01 and row.kendall_p < 0.01
    (reverse,) = correlations(frame(6, flip=True)).itertuples()
    assert reverse.spearman_rho == pytest.approx(-1.0)


def test_too_few_tasks_give_no_correlation_and_say_so():
    (row,) = correlations(frame(MIN_TASKS - 1)).itertuples()
    assert math.isnan(row.spearman_rho) and math.isnan(row.kendall_p)
    text = health_markdown(frame(MIN_TASKS - 1))
    assert "Spearman rho" not in text and "too few" not in text  # no table of rows that cannot be computed
    assert (
        f"Not computed at any budget: {MIN_TASKS - 1} pretraining tasks there, and with fewer than {MIN_TASKS}" in text
    )
    assert text.count(f"fewer than {MIN_TASKS}") == 1  # said once


def test_no_health_logged_writes_no_file():
    df = frame(6)
    df["rankme"] = float("nan")
    assert health_markdown(df) is None


def test_the_figure_names_the_correlation_or_why_there_is_none(tmp_path):
    from bench.report.figures import health_vs_accuracy

    df = pd.concat([frame(6), frame(3).assign(budget="full"), frame(2).assign(budget="5000")])
    df["suite"], df["dataset"], df["status"] = "demo", "cifar10", "finished"
    fig = health_vs_accuracy(df)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert any("Spearman +1.00" in t and "n = 6" in t for t in titles)
    assert any("too few tasks (n = 3" in t for t in titles)
    assert len(titles) == 2 and not any("5000" in t for t in titles)  # 2 tasks: no panel
    assert "No health_vs_accuracy figure" not in health_markdown(df)
    few = frame(2).assign(suite="demo", dataset="cifar10", status="finished")
    assert health_vs_accuracy(few) is None and "No health_vs_accuracy figure" in health_markdown(few)
    nothing = frame(6).assign(rankme=float("nan"), suite="demo", dataset="cifar10", status="finished")
    assert health_vs_accuracy(nothing) is None


def test_spearman_p_is_exact_over_all_pairings_for_few_tasks():
    from bench.report.health import spearman

    x = np.arange(6.0)
    perfect = spearman(x, x)
    assert perfect.statistic == pytest.approx(1.0)
    assert perfect.pvalue == pytest.approx(2 / math.factorial(6))  # only the identity and its reverse are as extreme
    assert spearman(np.arange(4.0), np.arange(4.0)).pvalue == pytest.approx(1 / 12)  # why MIN_TASKS is 5
    assert spearman(x, x[::-1].copy()).statistic == pytest.approx(-1.0)


def test_health_of_tasks_without_a_finished_evaluation_writes_nothing():
    df = frame(6)
    df.loc[df.task != "scratch", "test_acc"] = float("nan")  # only the baseline has finished
    df["suite"], df["dataset"], df["status"] = "demo", "cifar10", "finished"
    from bench.report.figures import health_vs_accuracy

    assert health_markdown(df) is None and health_vs_accuracy(df) is None


def test_the_figure_says_no_spread_when_every_task_has_one_rankme():
    from bench.report.figures import health_vs_accuracy

    df = frame(6).assign(suite="demo", dataset="cifar10", status="finished")
    df.loc[df.rankme.notna(), "rankme"] = 50.0
    (title,) = [ax.get_title() for ax in health_vs_accuracy(df).axes]
    assert "no spread (n = 6)" in title and "too few" not in title


def test_the_per_task_rankme_is_the_mean_over_the_seeds_that_pretrained_it():
    df = frame(6)
    df.loc[(df.task == "t0") & (df.seed == 1), "test_acc"] = float("nan")  # seed 1 of t0 not evaluated yet
    df = pd.concat([df, df.assign(budget="full")])
    row = next(line for line in health_markdown(df).splitlines() if line.startswith("| t0 |"))
    assert row.split(" | ")[1] == "10.5"  # (10 + 11) / 2: one value per seed, not a mean of budgets' means


def test_rankme_from_samples_of_different_sizes_is_flagged():
    df = frame(6).assign(health_images=2048.0)
    assert "Not comparable" not in health_markdown(df)
    df.loc[df.task == "t0", "health_images"] = 256.0
    assert "**Not comparable:** the pretraining runs measured RankMe on samples of different sizes ([256, 2048])" in (
        health_markdown(df)
    )


def runs_of_methods(slope: float, rng: np.random.Generator, tasks: int = 3, seeds: int = 5) -> pd.DataFrame:
    """Tasks whose means are ranked against their RankMe, and whose seeds follow RankMe with ``slope``."""
    rows = []
    for i in range(tasks):
        rankme = 50.0 - 10 * i + rng.normal(0, 1, seeds)
        acc = 0.3 + 0.05 * i + slope * (rankme - rankme.mean()) + rng.normal(0, 0.001, seeds)
        rows += [
            {"task": f"t{i}", "protocol": "linear", "budget": "100", "seed": s, "rankme": r, "test_acc": a}
            for s, (r, a) in enumerate(zip(rankme, acc))
        ]
    return pd.DataFrame(rows)


def test_within_methods_sees_the_order_of_each_tasks_seeds_even_when_the_tasks_rank_the_other_way():
    df = runs_of_methods(slope=0.01, rng=np.random.default_rng(1))
    (across,) = correlations(df).itertuples()
    (within,) = within_methods(df).itertuples()
    assert within.n_tasks == 3 and within.max_runs == 5
    assert within.rho == pytest.approx(1.0) and within.p < 0.001  # 1 / (5!)^3 pairings agree this well
    assert "| linear | 100 | 3 | 5 | +1.00 (" in health_markdown(df)
    assert math.isnan(across.spearman_rho)  # three tasks are too few across methods


def test_within_methods_rejects_at_its_level_when_rankme_says_nothing_about_a_run():
    rng = np.random.default_rng(2)
    ps = [
        stratified_p([(rng.normal(size=4), rng.normal(size=4)) for _ in range(3)], resamples=999)[1] for _ in range(300)
    ]
    rate = np.mean(np.array(ps) < 0.05)
    assert 0.02 <= rate <= 0.09  # 5% of 300: binomial sd 1.3 points


def test_one_seed_per_task_has_no_within_method_rank_and_says_why():
    df = frame(6).query("seed == 0")
    (within,) = within_methods(df).itertuples()
    assert within.n_tasks == 0 and math.isnan(within.rho)
    assert "— (needs 2 seeds with a spread)" in health_markdown(df)
