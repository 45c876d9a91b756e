"""What each task's pretraining cost, beside what it scored: ``cost.md`` of a report.

Per task, means over the seeds that pretrained it: optimiser steps, source images seen (not views), wall seconds
of training and device-seconds (wall seconds of training x the devices it held, one per cell), as the pretraining
runs logged them (``bench.train.loop.cost``); baselines pretrain nothing and cost 0. Beside them, the task's test
accuracy under each protocol at each budget (mean, interval and n as in ``table.md``). A suite that fixes
``pretrain.steps`` or ``pretrain.images`` gives every task the same steps and images, so its tasks are compared at
equal cost in those terms; their seconds still differ.
"""

from __future__ import annotations

import math

import pandas as pd

from bench.report.comparisons import budget_label, budget_order, protocol_order, title
from bench.report.stats import interval
from bench.report.tidy import COST

COLUMNS = {
    "pretrain_steps": "steps",
    "pretrain_images_seen": "images seen",
    "pretrain_wall_s": "wall s",
    "pretrain_device_s": "device s",
}


def per_task(df: pd.DataFrame) -> pd.DataFrame:
    """Task -> mean of each cost column over its seeds (one value per (task, seed); NaN where no run logged it)."""
    seeds = df.drop_duplicates(["task", "seed"])
    return seeds.groupby("task", sort=False)[list(COST)].mean()


def _number(value: float, column: str) -> str:
    if math.isnan(value):
        return "—"
    return f"{value:,.1f}" if column.endswith("_s") else f"{value:,.0f}"


def _accuracy(values: pd.Series) -> str:
    iv = interval(values)
    if iv.n == 0:
        return "—"
    spread = f" {'range ' if iv.method == 'range' else ''}[{iv.low:.3f}, {iv.high:.3f}]" if iv.n > 1 else ""
    return f"{iv.mean:.4f}{spread} (n={iv.n})"


def _equal_compute(costs: pd.DataFrame, pretrained: list[str]) -> str:
    """Whether the pretraining tasks ran the same steps and images: the sentence that says so."""
    steps = costs.loc[pretrained, "pretrain_steps"].dropna().unique()
    images = costs.loc[pretrained, "pretrain_images_seen"].dropna().unique()
    if len(pretrained) < 2:
        return ""
    if len(steps) == 1 and len(images) == 1:
        return (
            f"Every pretraining task ran the same {steps[0]:,.0f} optimiser steps ({images[0]:,.0f} images): the "
            "accuracies below compare them at equal compute in steps and images."
        )
    return "The pretraining tasks ran different numbers of steps or images: compare their accuracies with the cost."


def cost_markdown(df: pd.DataFrame) -> str | None:
    """cost.md, or None when the table has no cost columns or no finished evaluation."""
    if not set(COST) <= set(df.columns) or df.test_acc.notna().sum() == 0:
        return None
    costs = per_task(df)
    pretrained = [t for t in costs.index if costs.loc[t, "pretrain_steps"] != 0]
    budgets = budget_order(df)
    lines = [
        f"# Pretraining cost beside accuracy: {title(df)}",
        "",
        "Per task, means over its seeds: optimiser steps, source images seen (not views), wall seconds of training "
        "(health measurements excluded) and device-seconds (wall seconds x devices held, one per pretraining) of "
        "its pretraining; baselines pretrain nothing (0). Then test accuracy at each budget: mean [95% Student-t "
        "interval from 3 seeds on; the seeds' range, marked, with 2] (n seeds).",
    ]
    sentence = _equal_compute(costs, pretrained)
    lines += ["", sentence] if sentence else []
    head = ["task", *COLUMNS.values(), *(budget_label(b, df) for b in budgets)]
    for protocol in protocol_order(df):
        sub = df[df.protocol == protocol]
        lines += ["", f"## {protocol}", "", "| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
        for task in sub.task.unique():
            cells = [_number(costs.loc[task, c], c) for c in COLUMNS]
            rows = sub[sub.task == task]
            cells += [_accuracy(rows.test_acc[rows.budget == b]) for b in budgets]
            lines.append(f"| {task} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def cost_files(df: pd.DataFrame) -> dict[str, str]:
    """The report files of this module: {"cost.md": text}, or none."""
    text = cost_markdown(df)
    return {} if text is None else {"cost.md": text}
