"""What each comparison showed, in words, for the captions, the console and ``verdicts.md``: better, worse,
equivalent within the suite's margin, or inconclusive (:func:`bench.report.comparisons.comparisons`).

A comparison that is neither better, worse nor equivalent is called inconclusive with its reason (the interval
reaches past the margin, or too few seeds to test); it is never read as "no difference". Differences and their
95% intervals are in accuracy points (x 100).
"""

from __future__ import annotations

import pandas as pd

from bench.report.comparisons import budget_label, budget_order, protocol_order, title
from bench.report.stats import ALPHA, MIN_T_SEEDS, seeds_needed
from bench.report.tidy import REFERENCE


def reference(baseline: str, protocol: str) -> str:
    """'scratch+finetune' (training on the labels alone), or '<baseline>+<protocol>' (a frozen baseline)."""
    return "+".join(REFERENCE) if baseline == REFERENCE[0] else f"{baseline}+{protocol}"


def points_text(margin: float) -> str:
    """'1 point', '1.5 points' for a margin given as a fraction of accuracy."""
    value = f"{100 * margin:g}"
    return f"{value} point{'' if value == '1' else 's'}"


def margin_text(margin: float) -> str:
    """'±1 point', '±1.5 points'."""
    return f"±{points_text(margin)}"


def seeds_text(n: int) -> str:
    return "one seed" if n == 1 else f"{n} seeds"


def signed(x: float) -> str:
    """A difference of accuracies in points, signed, one decimal ('+0.0', never '-0.0')."""
    return f"{round(100 * x, 1) + 0.0:+.1f}"


def _interval(r) -> str:
    return f"[{signed(r.ci_low)}, {signed(r.ci_high)}]"


def too_few(n: int, family_size: int, margin: float) -> str:
    """Why neither a difference nor equivalence can be shown with ``n`` seeds (below ``MIN_T_SEEDS``)."""
    return (
        f"with {seeds_text(n)} neither a difference nor equivalence within {margin_text(margin)} can be shown "
        f"(equivalence needs {MIN_T_SEEDS} seeds, a difference {seeds_needed(family_size)})"
    )


def verdict_phrase(r) -> str:
    """One comparison (a row of the comparisons frame), against the baseline its sentence names:
    'rotation is better by 4.2 points [+2.9, +5.5]', 'rotation is equivalent within ±1 point (+0.1 points
    [-0.3, +0.5]; TOST p = 0.004 after Holm)',
    'rotation is inconclusive: the 95% interval [-0.4, +1.4] allows a gain of more than 1 point'."""
    m = margin_text(r.margin)
    within = r.p_tost_holm < ALPHA
    if r.verdict in ("better", "worse"):
        size = f" by {abs(100 * r.mean_diff):.1f} points {_interval(r)}"
        return f"{r.task} is {r.verdict}{size}" + (f", a difference within {m}" if within else "")
    if r.verdict == "equivalent":
        diff = f"{signed(r.mean_diff)} points {_interval(r)}"
        return f"{r.task} is equivalent within {m} ({diff}; TOST p = {r.p_tost_holm:.2g} after Holm)"
    if r.n < MIN_T_SEEDS:
        return f"{r.task} is inconclusive: {too_few(r.n, r.family_size, r.margin)}"
    need = seeds_needed(r.family_size)
    reach = f"; with {r.n} seeds no difference can reach p < {ALPHA} after Holm (it needs {need})" if r.n < need else ""
    allows = [w for w, past in (("a gain", r.ci_high > r.margin), ("a loss", r.ci_low < -r.margin)) if past]
    if allows:
        more = f"{' or '.join(allows)} of more than {points_text(r.margin)}"
        return f"{r.task} is inconclusive: the 95% interval {_interval(r)} allows {more}{reach}"
    return (
        f"{r.task} is inconclusive: the 95% interval {_interval(r)} lies inside {m}, but equivalence is not shown "
        f"after Holm over {r.family_size} tasks (TOST p = {r.p_tost_holm:.2g}){reach}"
    )


def family_verdicts(comp: pd.DataFrame, df: pd.DataFrame) -> list[str]:
    """One sentence per Holm family (protocol, baseline, budget), in the report's order:
    '<protocol> at <budget>, against <reference>: <phrase>; <phrase>.'"""
    if comp.empty:
        return []
    reasons = {too_few(int(r.n), int(r.family_size), float(r.margin)) for r in comp.itertuples()}
    if (comp.verdict == "inconclusive").all() and (comp.n < MIN_T_SEEDS).all() and len(reasons) == 1:
        families = len(comp.groupby(["protocol", "baseline", "budget"]))  # said once, not once per family
        return [f"Every comparison ({len(comp)} in {families} families) is inconclusive: {reasons.pop()}."]
    out = []
    for protocol in protocol_order(df):
        for baseline in comp.baseline[comp.protocol == protocol].unique():
            for budget in budget_order(df):
                fam = comp[(comp.protocol == protocol) & (comp.baseline == baseline) & (comp.budget == budget)]
                if fam.empty:
                    continue
                phrases = "; ".join(verdict_phrase(r) for r in fam.itertuples())
                label = budget_label(budget, df)
                out.append(f"{protocol} at {label}, against {reference(baseline, protocol)}: {phrases}.")
    return out


def legend(margin: float) -> str:
    """What the four verdicts mean."""
    m = margin_text(margin)
    return (
        "Paired by seed, per protocol and budget. Better/worse: exact two-sided sign-flip test, p < "
        f"{ALPHA} after Holm over the tasks against that baseline at that budget. Equivalent within {m}: two "
        f"one-sided paired t-tests (TOST), p < {ALPHA} after Holm over the same tasks (the 90% interval of the mean "
        f"difference lies inside {m}). Inconclusive: neither was shown. Differences and 95% intervals in accuracy "
        "points."
    )


def verdicts_markdown(comp: pd.DataFrame, df: pd.DataFrame) -> str:
    """verdicts.md: the legend, then one line per family; made to be embedded in a page between
    ``<!-- results/<suite>/verdicts.md -->`` and ``<!-- end -->``."""
    margin = float(comp.margin.iloc[0]) if len(comp) else None
    if margin is None:
        return f"No comparisons in {title(df)}: no task was evaluated next to a baseline.\n"
    lines = [f"Verdicts of {title(df)}. {legend(margin)}", ""]
    lines += [f"- {s}" for s in family_verdicts(comp, df)]
    missing = int((df.status != "finished").sum())
    if missing:
        lines += ["", f"PARTIAL: {missing} of {len(df)} evaluation cells have no finished run."]
    return "\n".join(lines) + "\n"
