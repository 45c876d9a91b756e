"""Known-answer tests for every statistic, against hand computations or scipy called directly."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from bench.stats import friedman_nemenyi, holm, mean_ci, min_wilcoxon_p, paired


def test_mean_ci_by_hand():
    mean, lo, hi = mean_ci([1.0, 2.0, 3.0])
    half = 4.302653 * (1.0 / math.sqrt(3))  # t(0.975, df=2) * sd / sqrt(n), sd = 1
    assert mean == 2.0 and lo == pytest.approx(2 - half, abs=1e-5) and hi == pytest.approx(2 + half, abs=1e-5)
    assert math.isnan(mean_ci([0.5])[1]) and mean_ci([0.5])[0] == 0.5
    assert mean_ci([0.4, 0.4]) == (0.4, 0.4, 0.4)


def test_paired_tests_match_scipy_and_hand_counts():
    a = np.array([0.50, 0.60, 0.70, 0.65, 0.55, 0.58])
    b = np.array([0.40, 0.55, 0.60, 0.66, 0.50, 0.50])
    r = paired(a, b)
    assert r.n == 6 and r.mean_diff == pytest.approx(np.mean(a - b))
    assert r.p_ttest == pytest.approx(sps.ttest_rel(a, b).pvalue)
    assert r.p_wilcoxon == pytest.approx(sps.wilcoxon(a, b).pvalue)
    assert r.p_improve == pytest.approx(5 / 6)  # a wins on 5 of the 6 seeds
    assert r.ci_low <= r.mean_diff <= r.ci_high
    assert paired([0.5, 0.6], [0.5, 0.6]).p_improve == 0.5  # ties count half


def test_holm_by_hand():
    # sorted: 0.01 * 3 = 0.03; 0.03 * 2 = 0.06; 0.04 * 1 = 0.04 -> made monotone: 0.06
    assert holm([0.01, 0.04, 0.03]).tolist() == pytest.approx([0.03, 0.06, 0.06])
    out = holm([0.01, np.nan, 0.04])
    assert out[0] == pytest.approx(0.02) and np.isnan(out[1]) and out[2] == pytest.approx(0.04)


def test_wilcoxon_needs_six_pairs_for_five_percent():
    assert min_wilcoxon_p(5) == pytest.approx(0.0625) and min_wilcoxon_p(6) == pytest.approx(0.03125)
    x = np.arange(1, 6) / 10  # 5 pairs, all differences positive: the most extreme outcome
    assert sps.wilcoxon(x, np.zeros(5)).pvalue == pytest.approx(min_wilcoxon_p(5))


def test_friedman_ranks_by_hand():
    scores = pd.DataFrame({"a": [0.9, 0.8, 0.7, 0.9], "b": [0.5, 0.6, 0.65, 0.4], "c": [0.1, 0.7, 0.2, 0.3]})
    p, ranks, nemenyi = friedman_nemenyi(scores)
    assert ranks.tolist() == pytest.approx([1.0, 2.25, 2.75])  # b beats c in 3 blocks of 4
    assert p == pytest.approx(sps.friedmanchisquare(scores.a, scores.b, scores.c).pvalue)
    assert nemenyi.shape == (3, 3) and list(nemenyi.columns) == ["a", "b", "c"]
    assert friedman_nemenyi(scores[["a", "b"]]) is None  # fewer than three methods: no test
