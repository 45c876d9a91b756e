"""Each task against each baseline, per protocol and budget: paired differences over seeds, exact sign-flip p,
the TOST p of equivalence within the suite's margin, Holm within a family, the verdict of each comparison, the
order of protocols and budgets, and the rank blocks of the Friedman test."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bench.report.stats import (
    ALPHA,
    MARGIN,
    equivalence_p,
    holm,
    min_blocks,
    paired,
)
from bench.report.tidy import BASELINES, REFERENCE, frozen_protocols, references

VERDICTS = ("better", "worse", "equivalent", "inconclusive")


def comparisons(df: pd.DataFrame, margin: float = MARGIN) -> pd.DataFrame:
    """Every non-baseline (task, protocol) against each of its references at every budget, paired by seed; the
    sign-flip (and t-test, Wilcoxon) p-values and the TOST p of equivalence within ``margin`` (a difference of
    accuracies), each Holm-corrected within the family (protocol, baseline, budget).

    ``verdict`` (one of ``VERDICTS``): "better"/"worse" when the sign-flip p is below ``ALPHA`` after Holm (the
    tables' markers); else "equivalent" (within ``margin``) when the TOST p is below ``ALPHA`` after Holm;
    else "inconclusive", which says only that neither was shown (also with too few seeds for either test)."""
    rows = []
    ok = df[df.status == "finished"]
    for protocol in protocol_order(df):
        for base, base_protocol in references(protocol, df):
            for budget in budget_order(df):
                at = ok[ok.budget == budget]
                ref = at[(at.task == base) & (at.protocol == base_protocol)]
                for task, grp in at[at.protocol == protocol].groupby("task", sort=False):
                    if task in BASELINES or ref.empty:
                        continue
                    both = grp.merge(ref, on="seed", suffixes=("", "_ref"))
                    r = paired(both.test_acc, both.test_acc_ref)
                    rows.append(
                        {
                            "protocol": protocol,
                            "baseline": base,
                            "baseline_protocol": base_protocol,
                            "budget": budget,
                            "task": task,
                            "n": r.n,
                            "mean_diff": r.mean_diff,
                            "ci_low": r.ci_low,
                            "ci_high": r.ci_high,
                            "ci_method": r.ci_method,
                            "p_signflip": r.p_signflip,
                            "p_ttest": r.p_ttest,
                            "p_wilcoxon": r.p_wilcoxon,
                            "p_improve": r.p_improve,
                            "p_tost": equivalence_p(both.test_acc - both.test_acc_ref, margin),
                        }
                    )
    out = pd.DataFrame(rows)
    if len(out):
        fam = out.groupby(["protocol", "baseline", "budget"], sort=False)
        out["family_size"] = fam.p_signflip.transform(lambda p: int(p.notna().sum()))
        out["p_holm"] = fam.p_signflip.transform(lambda p: holm(p))
        out["p_ttest_holm"] = fam.p_ttest.transform(lambda p: holm(p))
        out["p_wilcoxon_holm"] = fam.p_wilcoxon.transform(lambda p: holm(p))
        out["marker"] = np.where(out.p_holm < ALPHA, np.where(out.mean_diff > 0, "up", "down"), "")
        out["p_tost_holm"] = fam.p_tost.transform(lambda p: holm(p))
        out["margin"] = margin
        shown = [out.marker == "up", out.marker == "down", out.p_tost_holm < ALPHA]
        out["verdict"] = np.select(shown, VERDICTS[:3], VERDICTS[3])
    return out


def protocol_order(df: pd.DataFrame) -> list[str]:
    """Frozen protocols first, then fine-tuning, then any other, each once."""
    known = [p for p in (*frozen_protocols(), REFERENCE[1]) if p in set(df.protocol)]
    return known + [p for p in df.protocol.unique() if p not in known]


def budget_order(df: pd.DataFrame) -> list[str]:
    return sorted(df.budget.unique(), key=lambda b: float("inf") if b == "full" else int(b))


def budget_label(budget: str, df: pd.DataFrame) -> str:
    """'100 labels'; 'full (50000 labels)' when the full set's size is known."""
    if budget != "full":
        return f"{budget} labels"
    n = df.n_labels[df.budget == "full"].dropna() if "n_labels" in df else pd.Series(dtype=float)
    return f"full ({int(n.median())} labels)" if len(n) else "full"


def title(df: pd.DataFrame) -> str:
    """'<suite> on <dataset>' from the tidy table's columns."""
    suite = next((s for s in df.get("suite", []) if s), "bench")
    dataset = next((d for d in df.get("dataset", []) if d), "")
    return f"{suite} on {dataset}" if dataset else suite


def rank_blocks(df: pd.DataFrame, protocol: str, budget: str) -> pd.DataFrame:
    """Seeds x tasks test accuracies for a rank comparison under one protocol at one budget, as the tables compare
    them (an average over budgets would rank a different question than any column answers). Seeds are the
    independent blocks; a seed missing any planned task's cell is dropped."""
    sub = df[(df.protocol == protocol) & (df.budget == budget)]
    planned = list(dict.fromkeys(sub.task))
    wide = sub[sub.status == "finished"].pivot_table(index="seed", columns="task", values="test_acc")
    return wide.reindex(columns=planned).dropna()


def rank_note(scores: pd.DataFrame, protocol: str, budget: str = "") -> str:
    """Why no critical-difference diagram is drawn for ``protocol`` at ``budget``; empty when one is."""
    blocks, k = scores.shape
    if k >= 3 and blocks >= min_blocks():
        return ""
    at = f" at {budget}" if budget else ""
    return (
        f"{protocol}{at}: no critical-difference diagram: {blocks} complete seeds (independent blocks) for {k} tasks; "
        f"a rank comparison here needs at least 3 tasks and {min_blocks()} blocks (with fewer blocks even a task "
        f"that wins in every block could not differ from another at p < {ALPHA}: exact sign test, smallest "
        "p = 2/2^n)."
    )
