"""A thin layer over scipy.stats, statsmodels and scikit-posthocs: the statistics a label-efficiency table needs.

Comparisons are paired by seed: within a seed every task sees the same labelled subset and starts from the same
initialisation, so seed-to-seed variation cancels in the differences.

One interval everywhere (:func:`interval`): from 3 seeds on, the 95% Student-t confidence interval of the mean,
clipped to the range the quantity can take ([0, 1] for an accuracy, [-1, 1] for a difference of accuracies). The
mean itself lies in that range, so clipping removes only impossible values and never lowers coverage. With 2
seeds a t-interval has one degree of freedom (multiplier 12.7) and says nothing the two values do not; the
seeds' range [min, max] is shown instead and labelled "range" (for n values it covers the median with
probability 1 - 2^(1-n), 50% at n = 2, so it is not a 95% interval and is never called one).

One test everywhere (:func:`sign_flip_p`): the exact two-sided sign-flip permutation test on the per-seed
differences (Fisher 1935; Good, *Permutation Tests*, 2000). Its smallest possible p-value is 2 / 2^n for n seeds,
so 2 seeds give at best p = 0.5 and a constant difference gives a finite p, never NaN or 1e-5.

A test that does not reject shows nothing by itself; equivalence is shown by its own test (:func:`equivalence_p`):
two one-sided paired t-tests against a margin the suite states (TOST; Schuirmann 1987, J. Pharmacokinet.
Biopharm. 15:657-680; Lakens 2017, "Equivalence tests", Soc. Psychol. Personal. Sci. 8:355-362).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

CONFIDENCE = 0.95
ALPHA = 0.05
MIN_T_SEEDS = 3  # below this the interval is the seeds' range
EXACT_MAX_SEEDS = 16  # 2^16 sign patterns enumerated exactly; beyond, a seeded Monte Carlo sample of them
ACCURACY = (0.0, 1.0)
DIFFERENCE = (-1.0, 1.0)
MARGIN = 0.01  # equivalence margin, a difference of accuracies (1 point); a suite's [report] equivalence_margin


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    n: int
    method: str  # "t": 95% Student-t CI, clipped; "range": the values' [min, max]; "single": one value; "none"


def interval(values, bounds: tuple[float, float] = ACCURACY, confidence: float = CONFIDENCE) -> Interval:
    """Mean of ``values`` (NaN ignored) and its interval: Student-t from 3 values on, clipped to ``bounds``;
    the values' range with 2; the value itself with 1."""
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    n = len(x)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, "none")
    mean = float(x.mean())
    if n == 1:
        return Interval(mean, mean, mean, 1, "single")
    if n < MIN_T_SEEDS:
        return Interval(mean, float(x.min()), float(x.max()), n, "range")
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * stats.sem(x)) if np.ptp(x) > 0 else 0.0
    low, high = max(bounds[0], mean - half), min(bounds[1], mean + half)
    return Interval(mean, low, high, n, "t")


def sign_flip_p(differences, seed: int = 0) -> float:
    """Two-sided p-value of the mean of paired ``differences`` under the sign-flip null (each difference equally
    likely to have either sign), by ``scipy.stats.permutation_test``: exact (all 2^n sign patterns) up to
    ``EXACT_MAX_SEEDS`` values. All-zero differences and a single value give 1; no values give NaN."""
    d = np.asarray(differences, dtype=float)
    d = d[~np.isnan(d)]
    if len(d) == 0:
        return math.nan
    if not np.any(d) or len(d) == 1:  # one value: its two sign patterns are equally extreme
        return 1.0
    res = stats.permutation_test(
        (d,),
        lambda x, axis: np.mean(x, axis=axis),
        permutation_type="samples",  # one sample: the null flips the sign of each value
        vectorized=True,
        n_resamples=np.inf if len(d) <= EXACT_MAX_SEEDS else 99_999,
        alternative="two-sided",
        rng=np.random.default_rng(seed),
    )
    return float(res.pvalue)


def wilcoxon_p(differences, seed: int = 0) -> float:
    """Two-sided p-value of Wilcoxon's signed-rank test, scipy's ``wilcoxon`` default (zero differences dropped,
    tied magnitudes given average ranks): exact over every sign pattern up to ``EXACT_MAX_SEEDS`` values (with
    ties as scipy does it, by permutation), beyond that a seeded sample. ``scipy.stats.wilcoxon`` enumerates the
    patterns calling its statistic once per pattern in Python (seconds a test at 12 seeds); the statistic is the
    sum of the ranks of the positive differences, and flipping signs keeps every magnitude, so one vectorised
    ``permutation_test`` computes the same distribution. All-zero differences give 1."""
    d = np.asarray(differences, dtype=float)
    d = d[~np.isnan(d) & (d != 0)]
    if len(d) <= 1:  # none, or one value: its two sign patterns are equally extreme
        return 1.0
    ranks = stats.rankdata(np.abs(d))
    res = stats.permutation_test(
        (d,),
        lambda x, axis: np.sum(np.where(np.moveaxis(x, axis, -1) > 0, ranks, 0.0), axis=-1),
        permutation_type="samples",  # one sample: the null flips the sign of each value, keeping its rank
        vectorized=True,
        n_resamples=np.inf if len(d) <= EXACT_MAX_SEEDS else 99_999,
        alternative="two-sided",
        rng=np.random.default_rng(seed),
    )
    return float(res.pvalue)


def equivalence_p(differences, margin: float = MARGIN) -> float:
    """TOST p-value that the mean of the paired ``differences`` lies inside (-margin, +margin): the larger of
    the two one-sided paired t-tests' p-values, by statsmodels' ``ttost_paired``. p < alpha exactly when the
    (1 - 2 alpha) Student-t interval of the mean lies inside the margin. NaN below ``MIN_T_SEEDS`` values (the
    same threshold as the t-interval: one degree of freedom says nothing); differences without spread give 0
    strictly inside the margin and 1 otherwise (their interval is the point itself)."""
    from statsmodels.stats.weightstats import ttost_paired

    d = np.asarray(differences, dtype=float)
    d = d[~np.isnan(d)]
    if len(d) < MIN_T_SEEDS:
        return math.nan
    if np.ptp(d) == 0:
        return 0.0 if abs(d[0]) < margin else 1.0
    return float(ttost_paired(d, np.zeros_like(d), -margin, margin)[0])


def min_sign_flip_p(n: int) -> float:
    """The smallest two-sided p-value the exact sign-flip test (and the exact Wilcoxon signed-rank test) can give
    with n pairs: 2 / 2^n, reached when every difference has the same sign."""
    return min(1.0, 2.0 / 2**n) if n > 0 else 1.0


def seeds_needed(family_size: int, alpha: float = ALPHA) -> int:
    """The fewest seeds with which the most extreme outcome still passes Holm's first step over
    ``family_size`` tests: the smallest n with family_size * 2 / 2^n < alpha."""
    n = 1
    while max(1, family_size) * min_sign_flip_p(n) >= alpha:
        n += 1
    return n


def can_reach(n: int, family_size: int, alpha: float = ALPHA) -> bool:
    """Whether any test of a Holm family of ``family_size`` sign-flip tests with n seeds can give p < alpha."""
    return n >= seeds_needed(family_size, alpha)


@dataclass
class Paired:
    n: int
    mean_diff: float
    ci_low: float  # interval of the mean difference, :func:`interval` on [-1, 1]
    ci_high: float
    ci_method: str
    p_signflip: float
    p_ttest: float  # reported as an extra column only; NaN when undefined (n < 2 or no spread)
    p_wilcoxon: float
    p_improve: float  # share of seeds where a beats b (ties count half)


def paired(a, b, seed: int = 0) -> Paired:
    """Paired comparison of a against b (same seeds, same order)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    d = a - b
    n = len(d)
    if n == 0:
        return Paired(0, math.nan, math.nan, math.nan, "none", math.nan, math.nan, math.nan, math.nan)
    ci = interval(d, DIFFERENCE)
    p_improve = float(np.mean((d > 0) + 0.5 * (d == 0)))
    p_t = float(stats.ttest_rel(a, b).pvalue) if n > 1 and np.ptp(d) > 0 else math.nan
    p_w = wilcoxon_p(d, seed)
    return Paired(n, ci.mean, ci.low, ci.high, ci.method, sign_flip_p(d, seed), p_t, p_w, p_improve)


def holm(pvalues) -> np.ndarray:
    """Holm-corrected p-values; NaN entries stay NaN and are not counted.

    The step-down of statsmodels' ``multipletests(method="holm")``, with the same arithmetic (sorted p times
    m, m-1, ..., 1, running maximum, capped at 1), so the values are bitwise its values (tested). Written here
    because statsmodels runs a full ``gc.collect()`` on every Holm call, which is slow in a process that holds
    torch and MLflow, and a report makes dozens of calls (the cost is in the CHANGELOG)."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full_like(p, np.nan)
    ok = ~np.isnan(p)
    if ok.any():
        q = p[ok]
        order = np.argsort(q)
        adjusted = np.maximum.accumulate(q[order] * np.arange(len(q), 0, -1))
        adjusted[adjusted > 1] = 1
        corrected = np.empty_like(q)
        corrected[order] = adjusted
        out[ok] = corrected
    return out


def min_blocks(alpha: float = ALPHA) -> int:
    """Fewest independent blocks a rank comparison needs: below it, even a method that beats another in every
    block could not differ at p < alpha (exact two-sided sign test, smallest p 2 / 2^n), so a critical-difference
    diagram would show a precision the blocks do not have. 6 at alpha = 0.05."""
    return seeds_needed(1, alpha)


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
