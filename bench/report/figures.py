"""The report's figures, drawn with matplotlib from the tidy table and the comparisons of :mod:`bench.report`.

Every interval drawn is :func:`bench.report.stats.interval`, the one the tables print, and every title says which it is
and names the suite and dataset. Colours, markers and line styles come from :mod:`bench.report.palette`; PDFs embed
TrueType fonts.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from bench.files import write_atomic  # noqa: E402
from bench.report import palette
from bench.report.captions import interval_sentence
from bench.report.comparisons import budget_label, budget_order, protocol_order, rank_blocks, rank_note, title
from bench.report.stats import ALPHA, friedman_nemenyi, interval
from bench.report.table_cells import TEXT
from bench.report.tidy import BASELINES, REFERENCE, frozen_protocols


def _partial(df: pd.DataFrame) -> str:
    missing = int((df.status != "finished").sum())
    return f" (partial: {missing} of {len(df)} cells missing)" if missing else ""


def _positions(df: pd.DataFrame) -> dict[str, float]:
    """x position (labelled images) of each budget; the full set at its size, else one decade past the largest."""
    pos = {}
    for b in budget_order(df):
        n = df.n_labels[df.budget == b].dropna()
        pos[b] = float(n.median()) if len(n) else (np.nan if b == "full" else float(b))
    if "full" in pos and np.isnan(pos["full"]):
        pos["full"] = 10 * max([v for v in pos.values() if not np.isnan(v)], default=100)
    return pos


def label_efficiency(df: pd.DataFrame) -> plt.Figure | None:
    """Test accuracy against labelled images (log axis), one panel per protocol, one line per task: the mean over
    seeds with the table's interval as error bars; baselines dashed; the full training set labelled "full"."""
    ok = df[df.status == "finished"]
    if ok.empty:
        return None
    protocols = protocol_order(df)
    pos = _positions(df)
    fig, axes = plt.subplots(1, len(protocols), figsize=(3.8 * len(protocols), 3.6), sharey=True, squeeze=False)
    handles: dict[str, Line2D] = {}
    methods: set[str] = set()
    for ax, protocol in zip(axes[0], protocols, strict=True):
        for task, grp in ok[ok.protocol == protocol].groupby("task", sort=False):
            ivs = [(pos[b], interval(grp.test_acc[grp.budget == b])) for b in budget_order(df)]
            ivs = [(x, iv) for x, iv in ivs if iv.n]
            methods |= {iv.method for _, iv in ivs}
            x = [p for p, _ in ivs]
            mean = np.array([iv.mean for _, iv in ivs])
            err = [mean - [iv.low for _, iv in ivs], [iv.high for _, iv in ivs] - mean]
            line = ax.errorbar(x, mean, yerr=err, capsize=3, markersize=6, label=task, **palette.style(task))
            handles.setdefault(task, line.lines[0])
        ax.set_xscale("log")
        ax.set_xticks(list(pos.values()), [b if b == "full" else f"{int(float(b)):,}" for b in pos])
        ax.minorticks_off()
        ax.set_title(protocol)
        ax.set_xlabel("labelled images")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy")
    order = sorted(handles, key=lambda t: (t in BASELINES, t))
    fig.legend([handles[t] for t in order], order, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    note = interval_sentence(methods, TEXT, "bars")
    fig.suptitle(f"{title(df)}: label efficiency, mean over seeds{_partial(df)}\n{note}", fontsize=10)
    fig.tight_layout()
    return fig


def _panels(comp: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(panel title, comparisons) per frozen protocol against random under it, then fine-tuned tasks against
    scratch+finetune: like against like (a frozen probe beside fine-tuning would read as the task's loss; the
    tables and verdicts hold those comparisons)."""
    out = []
    for protocol in frozen_protocols():
        sub = comp[(comp.protocol == protocol) & (comp.baseline == "random")]
        if len(sub):
            out.append((f"{protocol}: task − random+{protocol}", sub.assign(entry=sub.task)))
    sub = comp[(comp.baseline == REFERENCE[0]) & (comp.protocol == REFERENCE[1])]
    if len(sub):
        out.append((f"{REFERENCE[1]}: task − {'+'.join(REFERENCE)} (labels only)", sub.assign(entry=sub.task)))
    return out


def gain_heatmap(df: pd.DataFrame, comp: pd.DataFrame) -> plt.Figure | None:
    """Mean paired gain in accuracy points (x 100) over the matching baseline per (task, budget): one panel per
    frozen protocol against ``random`` under that protocol, one of fine-tuned tasks against scratch+finetune; a
    shared colour bar."""
    panels = _panels(comp) if len(comp) else []
    if not panels:
        return None
    budgets = budget_order(df)
    shown = pd.concat([sub for _, sub in panels])
    vmax = max(1.0, float(np.nanmax(np.abs(shown.mean_diff))) * 100)
    heights = [p[1].entry.nunique() for p in panels]
    fig, axes = plt.subplots(
        len(panels),
        1,
        figsize=(1.2 * len(budgets) + 4.5, 0.4 * sum(heights) + 1.2 * len(panels) + 0.8),
        height_ratios=heights,
        layout="constrained",
        squeeze=False,
    )
    axes = axes[:, 0]
    marks = set()
    for ax, (name, sub) in zip(axes, panels, strict=True):
        gain = sub.pivot(index="entry", columns="budget", values="mean_diff").reindex(columns=budgets) * 100
        mark = sub.pivot(index="entry", columns="budget", values="marker").reindex(columns=budgets).fillna("")
        if "random" in name:  # the tables' symbols: △/▽ against random, ▲/▼ against scratch+finetune
            mark = mark.map(lambda m: f"{m}_random" if m else m)
        marks |= set(mark.to_numpy().ravel()) - {""}
        labels = gain.map(lambda v: "" if np.isnan(v) else f"{v:+.1f}") + mark.map(lambda m: TEXT.get(m, ""))
        sns.heatmap(gain, annot=labels, fmt="", cmap="RdBu", vmin=-vmax, vmax=vmax, cbar=False, ax=ax)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("labelled images")
        ax.set_ylabel("task")
        ax.tick_params(axis="y", rotation=0)
    fig.colorbar(axes[0].collections[0], ax=list(axes), label="gain (accuracy points)")
    legend = ""
    if marks:
        order = ("up", "down", "up_random", "down_random")
        shown = "/".join(TEXT[m] for m in order if m in marks)
        legend = f"; {shown}: sign-flip p < {ALPHA}, Holm over the tasks against the panel's baseline at one budget"
    fig.suptitle(f"{title(df)}: gain over the matching baseline, mean over seeds{_partial(df)}{legend}", fontsize=10)
    return fig


def cd_diagram(df: pd.DataFrame) -> plt.Figure | None:
    """Critical-difference diagrams (Demšar 2006, JMLR 7:1-30; scikit-posthocs), one per protocol and budget with
    enough independent blocks (:func:`bench.report.comparisons.rank_blocks`, ``rank_note``): the question each
    table column answers. The axis spans every possible rank, 1 to the number of tasks."""
    import scikit_posthocs as sp

    drawn = []
    for protocol in protocol_order(df):
        for budget in budget_order(df):
            scores = rank_blocks(df, protocol, budget)
            if not rank_note(scores, protocol, budget):
                drawn.append((protocol, budget, scores, friedman_nemenyi(scores)))
    if not drawn:
        return None
    fig, axes = plt.subplots(len(drawn), 1, figsize=(8, 2.2 * len(drawn) + 0.6), squeeze=False)
    for ax, (protocol, budget, scores, (p, ranks, nemenyi)) in zip(axes[:, 0], drawn, strict=True):
        colours = {t: palette.colour(t) for t in ranks.index}
        sp.critical_difference_diagram(ranks, nemenyi, ax=ax, color_palette=colours)
        k = scores.shape[1]
        low, high = ax.get_xlim()
        ax.set_xlim((1, k) if low <= high else (k, 1))
        ax.set_xticks(range(1, k + 1))
        ax.set_title(
            f"{protocol} at {budget_label(budget, df)}: average rank of {k} tasks over {len(scores)} seeds "
            f"(blocks); Friedman p = {p:.3g}; bars: Nemenyi p ≥ {ALPHA}",
            fontsize=9,
        )
    fig.suptitle(f"{title(df)}: critical-difference diagram{_partial(df)}", fontsize=10)
    fig.tight_layout()
    return fig


def health_vs_accuracy(df: pd.DataFrame) -> plt.Figure | None:
    """Final RankMe (no labels) against test accuracy, one point per pretraining task (means over seeds), one
    panel per protocol (rows) and budget (columns) with at least ``MIN_DRAWN`` tasks, titled with Spearman's rho
    and its p (or why there is none); None when no panel has that many (health.md says so)."""
    from bench.report.health import MIN_DRAWN, correlations, has_health, per_task, why_none

    if not has_health(df):
        return None
    points, corr = per_task(df), correlations(df)
    corr = corr[corr.n_tasks >= MIN_DRAWN].set_index(["protocol", "budget"])
    if corr.empty:
        return None
    rows = list(dict.fromkeys(p for p, _ in corr.index))
    cols = list(dict.fromkeys(b for _, b in corr.index))
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(3.2 * len(cols), 3.2 * len(rows)), squeeze=False)
    for i, protocol in enumerate(rows):
        for j, budget in enumerate(cols):
            ax = axes[i][j]
            if (protocol, budget) not in corr.index:
                ax.set_axis_off()
                continue
            here = points[(points.protocol == protocol) & (points.budget == budget)]
            for row in here.itertuples():
                style = {k: v for k, v in palette.style(row.task).items() if k in ("color", "marker")}
                ax.plot(row.rankme, row.test_acc, linestyle="none", markersize=7, **style)
                ax.annotate(row.task, (row.rankme, row.test_acc), fontsize=7, xytext=(3, 3), textcoords="offset points")
            c = corr.loc[(protocol, budget)]
            said = (
                why_none(int(c.n_tasks))
                if np.isnan(c.spearman_rho)
                else f"Spearman {c.spearman_rho:+.2f} (p {c.spearman_p:.3f}, n = {int(c.n_tasks)})"
            )
            ax.set_title(f"{protocol}, {budget} labels\n{said}", fontsize=8)
            ax.set_xlabel("final RankMe (no labels)")
            ax.set_ylabel("test accuracy" if j == 0 else "")
            ax.grid(alpha=0.3)
    fig.suptitle(f"{title(df)}: label-free health against test accuracy, means over seeds", fontsize=10)
    fig.tight_layout()
    return fig


def figure_formats() -> tuple[str, ...]:
    """The file formats every figure is saved in: PNG and PDF, or ``$BENCH_FIGURE_FORMATS`` (e.g. ``png``)."""
    chosen = tuple(f.strip() for f in os.environ.get("BENCH_FIGURE_FORMATS", "png,pdf").split(",") if f.strip())
    unknown = [f for f in chosen if f not in ("png", "pdf", "svg")]
    if unknown:
        raise ValueError(f"$BENCH_FIGURE_FORMATS: unknown format {unknown[0]!r}; use png, pdf or svg, comma-separated")
    return chosen


def write_figures(df: pd.DataFrame, comp: pd.DataFrame, out: Path) -> list[Path]:
    """Draw and save every figure in ``out`` in each of ``figure_formats()``; returns the paths written."""
    written = []
    formats = figure_formats()
    with plt.rc_context(palette.RC):
        for name, draw in (
            ("label_efficiency", lambda: label_efficiency(df)),
            ("gain_heatmap", lambda: gain_heatmap(df, comp)),
            ("cd_diagram", lambda: cd_diagram(df)),
            ("health_vs_accuracy", lambda: health_vs_accuracy(df)),
        ):
            fig = draw()
            if fig is None:
                continue
            for ext in formats:  # drawn in memory, written whole
                buffer = io.BytesIO()
                fig.savefig(buffer, format=ext, bbox_inches="tight")
                write_atomic(out / f"{name}.{ext}", buffer.getvalue())
                written.append(out / f"{name}.{ext}")
            plt.close(fig)
    return written
