"""Variance components of a crossed design: how much of a cell's spread comes from pretraining, how much from
the label draw, and what is left (their interaction and the protocol's own noise).

Model (two-way crossed random effects, one value per seed and draw): y_sd = mu + a_s + b_d + e_sd, with
a_s ~ N(0, s2_seed) the pretraining seed, b_d ~ N(0, s2_draw) the label draw (the same labels for every seed)
and e_sd ~ N(0, s2_residual). On a balanced grid the ANOVA estimators (mean squares; Searle, Casella and
McCulloch, *Variance Components*, 1992, ch. 4) equal the REML estimates wherever these are positive and need no
optimiser; statsmodels' MixedLM gives the same numbers (a test checks it) but fits iteratively, fails to converge
on the 2-5 levels a benchmark has, and gives no interval for a component. The intervals are the modified
large-sample intervals of Ting, Burdick, Graybill, Jeyaratnam and Lu (1990, J. Statist. Comput. Simul.
35:135-143; Burdick and Graybill, *Confidence Intervals on Variance Components*, 1992, sec. 3.3), which keep
close to their nominal coverage with few levels, where a bootstrap over 3 seeds cannot; the residual's is the
exact chi-square interval. No library implements them, so they are written here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from bench.report.stats import CONFIDENCE

SOURCES = ("seed", "draw", "residual")


@dataclass(frozen=True)
class Component:
    variance: float  # the estimate, 0 where the mean squares put it below
    low: float
    high: float

    @property
    def sd(self) -> tuple[float, float, float]:
        """(estimate, low, high) as standard deviations."""
        return math.sqrt(self.variance), math.sqrt(self.low), math.sqrt(self.high)


def mls_interval(c1: float, ms1: float, n1: int, c2: float, ms2: float, n2: int, confidence: float = CONFIDENCE):
    """Interval for c1 E[ms1] - c2 E[ms2] (ms_i mean squares with n_i degrees of freedom), both bounds clipped at
    0: the modified large-sample interval of Ting et al. (1990)."""
    a = (1 - confidence) / 2

    def f(upper_area: float, d1: float, d2: float) -> float:  # F quantile with `upper_area` to its right
        return float(stats.chi2.isf(upper_area, d1) / d1) if math.isinf(d2) else float(stats.f.isf(upper_area, d1, d2))

    inf = math.inf
    g1, g2 = 1 - 1 / f(a, n1, inf), 1 - 1 / f(a, n2, inf)
    h1, h2 = 1 / f(1 - a, n1, inf) - 1, 1 / f(1 - a, n2, inf) - 1
    fa, f1a = f(a, n1, n2), f(1 - a, n1, n2)
    g12 = ((fa - 1) ** 2 - g1**2 * fa**2 - h2**2) / fa
    h12 = ((1 - f1a) ** 2 - h1**2 * f1a**2 - g2**2) / f1a
    x1, x2 = c1 * ms1, c2 * ms2
    estimate = x1 - x2
    low = estimate - math.sqrt(max(g1**2 * x1**2 + h2**2 * x2**2 + g12 * x1 * x2, 0.0))
    high = estimate + math.sqrt(max(h1**2 * x1**2 + g2**2 * x2**2 + h12 * x1 * x2, 0.0))
    return max(low, 0.0), max(high, 0.0)


def components(grid: np.ndarray, confidence: float = CONFIDENCE) -> dict[str, Component]:
    """The three components of ``grid`` (seeds x draws, at least 2 x 2, no NaN), each with its interval."""
    y = np.asarray(grid, dtype=float)
    s, d = y.shape
    if s < 2 or d < 2 or np.isnan(y).any():
        raise ValueError(f"variance components need a complete grid of at least 2 seeds x 2 draws, got {s} x {d}")
    mean, by_seed, by_draw = y.mean(), y.mean(axis=1), y.mean(axis=0)
    n_seed, n_draw, n_res = s - 1, d - 1, (s - 1) * (d - 1)
    ms_seed = d * ((by_seed - mean) ** 2).sum() / n_seed
    ms_draw = s * ((by_draw - mean) ** 2).sum() / n_draw
    ms_res = ((y - by_seed[:, None] - by_draw[None, :] + mean) ** 2).sum() / n_res
    a = (1 - confidence) / 2
    residual = Component(
        ms_res, n_res * ms_res / float(stats.chi2.isf(a, n_res)), n_res * ms_res / float(stats.chi2.isf(1 - a, n_res))
    )
    seed = Component(max((ms_seed - ms_res) / d, 0.0), *mls_interval(1 / d, ms_seed, n_seed, 1 / d, ms_res, n_res))
    draw = Component(max((ms_draw - ms_res) / s, 0.0), *mls_interval(1 / s, ms_draw, n_draw, 1 / s, ms_res, n_res))
    return {"seed": seed, "draw": draw, "residual": residual}


def grids(df: pd.DataFrame, value: str = "test_acc") -> dict[tuple[str, str, str], np.ndarray]:
    """(task, protocol, budget) -> its seeds x draws grid of finished cells, for every cell evaluated on at least
    2 draws of at least 2 seeds; seeds missing a draw are left out (the grid must be complete)."""
    out: dict = {}
    if df.empty or "draw" not in df:
        return out
    done = df[df.status == "finished"] if "status" in df else df
    for key, g in done.groupby(["task", "protocol", "budget"], sort=False):
        wide = g.pivot_table(index="seed", columns="draw", values=value).dropna()
        if wide.shape[0] >= 2 and wide.shape[1] >= 2:
            out[key] = wide.to_numpy()
    return out


def variance_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (task, protocol, budget) with a grid (:func:`grids`): its size and each component's SD with
    its interval, in accuracy (0-1), and the share of a single cell's variance each explains."""
    rows = []
    for (task, protocol, budget), grid in grids(df).items():
        comp = components(grid)
        total = sum(c.variance for c in comp.values())
        row = {"task": task, "protocol": protocol, "budget": budget, "seeds": grid.shape[0], "draws": grid.shape[1]}
        for name, c in comp.items():
            sd, low, high = c.sd
            row |= {f"sd_{name}": sd, f"sd_{name}_low": low, f"sd_{name}_high": high}
            row[f"share_{name}"] = c.variance / total if total > 0 else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def variance_markdown(df: pd.DataFrame, title: str) -> str | None:
    """variance.md: the components of every (task, protocol, budget) with a grid; None when no cell has one."""
    table = variance_table(df)
    if table.empty:
        return None
    pct = f"{CONFIDENCE:.0%}"
    lines = [
        f"# Variance components: {title}",
        "",
        "Where the spread of one cell (one encoder, one label draw) comes from: the pretraining seed, the label draw "
        "(the same labels for every encoder), and the rest (how a draw suits one encoder, and the protocol's own "
        "noise). Standard deviations in accuracy points, each with its "
        f"{pct} interval (modified large-sample for seed and draw, chi-square for the residual), from the ANOVA of "
        "the seeds x draws grid; share: of a single cell's variance. A mean over S seeds and D draws has variance "
        "seed^2/S + draw^2/D + residual^2/(S D); the paired tests are over seeds, draws averaged.",
        "",
        "| protocol | budget | task | seeds x draws | seed SD [interval] | draw SD [interval] | residual SD "
        "[interval] | share seed / draw / residual |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in table.itertuples():
        cols = [r.protocol, r.budget, r.task, f"{r.seeds} x {r.draws}"]
        for name in SOURCES:
            sd, low, high = (100 * getattr(r, f"sd_{name}{x}") for x in ("", "_low", "_high"))
            cols.append(f"{sd:.2f} [{low:.2f}, {high:.2f}]")
        shares = [getattr(r, f"share_{n}") for n in SOURCES]
        cols.append(" / ".join("-" if math.isnan(x) else f"{x:.0%}" for x in shares))
        lines.append("| " + " | ".join(str(c) for c in cols) + " |")
    return "\n".join(lines) + "\n"
