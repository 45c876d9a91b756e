"""The end-of-run table: task x budget per protocol, mean and standard deviation of test accuracy over seeds."""

from __future__ import annotations

import numpy as np

from bench.tracking import Tracker


def summary_tables(tracker: Tracker, cells: list) -> str:
    """Markdown tables from the finished evaluation runs of ``cells``; missing cells are shown and counted."""
    finished = tracker.finished()
    evals = [c for c in cells if c.kind == "eval"]
    budgets = list(dict.fromkeys(c.budget for c in evals))
    blocks, missing = [], 0
    for protocol in dict.fromkeys(c.protocol for c in evals):
        tasks = list(dict.fromkeys(c.task for c in evals if c.protocol == protocol))
        lines = [
            f"test accuracy, protocol {protocol} (mean ± sd over seeds, n seeds)",
            "",
            "| task | " + " | ".join(f"{b} labels" if b != "full" else "full" for b in budgets) + " |",
            "|---|" + "---:|" * len(budgets),
        ]
        for task in tasks:
            row = []
            for b in budgets:
                these = [c for c in evals if (c.task, c.protocol, c.budget) == (task, protocol, b)]
                accs = [float(finished[c.key].data.metrics["test_acc"]) for c in these if c.key in finished]
                missing += len(these) - len(accs)
                if not these:
                    row.append("")
                elif not accs:
                    row.append("—")
                else:
                    sd = f" ± {np.std(accs, ddof=1):.4f}" if len(accs) > 1 else ""  # no spread from one seed
                    gap = "" if len(accs) == len(these) else f" of {len(these)}"
                    row.append(f"{np.mean(accs):.4f}{sd} (n={len(accs)}{gap})")
            lines.append(f"| {task} | " + " | ".join(row) + " |")
        blocks.append("\n".join(lines))
    if missing:
        blocks.append(
            f"PARTIAL: {missing} of {len(evals)} evaluation cells have no finished run (shown as — or n=k of m)"
        )
    return "\n\n".join(blocks)
