"""A report table's cells: mean, interval and n per (task, budget), the markers of each comparison's verdict,
and the symbols of Markdown, LaTeX and plain text."""

from __future__ import annotations

import pandas as pd

from bench.report.caveats import flagged_cells
from bench.report.comparisons import budget_order
from bench.report.stats import interval
from bench.report.tidy import REFERENCE

# ---------------------------------------------------------------------------------------------- table cells

# ▲/▼/≈ against scratch+finetune (labels only); △/▽/≃ against random under the same frozen protocol
MD = {
    "up": "▲",
    "down": "▼",
    "equiv": "≈",
    "up_random": "△",
    "down_random": "▽",
    "equiv_random": "≃",
    "range": "range",
    "lt": "<",
    "partial": "(n=k of m)",
    "bold": "**{}**",
    "x": "×",
    "caveat": "†",
}
TEX = {
    "up": "$\\uparrow$",
    "down": "$\\downarrow$",
    "equiv": "$\\approx$",
    "up_random": "$\\bigtriangleup$",
    "down_random": "$\\bigtriangledown$",
    "equiv_random": "$\\simeq$",
    "range": "$^{\\dagger}$",
    "lt": "$<$",
    "partial": "$^{*}$",
    "bold": "\\textbf{{{}}}",
    "x": "$\\times$",
    "caveat": "$^{\\ddagger}$",
}
TEXT = MD | {"bold": "{}"}
SYMBOL = {"better": "up", "worse": "down", "equivalent": "equiv"}  # verdict -> symbol key


def table_cells(df: pd.DataFrame, comp: pd.DataFrame, protocol: str) -> dict:
    """{task: {budget: (Interval, planned, markers)}} for one protocol; ``markers`` holds symbol keys separated
    by spaces: against scratch+finetune ("up", "down", "equiv") and against random of a frozen protocol
    ("up_random", "down_random", "equiv_random"), and "caveat" where a run of the cell has one
    (:mod:`bench.report.caveats`)."""
    table = {}
    sub = df[df.protocol == protocol]
    marks: dict = {}
    if len(comp):
        mine = comp[(comp.protocol == protocol) & comp.verdict.isin(SYMBOL)]
        for r in sorted(mine.itertuples(), key=lambda r: r.baseline != REFERENCE[0]):  # ▲/▼/≈ first
            key = SYMBOL[r.verdict] if r.baseline == REFERENCE[0] else f"{SYMBOL[r.verdict]}_{r.baseline}"
            marks[(r.task, r.budget)] = (marks.get((r.task, r.budget), "") + " " + key).strip()
    for task, of, budget in flagged_cells(df):
        if of == protocol:
            marks[(task, budget)] = (marks.get((task, budget), "") + " caveat").strip()
    for task, grp in sub.groupby("task", sort=False):
        table[task] = {}
        for budget in budget_order(df):
            cell = grp[grp.budget == budget]
            if not cell.empty:
                table[task][budget] = (interval(cell.test_acc), len(cell), marks.get((task, budget), ""))
    return table


def best_per_column(table: dict, budgets: list[str]) -> dict:
    return {b: max((v[b][0].mean for v in table.values() if b in v and v[b][0].n), default=None) for b in budgets}


def cell_text(iv, planned: int, marker: str, best: bool, sym: dict) -> str:
    """One table cell: mean [interval] (n), in fractions; ``sym`` selects Markdown or plain text."""
    if iv.n == 0:
        return f"— (0 of {planned})"
    mean = sym["bold"].format(f"{iv.mean:.4f}") if best else f"{iv.mean:.4f}"
    ci = f" {'range ' if iv.method == 'range' else ''}[{iv.low:.3f}, {iv.high:.3f}]" if iv.n > 1 else ""
    gap = f" of {planned}" if iv.n < planned else ""
    mark = "".join(f" {sym[m]}" for m in marker.split())
    return f"{mean}{ci} (n={iv.n}{gap}){mark}"
