"""Does a label-free health measure rank the pretext tasks the way test accuracy does? ``health.md`` and the
``health_vs_accuracy`` figure of a report.

For each protocol and budget: every pretraining task's final RankMe (the last logged value of its pretraining
run, mean over seeds) against its test accuracy (mean over seeds), with Spearman's rho and Kendall's tau across
tasks (scipy.stats) and their two-sided p-values. Baselines have no pretraining and so no RankMe; they are left
out. With fewer than ``MIN_TASKS`` tasks a rank correlation cannot reach p < 0.05 whatever the data (Spearman's
smallest exact p with n = 4 is 1/12 two-sided), and the file says so instead of reporting one.
"""

from __future__ import annotations

import math

import pandas as pd
from scipy import stats

MIN_TASKS = 5  # the fewest tasks with which a perfect rank agreement gives p < 0.05 (exact, two-sided: 1/60)


def per_task(df: pd.DataFrame) -> pd.DataFrame:
    """Mean final RankMe and mean test accuracy per (protocol, budget, task), over the seeds that have both."""
    have = df.dropna(subset=["rankme", "test_acc"])
    grouped = have.groupby(["protocol", "budget", "task"], sort=False)
    return grouped.agg(
        rankme=("rankme", "mean"), test_acc=("test_acc", "mean"), seeds=("seed", "nunique")
    ).reset_index()


def correlations(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (protocol, budget): n tasks, Spearman's rho and Kendall's tau with their p-values (NaN when
    n < MIN_TASKS or a column is constant)."""
    rows = []
    for (protocol, budget), g in per_task(df).groupby(["protocol", "budget"], sort=False):
        row = {"protocol": protocol, "budget": budget, "n_tasks": len(g)}
        enough = len(g) >= MIN_TASKS and g.rankme.nunique() > 1 and g.test_acc.nunique() > 1
        rho = stats.spearmanr(g.rankme, g.test_acc) if enough else None
        tau = stats.kendalltau(g.rankme, g.test_acc) if enough else None
        row |= {
            "spearman_rho": rho.statistic if rho else math.nan,
            "spearman_p": rho.pvalue if rho else math.nan,
            "kendall_tau": tau.statistic if tau else math.nan,
            "kendall_p": tau.pvalue if tau else math.nan,
        }
        rows.append(row)
    return pd.DataFrame(rows)


def health_markdown(df: pd.DataFrame) -> str | None:
    """health.md, or None when no pretraining run logged RankMe."""
    if "rankme" not in df or df.rankme.notna().sum() == 0:
        return None
    corr = correlations(df)
    lines = [
        "**Label-free health against test accuracy.** Final RankMe of each task's pretraining (no labels) against "
        "its test accuracy, means over seeds; rank correlations across tasks (scipy.stats.spearmanr, kendalltau; "
        "two-sided p). Baselines have no pretraining and are not included.",
        "",
        "| protocol | budget | tasks | Spearman rho (p) | Kendall tau (p) |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in corr.itertuples():
        if math.isnan(r.spearman_rho):
            why = "too few tasks" if r.n_tasks < MIN_TASKS else "no spread"
            lines.append(f"| {r.protocol} | {r.budget} | {r.n_tasks} | — ({why}) | — ({why}) |")
        else:
            lines.append(
                f"| {r.protocol} | {r.budget} | {r.n_tasks} | {r.spearman_rho:+.2f} ({r.spearman_p:.3f}) "
                f"| {r.kendall_tau:+.2f} ({r.kendall_p:.3f}) |"
            )
    if (corr.n_tasks < MIN_TASKS).any():
        lines += [
            "",
            f"With fewer than {MIN_TASKS} pretraining tasks no rank correlation can reach p < 0.05, whatever the "
            "data: none is reported for those rows.",
        ]
    lines += ["", "Per task (means over seeds):", "", "| protocol | budget | task | RankMe | test_acc | seeds |"]
    lines.append("|---|---:|---|---:|---:|---:|")
    for r in per_task(df).itertuples():
        lines.append(f"| {r.protocol} | {r.budget} | {r.task} | {r.rankme:.1f} | {r.test_acc:.4f} | {r.seeds} |")
    return "\n".join(lines) + "\n"
