"""What ``bench run --dry-run`` prints: per task, its cells done and to run (and how many of those have results
from other code or data, with the reasons counted); every cell with its key and state under ``--verbose``."""

from __future__ import annotations

from collections import Counter

from rich.console import Console
from rich.markup import escape

from bench.cell import Cell

REASONS_SHOWN = 10  # distinct staleness reasons listed in the summary; the rest are counted


def print_plan(console: Console, cells: list[Cell], done: set[str], reasons: dict[str, str], verbose: bool) -> None:
    if verbose:
        for c in cells:
            why = f"  [yellow]stale: {escape(reasons[c.key])}[/]" if c.key in reasons else ""
            state = "done" if c.key in done else "todo"
            console.print(f"  {state}  {escape(c.label)}  [dim]{c.key}[/]{why}", soft_wrap=True)
    else:
        per_task: dict[str, Counter] = {}
        for c in cells:
            counts = per_task.setdefault(c.task, Counter())
            counts["done" if c.key in done else "todo"] += 1
            counts["stale"] += c.key in reasons
        width = max(len(t) for t in per_task) if per_task else 0
        for task, n in per_task.items():
            stale = f" ({n['stale']} with results from other code or data)" if n["stale"] else ""
            line = f"  {escape(task):<{width}}  {n['done']:>5} done  {n['todo']:>5} to run{stale}"
            console.print(line, soft_wrap=True)
        by_reason = Counter(why.rsplit(" since run ", 1)[0] for why in reasons.values()).most_common()  # run ids apart
        for reason, n in by_reason[:REASONS_SHOWN]:
            console.print(f"  [yellow]stale: {escape(reason)}[/] ({n} cell{'s' if n > 1 else ''})", soft_wrap=True)
        if len(by_reason) > REASONS_SHOWN:
            console.print(f"  ... and {len(by_reason) - REASONS_SHOWN} other reasons")
        console.print("  [dim]every cell with its key: --verbose[/]")
    if reasons:
        console.print(f"{len(reasons)} cell(s) have results from other code or data; they will rerun")
