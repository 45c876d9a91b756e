"""A report table's caption, short: what the numbers and brackets are and the key to the markers that appear
(better, worse, equivalent within the suite's margin). How each family was tested, and which comparisons are
inconclusive, is said once per family in stats.md (:func:`family_sentence`; :mod:`bench.report.verdicts` in
sentences)."""

from __future__ import annotations

import re

import pandas as pd

from bench.report.caveats import caveat_sentence
from bench.report.comparisons import budget_order, title
from bench.report.stats import ALPHA, MIN_T_SEEDS, can_reach, min_sign_flip_p, seeds_needed
from bench.report.table_cells import SYMBOL, TEX, table_cells
from bench.report.tidy import REFERENCE, is_frozen
from bench.report.verdicts import margin_text, reference, too_few

# ---------------------------------------------------------------------------------------------- captions


def tex_escape(text: str) -> str:
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
        parts.append("One seed: no interval" if not parts else "one seed: no interval")
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


def marker_legend(comp: pd.DataFrame, protocol: str, sym: dict) -> str:
    """The caption's key to the markers one table shows, against each of its baselines; how they were tested
    and what stayed inconclusive is said once, in stats.md (:func:`family_sentence`)."""
    families = [REFERENCE[0], *(["random"] if is_frozen(protocol) else [])]
    keys, unreachable = [], []
    for baseline in families:
        fam = comp[(comp.protocol == protocol) & (comp.baseline == baseline)] if len(comp) else comp
        if fam.empty or fam.p_signflip.isna().all():
            continue
        n, m = int(fam.n.max()), int(fam.family_size.max())
        ref = reference(baseline, protocol)
        suffix = "" if baseline == REFERENCE[0] else f"_{baseline}"
        verdicts = [v for v in ("better", "worse", "equivalent") if (fam.verdict == v).any()]
        shown = {v: sym[f"{SYMBOL[v]}{suffix}"] for v in verdicts}
        if not can_reach(n, m):
            unreachable.append((n, seeds_needed(m)))
        elif not {"better", "worse"} & set(shown):
            keys.append(f"no task is shown better or worse than {ref}")
        for verdict, mark in shown.items():
            what = (
                f"equivalent to {ref} within {margin_text(float(fam.margin.iloc[0]))}"
                if verdict == "equivalent"
                else f"{verdict} than {ref}"
            )
            keys.append(f"{mark}: {what}")
    if unreachable:
        n, need = unreachable[0][0], max(u[1] for u in unreachable)
        seeds = "one seed" if n == 1 else f"{n} seeds"
        kind = "better/worse " if keys else ""
        reach = f"the sign-flip test cannot reach p {sym['lt']} {ALPHA} after Holm ({need} seeds needed)"
        keys.insert(0, f"no {kind}markers: with {seeds} {reach}")
    if not keys:
        return ""
    text = "; ".join(keys)
    return text[0].upper() + text[1:] + ". Tests: stats.md."


def caption(df: pd.DataFrame, comp: pd.DataFrame, protocol: str, sym: dict) -> str:
    """A table's caption, short: what the numbers and brackets are, the markers it shows, bold, caveats."""
    table = table_cells(df, comp, protocol)
    ivs = [v[0] for row in table.values() for v in row.values()]
    partial = any(0 < v[0].n < v[1] for row in table.values() for v in row.values())
    tex = sym is TEX
    unit = " (%)" if tex else ""
    named = tex_escape(title(df)) if tex else title(df)
    parts = [
        f"{protocol}: test accuracy{unit}, {named}, mean over seeds (n per cell).",
        interval_sentence({iv.method for iv in ivs}, sym, "Brackets"),
        marker_legend(comp, protocol, sym),
        "Best per column in bold.",
        caveat_sentence(df, protocol, sym["caveat"]),
    ]
    if partial:
        parts.append(f"{sym['partial']}: partial, some seeds missing.")
    text = " ".join(p for p in parts if p)
    return text.replace("%", "\\%").replace("±", "$\\pm$") if tex else text
