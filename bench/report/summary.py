"""The end-of-run console summary: the report's tables as rich tables, from the same tidy table, with the same
intervals, markers and captions as ``table.md``, then the verdicts of ``verdicts.md`` (:mod:`bench.report`)."""

from __future__ import annotations

import io

import pandas as pd
from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text

from bench.cell import Cell
from bench.report.captions import caption
from bench.report.comparisons import budget_label, budget_order, comparisons, protocol_order
from bench.report.stats import MARGIN
from bench.report.table_cells import TEXT, best_per_column, cell_text, table_cells
from bench.report.tables import partial_note
from bench.report.tidy import by_seed, tidy
from bench.report.verdicts import family_verdicts, legend
from bench.store.tracking import Tracker


def summary_renderables(df: pd.DataFrame, margin: float = MARGIN) -> list[RenderableType]:
    """One rich table per protocol (task x budget; best per column in bold), the verdicts (one line per
    protocol, baseline and budget; ``margin``: the equivalence margin), then the partial and provenance notes.
    Text is never parsed as rich markup."""
    if df.empty:
        return []
    df = by_seed(df)  # pretraining seeds, draws averaged
    comp = comparisons(df, margin)
    budgets = budget_order(df)
    out: list[RenderableType] = []
    for protocol in protocol_order(df):
        cells = table_cells(df, comp, protocol)
        best = best_per_column(cells, budgets)
        mixed = len({v[0].method for row in cells.values() for v in row.values() if v[0].n > 1}) > 1
        table = Table()  # title and caption printed beside it, at the console's width, not the table's
        table.add_column("task")
        for b in budgets:
            table.add_column(budget_label(b, df).removesuffix(" labels").replace(" labels)", ")"), justify="right")
        for task, row in cells.items():
            texts = []
            for b in budgets:
                if b not in row:
                    texts.append(Text(""))
                    continue
                top = row[b][0].n > 0 and row[b][0].mean == best[b]
                texts.append(Text(console_cell(*row[b], mixed=mixed), style="bold" if top else ""))
            table.add_row(Text(task), *texts)
        out += [Text(f"{protocol}: test accuracy by labelled images", style="bold"), table]
        out.append(Text(caption(df, comp, protocol, TEXT)))
    verdicts = family_verdicts(comp, df)
    if verdicts:
        out.append(Text("\n".join([f"Verdicts. {legend(margin)}", *(f"- {v}" for v in verdicts)])))
    note = partial_note(df).strip()
    if note:
        out.append(Text(note))
    return out


def console_cell(iv, planned: int, marker: str, mixed: bool) -> str:
    """A table cell in two short lines, so that a table of four budgets fits 80 columns: ``0.2618 (n=2) ▲`` over
    its interval (``range`` named only where the table mixes ranges and confidence intervals)."""
    first = cell_text(iv, planned, marker, best=False, sym=TEXT)
    if iv.n <= 1:
        return first
    gap = f" of {planned}" if iv.n < planned else ""
    mark = "".join(f" {TEXT[m]}" for m in marker.split())
    label = "range " if mixed and iv.method == "range" else ""
    return f"{iv.mean:.4f} (n={iv.n}{gap}){mark}\n{label}[{iv.low:.3f}, {iv.high:.3f}]"


def render(console: Console, df: pd.DataFrame, margin: float = MARGIN) -> str:
    """Print the summary of ``df`` to ``console``; return the same content as plain text."""
    items = summary_renderables(df, margin)
    recorder = Console(record=True, file=io.StringIO(), width=console.width, color_system=None)
    for item in items:
        console.print(item)
        recorder.print(item)
    return recorder.export_text()


def render_summary(console: Console, tracker: Tracker, cells: list[Cell], margin: float = MARGIN) -> str:
    """Print the summary of the finished evaluation runs of ``cells`` to ``console``; return it as plain text."""
    return render(console, tidy(tracker, cells), margin)


def summary_tables(tracker: Tracker, cells: list[Cell], margin: float = MARGIN) -> str:
    """The summary as plain text, printed nowhere."""
    return render(Console(file=io.StringIO(), width=160), tidy(tracker, cells), margin)
