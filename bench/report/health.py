"""Does a label-free health measure rank the pretext tasks the way test accuracy does? ``health.md`` and the
``health_vs_accuracy`` figure of a report.

For each protocol and budget: every pretraining task's final RankMe (the last logged value of its pretraining
run, mean over seeds) against its test accuracy (mean over seeds), with Spearman's rho and Kendall's tau across
tasks and their two-sided p-values (scipy.stats: a permutation test for Spearman, kendalltau for Kendall).
Baselines have no pretraining and so no RankMe; they are left out. With fewer than ``MIN_TASKS`` tasks a rank
correlation cannot reach p < 0.05 whatever the data (Spearman's smallest exact p with n = 4 is 1/12 two-sided),
and the file says so instead of reporting one.

RankMe was proposed to choose among runs of one method (Garrido et al., 2023, "RankMe: assessing the downstream
performance of pretrained self-supervised representations by their rank"), so the file also compares it *within*
each method: Spearman's rho across each task's own runs (its pretraining seeds), averaged over the tasks, with a
p-value from permuting the accuracies within each task (scipy's permutation_test has no strata, hence
``stratified_p``).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

RESAMPLES = 99_999
MIN_RUNS = 2  # runs of one task (seeds) for a within-method rank; with 2 each task's rho is +1 or -1
MIN_TASKS = 5  # the fewest tasks with which a perfect rank agreement gives p < 0.05 (exact, two-sided: 1/60)
MIN_DRAWN = 3  # the fewest tasks a health_vs_accuracy panel is drawn for: fewer show no ranking


def per_task(df: pd.DataFrame) -> pd.DataFrame:
    """Mean final RankMe and mean test accuracy per (protocol, budget, task), over the seeds that have both."""
    have = df.dropna(subset=["rankme", "test_acc"])
    grouped = have.groupby(["protocol", "budget", "task"], sort=False)
    columns = {"rankme": ("rankme", "mean"), "test_acc": ("test_acc", "mean"), "seeds": ("seed", "nunique")}
    for extra in ("collapse_std", "health_cost"):
        if extra in df:
            columns[extra] = (extra, "mean")
    return grouped.agg(**columns).reset_index()


def spearman(x: np.ndarray, y: np.ndarray):
    """Spearman's rho with a permutation p-value (two-sided): exact over all n! pairings up to 8 tasks, else
    ``RESAMPLES`` random pairings (seeded). scipy.stats.spearmanr's p comes from a t approximation, which is poor
    for a dozen tasks."""

    def rho(a, b, axis):
        ra, rb = stats.rankdata(a, axis=axis), stats.rankdata(b, axis=axis)
        ra = ra - ra.mean(axis=axis, keepdims=True)
        rb = rb - rb.mean(axis=axis, keepdims=True)
        return (ra * rb).sum(axis=axis) / np.sqrt((ra**2).sum(axis=axis) * (rb**2).sum(axis=axis))

    # one sample: its order is permuted against the fixed x, so there are n! pairings (two samples would be n!^2)
    return stats.permutation_test(
        (y,),
        lambda b, axis: rho(x, b, axis),
        permutation_type="pairings",
        vectorized=True,
        n_resamples=RESAMPLES,
        rng=0,
    )


def correlations(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (protocol, budget): n tasks, Spearman's rho and Kendall's tau with their p-values (NaN when
    n < MIN_TASKS or a column is constant)."""
    rows = []
    for (protocol, budget), g in per_task(df).groupby(["protocol", "budget"], sort=False):
        row = {"protocol": protocol, "budget": budget, "n_tasks": len(g)}
        enough = len(g) >= MIN_TASKS and g.rankme.nunique() > 1 and g.test_acc.nunique() > 1
        rho = spearman(g.rankme.to_numpy(), g.test_acc.to_numpy()) if enough else None
        tau = stats.kendalltau(g.rankme, g.test_acc) if enough else None
        row |= {
            "spearman_rho": rho.statistic if rho else math.nan,
            "spearman_p": rho.pvalue if rho else math.nan,
            "kendall_tau": tau.statistic if tau else math.nan,
            "kendall_p": tau.pvalue if tau else math.nan,
        }
        rows.append(row)
    return pd.DataFrame(rows)


def within_methods(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (protocol, budget): RankMe against test accuracy across the runs of each pretraining task (one
    row of ``df`` per task and seed), Spearman's rho within each task averaged over the tasks with at least
    ``MIN_RUNS`` runs and some spread, and its two-sided stratified permutation p (NaN without such a task)."""
    rows = []
    have = df.dropna(subset=["rankme", "test_acc"])
    for (protocol, budget), g in have.groupby(["protocol", "budget"], sort=False):
        pairs = [
            (t.rankme.to_numpy(float), t.test_acc.to_numpy(float))
            for _, t in g.groupby("task", sort=False)
            if len(t) >= MIN_RUNS and t.rankme.nunique() > 1 and t.test_acc.nunique() > 1
        ]
        rho, p = stratified_p(pairs) if pairs else (math.nan, math.nan)
        runs = int(g.groupby("task").size().max())
        rows.append(
            {"protocol": protocol, "budget": budget, "n_tasks": len(pairs), "max_runs": runs, "rho": rho, "p": p}
        )
    return pd.DataFrame(rows)


def stratified_p(pairs: list[tuple[np.ndarray, np.ndarray]], resamples: int = RESAMPLES) -> tuple[float, float]:
    """Mean within-group Spearman's rho over ``pairs`` (one (x, y) per group) and its two-sided p: each resample
    shuffles y within every group independently (seeded), p = (1 + resamples at least as extreme) / (1 + resamples)."""
    rng = np.random.default_rng(0)
    observed, null = 0.0, np.zeros(resamples)
    for x, y in pairs:
        rx = stats.rankdata(x) - (len(x) + 1) / 2
        ry = stats.rankdata(y) - (len(y) + 1) / 2
        scale = np.sqrt((rx**2).sum() * (ry**2).sum())
        observed += (rx * ry).sum() / scale
        shuffled = rng.permuted(np.tile(ry, (resamples, 1)), axis=1)
        null += shuffled @ rx / scale
    observed, null = observed / len(pairs), null / len(pairs)
    extreme = (np.abs(null) >= abs(observed) - 1e-12).sum()
    return observed, (1 + extreme) / (1 + resamples)


def has_health(df: pd.DataFrame) -> bool:
    """Whether any pretraining task has both a logged RankMe and a finished evaluation."""
    return "rankme" in df and len(per_task(df)) > 0


def why_none(n_tasks: int) -> str:
    """Why a row has no correlation (correlations() leaves it NaN)."""
    return f"too few tasks (n = {n_tasks} < {MIN_TASKS})" if n_tasks < MIN_TASKS else f"no spread (n = {n_tasks})"


def health_markdown(df: pd.DataFrame) -> str | None:
    """health.md, or None when no pretraining task has both RankMe and a finished evaluation."""
    if not has_health(df):
        return None
    corr = correlations(df)
    lines = [
        "**Label-free health against test accuracy.** Final RankMe of each task's pretraining (no labels) against "
        "its test accuracy, means over seeds; rank correlations across tasks, two-sided p: Spearman's by "
        f"permutation of the tasks (exact up to 8 tasks, else {RESAMPLES:,} random pairings), Kendall's by "
        "scipy.stats.kendalltau (exact without ties). Baselines have no pretraining and are not included.",
    ]
    few, enough = corr[corr.n_tasks < MIN_TASKS], corr[corr.n_tasks >= MIN_TASKS]
    if len(enough):
        lines += ["", "| protocol | budget | tasks | Spearman rho (p) | Kendall tau (p) |", "|---|---:|---:|---:|---:|"]
    for r in enough.itertuples():
        if math.isnan(r.spearman_rho):
            lines.append(f"| {r.protocol} | {r.budget} | {r.n_tasks} | — (no spread) | — (no spread) |")
        else:
            lines.append(
                f"| {r.protocol} | {r.budget} | {r.n_tasks} | {r.spearman_rho:+.2f} ({r.spearman_p:.3f}) "
                f"| {r.kendall_tau:+.2f} ({r.kendall_p:.3f}) |"
            )
    if len(few):
        counts = sorted({int(n) for n in few.n_tasks})
        where = "any budget" if len(few) == len(corr) else f"{len(few)} of the {len(corr)} protocol x budget pairs"
        lines += [
            "",
            f"Not computed at {where}: {' or '.join(map(str, counts))} pretraining task"
            f"{'s' if counts != [1] else ''} there, and with fewer than {MIN_TASKS} no rank correlation can reach "
            f"p < 0.05, whatever the data.",
        ]
    if not (corr.n_tasks >= MIN_DRAWN).any():
        lines += ["", f"No health_vs_accuracy figure: a panel needs at least {MIN_DRAWN} pretraining tasks."]
    if len(enough) > 1:
        lines += [
            "",
            f"Each p-value is for its row alone, not corrected for the {len(enough)} rows; the rows rank the same "
            "tasks' RankMe, so they are not independent tests.",
        ]
    lines += ["", *within_markdown(within_methods(df))]
    sizes = sorted({int(n) for n in df.get("health_images", pd.Series(dtype=float)).dropna()})
    if len(sizes) > 1:
        lines += [
            "",
            f"**Not comparable:** the pretraining runs measured RankMe on samples of different sizes ({sizes}); "
            "RankMe is at most the sample size, so rerun them with one `pretrain.health_images`.",
        ]
    lines += ["", *per_task_table(per_task(df), df)]
    return "\n".join(lines) + "\n"


def within_markdown(within: pd.DataFrame) -> list[str]:
    """The within-method table of health.md."""
    lines = [
        "**Within each method.** RankMe was proposed to choose among runs of one method: Spearman's rho between "
        "RankMe and test accuracy across each task's own runs (its pretraining seeds, label draws averaged), "
        f"averaged over the tasks with at least {MIN_RUNS} runs; two-sided p from {RESAMPLES:,} permutations of the "
        "accuracies within each task (seeded). The runs of a task differ only in their seeds, so this asks whether "
        "RankMe sees run-to-run differences, a finer question than ranking methods.",
        "",
        "| protocol | budget | tasks | runs per task | mean rho within (p) |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in within.itertuples():
        value = f"{r.rho:+.2f} ({r.p:.3f})" if not math.isnan(r.rho) else f"— (needs {MIN_RUNS} seeds with a spread)"
        lines.append(f"| {r.protocol} | {r.budget} | {r.n_tasks} | {r.max_runs} | {value} |")
    return lines


def per_task_table(points: pd.DataFrame, df: pd.DataFrame) -> list[str]:
    """One row per task, highest RankMe first: its health (mean over the seeds that pretrained it, one value per
    seed) and its test accuracy at each protocol and budget (``points``: per_task)."""
    measures = {"rankme": "RankMe", "collapse_std": "collapse_std", "health_cost": "cost"}
    measures = {c: name for c, name in measures.items() if c in df}
    pretrained = df.dropna(subset=["rankme"]).drop_duplicates(["task", "seed"])
    health = pretrained[pretrained.task.isin(points.task)].groupby("task", sort=False)[list(measures)].mean()
    acc = points.pivot_table(index="task", columns=["protocol", "budget"], values="test_acc", sort=False)
    acc.columns = [f"{protocol} {budget}" for protocol, budget in acc.columns]
    seeds = int(points.seeds.max())
    table = health.join(acc).sort_values("rankme", ascending=False)
    head = ["task", *measures.values(), *acc.columns]
    lines = [
        f"Per task, highest RankMe first (means over seeds, at most {seeds}): collapse_std is lightly's "
        "std_of_l2_normalized (0 when collapsed, 1/sqrt(dim) for isotropic features, which non-negative "
        "features after a ReLU cannot reach); cost is the measurements' time "
        "over the pretraining's training time (all epochs); then test accuracy.",
        "",
        "| " + " | ".join(head) + " |",
        "|---|" + "---:|" * (len(head) - 1),
    ]
    formats = {"rankme": "{:.1f}", "collapse_std": "{:.4f}", "health_cost": "{:.1%}"}
    for task, row in table.iterrows():
        cells = ["—" if pd.isna(row[c]) else formats.get(c, "{:.4f}").format(row[c]) for c in [*measures, *acc.columns]]
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    return lines
