"""The report's tables: cell text with n and interval, markers and their captions, in Markdown and LaTeX.

A caption says what each family's tests showed: the markers that appear (better, worse, equivalent within the
suite's margin) and which comparisons are inconclusive (:mod:`bench.report.verdicts`)."""

from __future__ import annotations

import re

import pandas as pd

from bench.report.caveats import caveat_sentence, flagged_cells
from bench.report.comparisons import budget_label, budget_order, protocol_order, title
from bench.report.provenance import provenance
from bench.report.stats import (
    ALPHA,
    MIN_T_SEEDS,
    can_reach,
    interval,
    min_sign_flip_p,
    seeds_needed,
)
from bench.report.tidy import REFERENCE, is_frozen
from bench.report.verdicts import margin_text, reference, too_few

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


# ---------------------------------------------------------------------------------------------- captions


def _tex(text: str) -> str:
    """``text`` with LaTeX's special characters escaped (``%`` is left to the caller)."""
    return re.sub(r"([_&#$])", r"\\\1", text)


def interval_sentence(methods: set[str], sym: dict, what: str = "brackets", bounds: str = "[0, 1]") -> str:
    """What the interval shown is, for the methods present (from :func:`bench.report.stats.interval`)."""
    parts = []
    if "t" in methods:
        parts.append(f"{what}: 95% Student-t confidence interval over seeds, clipped to {bounds}")
        if "range" in methods:
            parts.append(
                f"cells marked {sym['range'].strip()} have fewer than {MIN_T_SEEDS} seeds and show the seeds' "
                "range [min, max] instead, not a confidence interval"
            )
    elif "range" in methods:
        parts.append(
            f"{what}: the seeds' range [min, max]; fewer than {MIN_T_SEEDS} seeds are too few for a confidence interval"
        )
    if "single" in methods:
        parts.append("one seed: no interval")
    return "; ".join(parts) + "." if parts else ""


def family_sentence(comp: pd.DataFrame, protocol: str, sym: dict, baseline: str = REFERENCE[0]) -> str:
    """What one family's tests showed, for one table: the markers that appear (better, worse, equivalent within
    the margin), the tests, the Holm family, how many seeds significance needs, and which comparisons are
    inconclusive. Only markers that appear are named."""
    fam = comp[(comp.protocol == protocol) & (comp.baseline == baseline)] if len(comp) else comp
    if fam.empty or fam.p_signflip.isna().all():
        return ""
    m, n = int(fam.family_size.max()), int(fam.n.max())
    ref = reference(baseline, protocol)
    need, floor = seeds_needed(m), min_sign_flip_p(n)
    family = f"Holm over the tasks against {ref} at each budget ({m} per budget)"
    lt = sym["lt"]
    seeds = "one seed" if n == 1 else f"{n} seeds"
    reach = f"with {seeds} the smallest possible p is {floor:.3g}; p {lt} {ALPHA} after Holm needs {need} seeds"
    shown = [k for k in ("up", "down") if (fam.marker == k).any()]
    keys = {k: k if baseline == REFERENCE[0] else f"{k}_{baseline}" for k in ("up", "down", "equiv")}
    margin = margin_text(float(fam.margin.iloc[0]))
    equivalent = bool((fam.verdict == "equivalent").any())
    if not can_reach(n, m):
        none = f"No {sym[keys['up']]}/{sym[keys['down']]} markers" if equivalent else "No markers"
        parts = [f"{none}: exact sign-flip test over seeds, {family}; {reach}."]
    elif not shown:
        parts = [
            f"No task is shown better or worse than {ref} (exact two-sided sign-flip test over seeds, {family}, "
            f"p {lt} {ALPHA}; {reach})."
        ]
    else:
        words = {"up": "better", "down": "worse"}
        legend = "/".join(sym[keys[k]] for k in shown) + ": " + "/".join(words[k] for k in shown)
        parts = [f"{legend} than {ref} (exact two-sided sign-flip test over seeds, {family}, p {lt} {ALPHA}; {reach})."]
    if equivalent:
        parts.append(
            f"{sym[keys['equiv']]}: equivalent to {ref} within {margin} (two one-sided paired t-tests, TOST, Holm "
            f"over the same tasks, p {lt} {ALPHA}: the 90% interval of the mean difference lies inside {margin})."
        )
    parts.append(inconclusive_sentence(fam, ref, margin))
    return " ".join(p for p in parts if p)


def inconclusive_sentence(fam: pd.DataFrame, ref: str, margin: str) -> str:
    """The comparisons of one family that showed neither a difference nor equivalence, by task; with too few
    seeds for either test, that reason instead of the list."""
    open_ = fam[fam.verdict == "inconclusive"]
    if open_.empty:
        return ""
    if len(open_) == len(fam) and (fam.n < MIN_T_SEEDS).all():
        reason = too_few(int(fam.n.max()), int(fam.family_size.max()), float(fam.margin.iloc[0]))
        return f"Inconclusive against {ref}, every task at every budget: {reason}."
    items = []
    for task, grp in open_.groupby("task", sort=False):
        budgets = budget_order(grp)
        items.append(f"{task} ({', '.join(b if b == 'full' else f'{b} labels' for b in budgets)})")
    return (
        f"Inconclusive against {ref} (neither a difference nor equivalence within {margin} shown): "
        + "; ".join(items)
        + "."
    )


def caption(df: pd.DataFrame, comp: pd.DataFrame, protocol: str, sym: dict) -> str:
    table = table_cells(df, comp, protocol)
    ivs = [v[0] for row in table.values() for v in row.values()]
    partial = any(0 < v[0].n < v[1] for row in table.values() for v in row.values())
    tex = sym is TEX
    unit = " (%)" if tex else ""
    parts = [
        f"{protocol}: test accuracy{unit}, {_tex(title(df)) if tex else title(df)}, mean over seeds (n per cell).",
        interval_sentence({iv.method for iv in ivs}, sym, "Brackets"),
        family_sentence(comp, protocol, sym),
        family_sentence(comp, protocol, sym, "random") if is_frozen(protocol) else "",
        "Best per column in bold.",
        caveat_sentence(df, protocol, sym["caveat"]),
    ]
    if partial:
        parts.append(f"{sym['partial']}: partial, some seeds missing.")
    text = " ".join(p for p in parts if p)
    return text.replace("%", "\\%").replace("±", "$\\pm$") if tex else text


# ---------------------------------------------------------------------------------------------- tables


def markdown_table(df: pd.DataFrame, comp: pd.DataFrame) -> str:
    budgets = budget_order(df)
    parts = []
    for protocol in protocol_order(df):
        table = table_cells(df, comp, protocol)
        best = best_per_column(table, budgets)
        lines = [
            f"**{protocol}**: " + caption(df, comp, protocol, MD).removeprefix(f"{protocol}: "),
            "",
            "| task | " + " | ".join(budget_label(b, df) for b in budgets) + " |",
            "|---|" + "---:|" * len(budgets),
        ]
        for task, row in table.items():
            out = [
                cell_text(*row[b], best=row[b][0].n > 0 and row[b][0].mean == best[b], sym=MD) if b in row else ""
                for b in budgets
            ]
            lines.append(f"| {task} | " + " | ".join(out) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + partial_note(df)


def latex_table(df: pd.DataFrame, comp: pd.DataFrame) -> str:
    budgets = budget_order(df)
    suite = next((s for s in df.get("suite", []) if s), "bench")
    out = ["% generated by bench report; needs \\usepackage{booktabs}"]
    for protocol in protocol_order(df):
        table = table_cells(df, comp, protocol)
        best = best_per_column(table, budgets)
        mixed = {"t", "range"} <= {v[0].method for row in table.values() for v in row.values()}
        out += [
            "\\begin{table}[t]",
            "\\centering",
            f"\\caption{{{caption(df, comp, protocol, TEX)}}}",
            f"\\label{{tab:{re.sub(r'[^A-Za-z0-9]+', '-', suite)}-{protocol}}}",
            "\\begin{tabular}{l" + "r" * len(budgets) + "}",
            "\\toprule",
            "Task & " + " & ".join(budget_label(b, df) for b in budgets) + " \\\\",
            "\\midrule",
        ]
        for task, row in table.items():
            cells = []
            for b in budgets:
                if b not in row or row[b][0].n == 0:
                    cells.append("--")
                    continue
                iv, planned, marker = row[b]
                num = f"{100 * iv.mean:.2f}"
                num = f"\\textbf{{{num}}}" if iv.mean == best[b] else num
                ci = f" {{\\footnotesize [{100 * iv.low:.1f}, {100 * iv.high:.1f}]}}" if iv.n > 1 else ""
                flags = TEX["range"] if mixed and iv.method == "range" else ""
                flags += TEX["partial"] if iv.n < planned else ""
                cells.append(f"{num}{ci}{flags}" + "".join(f" {TEX[m]}" for m in marker.split()))
            out.append(_tex(task).replace("%", "\\%") + " & " + " & ".join(cells) + " \\\\")
        out += ["\\bottomrule", "\\end{tabular}", "\\end{table}", ""]
    return "\n".join(out)


def partial_note(df: pd.DataFrame) -> str:
    missing = int((df.status != "finished").sum())
    note = f"\n\nPARTIAL: {missing} of {len(df)} evaluation cells have no finished run." if missing else ""
    return note + provenance(df)
