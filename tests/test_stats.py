"""Known-answer tests for every statistic, against hand computations or scipy called directly."""

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from bench.report.stats import (
    Interval,
    can_reach,
    friedman_nemenyi,
    holm,
    interval,
    min_blocks,
    min_sign_flip_p,
    paired,
    seeds_needed,
    sign_flip_p,
)


def test_interval_is_student_t_from_three_values_by_hand():
    iv = interval([0.4, 0.5, 0.6])
    half = 4.302653 * (0.1 / math.sqrt(3))  # t(0.975, df=2) * sd / sqrt(n), sd = 0.1
    assert iv.method == "t" and iv.n == 3 and iv.mean == pytest.approx(0.5)
    assert iv.low == pytest.approx(0.5 - half, abs=1e-6) and iv.high == pytest.approx(0.5 + half, abs=1e-6)
    assert interval([0.25, 0.25, 0.25]) == Interval(0.25, 0.25, 0.25, 3, "t")  # no spread: the point


def test_interval_with_two_values_is_their_range_and_with_one_no_interval():
    iv = interval([0.3, 0.1])
    assert (iv.mean, iv.low, iv.high, iv.n, iv.method) == (pytest.approx(0.2), 0.1, 0.3, 2, "range")
    assert interval([0.5]).method == "single" and interval([0.5]).low == interval([0.5]).high == 0.5
    assert interval([]).method == "none" and math.isnan(interval([np.nan]).mean)
    assert interval([0.3, np.nan, 0.1]).n == 2  # missing seeds are not values


def test_interval_never_leaves_the_unit_range():
    # the t-interval of (0.99, 0.98, 0.5) reaches 1.62 before clipping
    near_one = interval([0.99, 0.98, 0.5])
    assert near_one.high == 1.0 and 0 <= near_one.low < near_one.mean
    near_zero = interval([0.01, 0.02, 0.5])
    assert near_zero.low == 0.0 and near_zero.high <= 1.0
    rng = np.random.default_rng(0)
    for _ in range(200):
        x = rng.beta(0.3, 0.3, size=rng.integers(1, 8))
        iv = interval(x)
        assert 0.0 <= iv.low <= iv.mean <= iv.high <= 1.0
    assert interval([-0.9, -0.95, 0.1], bounds=(-1, 1)).low == -1.0  # differences are clipped to [-1, 1]


def _enumerated_p(d):
    """Two-sided sign-flip p by listing all 2^n sign patterns by hand."""
    d = np.asarray(d, float)
    observed = abs(d.mean())
    means = [abs(np.mean(d * s)) for s in itertools.product((1, -1), repeat=len(d))]
    return np.mean([m >= observed - 1e-12 for m in means])


def test_sign_flip_p_matches_enumeration_and_scipy_on_paired_data():
    a = np.array([0.50, 0.60, 0.70, 0.65, 0.55, 0.58])
    b = np.array([0.40, 0.55, 0.60, 0.66, 0.50, 0.50])
    ours = sign_flip_p(a - b)
    direct = sps.permutation_test(
        (a, b),
        lambda x, y, axis: np.mean(x - y, axis=axis),
        permutation_type="samples",
        n_resamples=np.inf,
        vectorized=True,
    ).pvalue
    assert ours == pytest.approx(direct) and ours == pytest.approx(_enumerated_p(a - b))
    assert ours == pytest.approx(4 / 64)  # only the all-positive and the one-flip (-0.01 -> +0.01) patterns tie
    for d in ([0.1, -0.05, 0.2], [0.02, 0.03, -0.01, 0.04, 0.0]):
        assert sign_flip_p(d) == pytest.approx(_enumerated_p(d))


def test_two_seeds_with_a_constant_difference_give_p_one_half_not_nan():
    d = 1 / 360  # accuracy moves in steps of 1/360: both seeds can differ by exactly the same amount
    r = paired([0.5 + d, 0.6 + d], [0.5, 0.6])
    assert r.p_signflip == pytest.approx(0.5) and r.p_wilcoxon == pytest.approx(0.5)
    assert math.isnan(r.p_ttest)  # undefined without spread: an extra column, never the test
    assert sign_flip_p([0.0, 0.0]) == 1.0 and math.isnan(sign_flip_p([]))
    assert sign_flip_p([d] * 6) == pytest.approx(2 / 64)  # a constant difference is finite at every n


def test_paired_extra_columns_match_scipy_and_hand_counts():
    a = np.array([0.50, 0.60, 0.70, 0.65, 0.55, 0.58])
    b = np.array([0.40, 0.55, 0.60, 0.66, 0.50, 0.50])
    r = paired(a, b)
    assert r.n == 6 and r.mean_diff == pytest.approx(np.mean(a - b))
    assert r.p_ttest == pytest.approx(sps.ttest_rel(a, b).pvalue)
    assert r.p_wilcoxon == pytest.approx(sps.wilcoxon(a, b).pvalue)
    assert r.p_improve == pytest.approx(5 / 6)  # a wins on 5 of the 6 seeds
    iv = interval(a - b, bounds=(-1, 1))
    assert (r.ci_low, r.ci_high, r.ci_method) == (pytest.approx(iv.low), pytest.approx(iv.high), "t")
    assert paired([0.5, 0.6], [0.5, 0.6]).p_improve == 0.5  # ties count half


def test_smallest_p_and_seeds_needed_by_hand():
    assert min_sign_flip_p(2) == 0.5 and min_sign_flip_p(6) == pytest.approx(0.03125)
    x = np.arange(1, 6) / 10  # 5 pairs, all differences positive: the most extreme outcome
    assert sps.wilcoxon(x, np.zeros(5)).pvalue == pytest.approx(min_sign_flip_p(5))
    assert sign_flip_p(x) == pytest.approx(min_sign_flip_p(5))
    # one test: 2/2^5 = 0.0625, 2/2^6 = 0.031; three: 3 * 2/2^6 = 0.094, 3 * 2/2^7 = 0.047; nine: 9 * 2/2^9 = 0.035
    assert (seeds_needed(1), seeds_needed(3), seeds_needed(9)) == (6, 7, 9)
    for m in (1, 3, 9):
        n = seeds_needed(m)
        assert holm([min_sign_flip_p(n)] * m).min() < 0.05 <= holm([min_sign_flip_p(n - 1)] * m).min()
        assert can_reach(n, m) and not can_reach(n - 1, m)
    assert min_blocks() == 6


def test_holm_by_hand():
    # sorted: 0.01 * 3 = 0.03; 0.03 * 2 = 0.06; 0.04 * 1 = 0.04 -> made monotone: 0.06
    assert holm([0.01, 0.04, 0.03]).tolist() == pytest.approx([0.03, 0.06, 0.06])
    out = holm([0.01, np.nan, 0.04])
    assert out[0] == pytest.approx(0.02) and np.isnan(out[1]) and out[2] == pytest.approx(0.04)


def test_friedman_ranks_by_hand():
    scores = pd.DataFrame({"a": [0.9, 0.8, 0.7, 0.9], "b": [0.5, 0.6, 0.65, 0.4], "c": [0.1, 0.7, 0.2, 0.3]})
    p, ranks, nemenyi = friedman_nemenyi(scores)
    assert ranks.tolist() == pytest.approx([1.0, 2.25, 2.75])  # b beats c in 3 blocks of 4
    assert p == pytest.approx(sps.friedmanchisquare(scores.a, scores.b, scores.c).pvalue)
    assert nemenyi.shape == (3, 3) and list(nemenyi.columns) == ["a", "b", "c"]
    assert friedman_nemenyi(scores[["a", "b"]]) is None  # fewer than three methods: no test


def test_one_seed_gives_p_one_and_no_interval():
    assert sign_flip_p([0.1]) == 1.0  # two sign patterns, both as extreme as the one seen
    r = paired([0.6], [0.5])
    assert r.n == 1 and r.p_signflip == 1.0 and r.mean_diff == pytest.approx(0.1) and r.ci_method == "single"


def test_holm_is_bitwise_statsmodels_holm():
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(0)
    for m in (1, 2, 7, 40):  # statsmodels collects garbage on every call: few calls, many values each
        tied = rng.choice([0.5, 2 / 2**5, 1.0, 0.01], size=m)
        p = np.where(rng.uniform(size=m) < 0.5, rng.uniform(0, 1, m), tied)  # ties and free values
        assert np.array_equal(holm(p), multipletests(p, method="holm")[1])
    with_nan = np.array([0.01, np.nan, 0.04, 0.03])
    expected = multipletests(with_nan[~np.isnan(with_nan)], method="holm")[1]
    assert np.array_equal(holm(with_nan)[[0, 2, 3]], expected) and np.isnan(holm(with_nan)[1])


def test_the_wilcoxon_p_value_is_scipys_bitwise_with_ties_and_zeros():
    import warnings

    from scipy import stats as sps

    from bench.report.stats import wilcoxon_p

    rng = np.random.default_rng(0)
    for trial in range(120):
        d = rng.normal(0, 1, int(rng.integers(2, 13)))
        if trial % 3 == 1:
            d = np.round(d, 1)  # tied magnitudes
        if trial % 3 == 2:
            d[:2] = 0  # zero differences, dropped as scipy drops them
        if not np.any(d):
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert wilcoxon_p(d) == sps.wilcoxon(d).pvalue, d
    assert wilcoxon_p([0.0, 0.0]) == 1.0 and wilcoxon_p([0.0, 0.3]) == 1.0
