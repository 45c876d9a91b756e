"""Cells whose protocol may have stopped short of its optimum: a fine-tuning run that met its bound before it
converged or that fits its own small training set badly, a linear probe whose L2 sits at the grid's edge. Each
evaluation run records its protocol's caveats (tag ``caveat``); the tables mark such cells and stats.md lists
them, so a reader knows which numbers a longer schedule or a wider grid could still move."""

from __future__ import annotations

import pandas as pd

from bench.report.comparisons import budget_order, protocol_order


def flagged(df: pd.DataFrame) -> pd.DataFrame:
    """The finished rows with a caveat."""
    if "caveat" not in df:
        return df.iloc[:0]
    return df[(df.status == "finished") & df.caveat.fillna("").astype(str).ne("")]


def flagged_cells(df: pd.DataFrame) -> set[tuple[str, str, str]]:
    """(task, protocol, budget) of every table cell with a caveat in at least one seed."""
    return set(zip(*(flagged(df)[c] for c in ("task", "protocol", "budget")), strict=True))


def caveat_sentence(df: pd.DataFrame, protocol: str, mark: str) -> str:
    """The caption's note on the cells marked ``mark`` under ``protocol``, or nothing."""
    rows = flagged(df)
    rows = rows[rows.protocol == protocol]
    if rows.empty:
        return ""
    n = len(rows)
    return (
        f"{mark}: in {n} run{'s' if n > 1 else ''} of the cell the protocol may have stopped short of its "
        "optimum (not converged, or a choice at the edge of its grid); stats.md lists them."
    )


def caveats_markdown(df: pd.DataFrame) -> str:
    """stats.md's section: every run with a caveat, by protocol, budget and task."""
    rows = flagged(df)
    lines = ["## Runs that may sit below their protocol's optimum", ""]
    if rows.empty:
        return "\n".join(lines + ["None: every run converged and chose inside its grid.", ""])
    lines += [
        f"{len(rows)} of {int((df.status == 'finished').sum())} finished runs; a longer bound or a wider grid "
        "could still move these numbers.",
        "",
        "| protocol | budget | task | seed | caveat |",
        "|---|---|---|---:|---|",
    ]
    order = {p: i for i, p in enumerate(protocol_order(df))} | {b: i for i, b in enumerate(budget_order(df))}
    for r in sorted(rows.itertuples(), key=lambda r: (order[r.protocol], order[r.budget], r.task, r.seed)):
        lines.append(f"| {r.protocol} | {r.budget} | {r.task} | {r.seed} | {r.caveat} |")
    return "\n".join(lines + [""])
