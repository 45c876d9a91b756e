"""A thin layer over scipy.stats, statsmodels and scikit-posthocs: the statistics a label-efficiency table needs.

Comparisons are paired by seed: within a seed every task sees the same labelled subset and starts from the same
initialisation, so seed-to-seed variation cancels in the differences.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.multitest import multipletests

CONFIDENCE = 0.95


def mean_ci(values, confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """Mean and Student-t confidence interval; the interval is NaN with fewer than two values."""
    x = np.asarray(values, dtype=float)
    if len(x) == 0:
        return math.nan, math.nan, math.nan
    if len(x) < 2:
        return float(x.mean()), math.nan, math.nan
    half = stats.t.ppf(0.5 + confidence / 2, len(x) - 1) * stats.sem(x) if x.std() > 0 else 0.0
    return float(x.mean()), float(x.mean() - half), float(x.mean() + half)


def min_wilcoxon_p(n: int) -> float:
    """The smallest two-sided p-value an exact Wilcoxon signed-rank test can give with n pairs: 2 / 2^n."""
    return min(1.0, 2.0 / 2**n) if n > 0 else 1.0


@dataclass
class Paired:
    n: int
    mean_diff: float
    ci_low: float  # bootstrap interval of the mean difference
    ci_high: float
    p_ttest: float
    p_wilcoxon: float
    p_improve: float  # share of seeds where a beats b (ties count half)


def paired(a, b, seed: int = 0) -> Paired:
    """Paired comparison of a against b (same seeds, same order)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    d = a - b
    n = len(d)
    if n == 0:
        return Paired(0, math.nan, math.nan, math.nan, math.nan, math.nan, math.nan)
    p_improve = float(np.mean((d > 0) + 0.5 * (d == 0)))
    if n < 2:
        return Paired(n, float(d.mean()), math.nan, math.nan, math.nan, math.nan, p_improve)
    if np.all(d == d[0]):  # no spread: the tests are undefined, the interval is the point
        p = 1.0 if d[0] == 0 else math.nan
        return Paired(n, float(d[0]), float(d[0]), float(d[0]), p, p, p_improve)
    p_t = float(stats.ttest_rel(a, b).pvalue)
    p_w = float(stats.wilcoxon(a, b).pvalue) if np.any(d != 0) else 1.0
    boot = stats.bootstrap(
        (d,),
        np.mean,
        confidence_level=CONFIDENCE,
        n_resamples=2000,
        method="percentile",
        random_state=np.random.default_rng(seed),
    )
    low, high = boot.confidence_interval
    return Paired(n, float(d.mean()), float(low), float(high), p_t, p_w, p_improve)


def holm(pvalues) -> np.ndarray:
    """Holm-corrected p-values; NaN entries stay NaN and are not counted."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full_like(p, np.nan)
    ok = ~np.isnan(p)
    if ok.any():
        out[ok] = multipletests(p[ok], method="holm")[1]
    return out


def friedman_nemenyi(scores: pd.DataFrame) -> tuple[float, pd.Series, pd.DataFrame] | None:
    """Blocks x methods scores -> (Friedman p, average ranks (1 = best), Nemenyi p-value matrix); None when
    there are fewer than 3 methods or 2 complete blocks."""
    import scikit_posthocs as sp

    scores = scores.dropna()
    if scores.shape[1] < 3 or scores.shape[0] < 2:
        return None
    p = float(stats.friedmanchisquare(*[scores[c] for c in scores.columns]).pvalue)
    ranks = scores.rank(axis=1, ascending=False).mean()
    nemenyi = sp.posthoc_nemenyi_friedman(scores.to_numpy())
    nemenyi.index = nemenyi.columns = scores.columns
    return p, ranks, nemenyi
