"""MLflow runs -> one tidy table -> <results_dir>/<suite>/: tables (Markdown, LaTeX), statistics, figures.

Every number carries its n and its interval (:func:`bench.report.stats.interval`, the same in tables, console and
figures); a partial sweep says so in every output. Tasks are tested against ``scratch``+``finetune`` (training on
the labels alone) in every protocol, and tasks under a frozen protocol also against ``random`` under the same
protocol. The Holm family is the tasks against one baseline within one protocol at one budget: each budget
column answers its own question (which task pays off with that many labels), so a column's markers do not depend
on the other budgets. Baselines are never tested against each other. Each comparison's verdict (better, worse,
equivalent within the suite's margin, inconclusive) is in the captions, stats.md and stats.csv, and
verdicts.md says them in sentences (:mod:`bench.report.verdicts`).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench.report.captions import family_sentence, interval_sentence
from bench.report.caveats import caveats_markdown
from bench.report.comparisons import budget_order, comparisons, protocol_order, rank_blocks, rank_note, title
from bench.report.cost import cost_files
from bench.report.stats import (
    MARGIN,
    MIN_T_SEEDS,
)
from bench.report.table_cells import TEXT
from bench.report.tables import latex_table, markdown_table, partial_note
from bench.report.tidy import REFERENCE, by_seed
from bench.report.variance import variance_markdown, variance_table
from bench.report.verdicts import legend, margin_text, verdicts_markdown


def stats_markdown(comp: pd.DataFrame, df: pd.DataFrame) -> str:
    """stats.md: every family of paired comparisons, and the rank comparisons; columns that cannot carry
    information at the suite's n are left out, saying why once."""
    n_max = int(comp.n.max()) if len(comp) else 0
    lines = [
        f"# Paired comparisons against the baselines: {title(df)}",
        "",
        "Paired by seed (within a seed every task shares the labelled subsets and the initialisation). Test: exact "
        "two-sided sign-flip permutation test on the per-seed differences of test accuracy (smallest possible p "
        "with n seeds: 2/2^n). Holm family: the tasks against one baseline within one protocol at one budget "
        "(each budget answers its own question); baselines are not tested against each other. "
        + interval_sentence(set(comp.ci_method) if len(comp) else set(), TEXT, "Intervals", "[-1, 1]"),
        "",
    ]
    if len(comp):
        lines += [f"Verdicts. {legend(float(comp.margin.iloc[0]))} In full: verdicts.md.", ""]
    extra = n_max >= MIN_T_SEEDS
    if len(comp) and not extra:
        seeds = "one seed" if n_max == 1 else f"{n_max} seeds"
        lines += [
            f"Left out with {seeds}: the paired t-test p (one degree of freedom: two equal differences "
            "would read as near-certainty) and the exact Wilcoxon signed-rank p (with n < 3 pairs it equals the "
            "sign-flip p). Both are in stats.csv.",
            "",
        ]
    head = "| budget | task | n | mean diff [interval] | p sign-flip | p Holm |"
    head += " p t-test (Holm) | p Wilcoxon (Holm) | p TOST (Holm) |" if extra else ""
    head += " P(improve) | | verdict |"
    for (protocol, base), fam in comp.groupby(["protocol", "baseline"], sort=False) if len(comp) else []:
        ref = "+".join(REFERENCE) if base == REFERENCE[0] else f"{base}+{protocol}"
        lines += [
            f"## {protocol}: tasks against {ref}",
            "",
            family_sentence(comp, protocol, TEXT, base),  # the tests behind the table's markers, said once here
            "",
            head,
            "|---|---|---:|---|---:|---:|" + ("---:|---:|---:|" if extra else "") + "---:|---|---|",
        ]
        for r, pw in zip(fam.itertuples(), fam.p_wilcoxon_holm, strict=True):
            label = "range " if r.ci_method == "range" else ""
            ci = f" {label}[{r.ci_low:+.4f}, {r.ci_high:+.4f}]" if r.n > 1 else ""
            cols = [r.budget, r.task, r.n, f"{r.mean_diff:+.4f}{ci}", f"{r.p_signflip:.3g}", f"{r.p_holm:.3g}"]
            cols += [f"{r.p_ttest_holm:.3g}", f"{pw:.3g}", f"{r.p_tost_holm:.3g}"] if extra else []
            key = r.marker if base == REFERENCE[0] else f"{r.marker}_{base}"
            verdict = f"equivalent within {margin_text(r.margin)}" if r.verdict == "equivalent" else r.verdict
            cols += [f"{r.p_improve:.2f}", TEXT[key] if r.marker else "", verdict]
            lines.append("| " + " | ".join(str(c) for c in cols) + " |")
        lines.append("")
    lines += [caveats_markdown(df), "## Rank comparison (cd_diagram.png)", ""]
    for protocol in protocol_order(df):
        for budget in budget_order(df):
            scores = rank_blocks(df, protocol, budget)
            note = rank_note(scores, protocol, budget)
            drawn = f"{protocol} at {budget}: {len(scores)} seeds x {scores.shape[1]} tasks, drawn."
            lines.append(f"- {note}" if note else f"- {drawn}")
    return "\n".join(lines) + partial_note(df) + "\n"


def write_report(
    df: pd.DataFrame,
    out: Path,
    suite: str | None = None,
    dataset: str | None = None,
    margin: float = MARGIN,
    data_warnings: list[str] = (),
) -> list[Path]:
    """Write every report file into ``out``; returns the paths written. ``suite`` and ``dataset`` (for titles
    and captions) override the tidy table's ``suite`` and ``dataset`` columns; ``margin`` is the equivalence
    margin (a difference of accuracies, the suite's ``report.equivalence_margin``); ``data_warnings`` (test images
    that are also training images, ``Dataset.warnings``) follow the table."""
    from bench.files import write_atomic
    from bench.report.figures import write_figures
    from bench.report.health import health_markdown

    df = df.copy()
    if suite is not None or "suite" not in df:
        df["suite"] = suite or ""
    if dataset is not None or "dataset" not in df:
        df["dataset"] = dataset or ""
    out.mkdir(parents=True, exist_ok=True)
    runs, df = df, by_seed(df)  # every interval and test is over pretraining seeds, draws averaged
    comp = comparisons(df, margin)
    files = {
        "runs.csv": runs.to_csv(index=False),
        "stats.csv": comp.to_csv(index=False),
        "table.md": markdown_table(df, comp) + "".join(f"\n**Data warning:** {w}\n" for w in data_warnings) + "\n",
        "table.tex": latex_table(df, comp),
        "stats.md": stats_markdown(comp, df),
        "verdicts.md": verdicts_markdown(comp, df),
    }
    variance = variance_markdown(runs, title(df))  # over every seed and draw
    if variance is not None:
        files["variance.md"] = variance
        files["variance.csv"] = variance_table(runs).to_csv(index=False)
    health = health_markdown(df)
    if health is not None:
        files["health.md"] = health
    files |= cost_files(df)
    for name, text in files.items():  # each file whole or not at all: a killed report leaves the previous one
        write_atomic(out / name, text.encode())
    return [out / n for n in files] + write_figures(df, comp, out)
