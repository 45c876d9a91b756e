"""MLflow runs -> one tidy table -> results/<suite>/: tables (Markdown, LaTeX), statistics, figures.

Every number carries its n and its interval; a partial sweep says so in every output. ``scratch`` (training on
the labels alone) is the reference every task is tested against; ``random`` is compared within its protocols.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from bench.stats import friedman_nemenyi, holm, mean_ci, min_wilcoxon_p, paired  # noqa: E402

BASELINES = ("scratch", "random")
ALPHA = 0.05


def tidy(tracker, cells) -> pd.DataFrame:
    """One row per planned evaluation cell: its identity, and test_acc (NaN when it has no finished run)."""
    finished = tracker.finished()
    rows = []
    for c in cells:
        if c.kind != "eval":
            continue
        run = finished.get(c.key)
        m = run.data.metrics if run else {}
        rows.append(
            {
                "task": c.task,
                "protocol": c.protocol,
                "budget": str(c.budget),
                "seed": c.seed,
                "test_acc": m.get("test_acc", np.nan),
                "val_acc": m.get("val_acc", np.nan),
                "train_acc": m.get("train_acc", np.nan),  # fine-tuning: accuracy on its own training labels
                "n_labels": m.get("n_labels", np.nan if c.budget == "full" else int(c.budget)),
                "status": "finished" if run else "missing",
                "hp_source": run.data.tags.get("hp_source", "") if run else "",
                "cell_key": c.key,
                "run_id": run.info.run_id if run else "",
                "git_commit": run.data.tags.get("git_commit", "") if run else "",
                "code_identity": run.data.tags.get("code_identity", "") if run else "",
                "data_identity": run.data.tags.get("data_identity", "") if run else "",
            }
        )
    return pd.DataFrame(rows)


def comparisons(df: pd.DataFrame) -> pd.DataFrame:
    """Every (task, protocol) against each baseline at every budget, paired by seed, Holm-corrected per test."""
    rows = []
    ok = df[df.status == "finished"]
    for budget in df.budget.unique():
        at = ok[ok.budget == budget]
        for (task, protocol), grp in at.groupby(["task", "protocol"], sort=False):
            for base in BASELINES:
                if task == base:
                    continue
                ref = at[(at.task == base) & (at.protocol == ("finetune" if base == "scratch" else protocol))]
                if ref.empty:
                    continue
                both = grp.merge(ref, on="seed", suffixes=("", "_ref"))
                r = paired(both.test_acc, both.test_acc_ref)
                rows.append(
                    {
                        "budget": budget,
                        "task": task,
                        "protocol": protocol,
                        "baseline": base,
                        "baseline_protocol": ref.protocol.iloc[0],
                        "n": r.n,
                        "mean_diff": r.mean_diff,
                        "ci_low": r.ci_low,
                        "ci_high": r.ci_high,
                        "p_ttest": r.p_ttest,
                        "p_wilcoxon": r.p_wilcoxon,
                        "p_improve": r.p_improve,
                    }
                )
    out = pd.DataFrame(rows)
    if len(out):
        out["p_ttest_holm"] = holm(out.p_ttest)
        out["p_wilcoxon_holm"] = holm(out.p_wilcoxon)
    return out


def _budget_order(df: pd.DataFrame) -> list[str]:
    return sorted(df.budget.unique(), key=lambda b: float("inf") if b == "full" else int(b))


def _cells(df: pd.DataFrame, comp: pd.DataFrame, protocol: str):
    """{task: {budget: (mean, lo, hi, n, planned, marker)}} for one protocol."""
    table = {}
    sub = df[df.protocol == protocol]
    for task, grp in sub.groupby("task", sort=False):
        table[task] = {}
        for budget in _budget_order(df):
            cell = grp[grp.budget == budget]
            if cell.empty:
                continue
            mean, lo, hi = mean_ci(cell.test_acc.dropna())
            marker = ""
            if len(comp):
                hit = comp[
                    (comp.task == task)
                    & (comp.protocol == protocol)
                    & (comp.budget == budget)
                    & (comp.baseline == "scratch")
                ]
                if len(hit) and hit.p_ttest_holm.iloc[0] < ALPHA:
                    marker = "up" if hit.mean_diff.iloc[0] > 0 else "down"
            table[task][budget] = (mean, lo, hi, int(cell.test_acc.notna().sum()), len(cell), marker)
    return table


def markdown_table(df: pd.DataFrame, comp: pd.DataFrame) -> str:
    budgets = _budget_order(df)
    parts = []
    for protocol in df.protocol.unique():
        table = _cells(df, comp, protocol)
        best = {
            b: max((v[b][0] for v in table.values() if b in v and not np.isnan(v[b][0])), default=None) for b in budgets
        }
        lines = [
            f"**{protocol}**: test accuracy, mean [95% CI] (n seeds); ▲/▼ = better/worse than scratch+finetune "
            "(paired t-test over seeds, Holm-corrected p < 0.05); best per column in bold",
            "",
            "| task | " + " | ".join(f"{b} labels" if b != "full" else "full" for b in budgets) + " |",
            "|---|" + "---:|" * len(budgets),
        ]
        for task, row in table.items():
            out = []
            for b in budgets:
                if b not in row:
                    out.append("")
                    continue
                mean, lo, hi, n, planned, marker = row[b]
                if n == 0:
                    out.append(f"— (0 of {planned})")
                    continue
                text = f"{mean:.4f}" if not np.isnan(lo) else f"{mean:.4f}"
                text = f"**{text}**" if best[b] is not None and mean == best[b] else text
                ci = f" [{lo:.3f}, {hi:.3f}]" if not np.isnan(lo) else ""
                gap = f" of {planned}" if n < planned else ""
                out.append(f"{text}{ci} (n={n}{gap}){' ▲' if marker == 'up' else ' ▼' if marker == 'down' else ''}")
            lines.append(f"| {task} | " + " | ".join(out) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + _partial_note(df)


def latex_table(df: pd.DataFrame, comp: pd.DataFrame) -> str:
    budgets = _budget_order(df)
    out = ["% generated by bench report; needs \\usepackage{booktabs}"]
    for protocol in df.protocol.unique():
        table = _cells(df, comp, protocol)
        best = {
            b: max((v[b][0] for v in table.values() if b in v and not np.isnan(v[b][0])), default=None) for b in budgets
        }
        out += [
            "\\begin{table}[t]",
            "\\centering",
            "\\begin{tabular}{l" + "r" * len(budgets) + "}",
            "\\toprule",
            "Task & " + " & ".join(b if b != "full" else "full" for b in budgets) + " \\\\",
            "\\midrule",
        ]
        for task, row in table.items():
            cells = []
            for b in budgets:
                if b not in row or row[b][3] == 0:
                    cells.append("--")
                    continue
                mean, lo, hi, n, planned, marker = row[b]
                num = f"{100 * mean:.2f}"
                num = f"\\textbf{{{num}}}" if best[b] is not None and mean == best[b] else num
                pm = f" $\\pm$ {100 * (hi - lo) / 2:.2f}" if not np.isnan(lo) else ""
                sig = {"up": "$^{\\uparrow}$", "down": "$^{\\downarrow}$"}.get(marker, "")
                cells.append(f"{num}{pm}{sig}" + ("$^{*}$" if n < planned else ""))
            out.append(task.replace("_", "\\_") + " & " + " & ".join(cells) + " \\\\")
        n_seeds = int(df.seed.nunique())
        out += [
            "\\bottomrule",
            "\\end{tabular}",
            f"\\caption{{{protocol}: test accuracy (\\%), mean $\\pm$ half-width of the 95\\% CI over {n_seeds} "
            "seeds; $\\uparrow/\\downarrow$: better/worse than scratch+finetune (paired t-test, Holm, "
            "$p<0.05$); $^{*}$: partial (missing seeds).}",
            "\\end{table}",
            "",
        ]
    return "\n".join(out)


def _partial_note(df: pd.DataFrame) -> str:
    missing = int((df.status != "finished").sum())
    note = f"\n\nPARTIAL: {missing} of {len(df)} evaluation cells have no finished run." if missing else ""
    return note + provenance(df)


def provenance(df: pd.DataFrame) -> str:
    """The code and data behind the numbers. Cells run at different commits are reused only where the code that
    decides them is unchanged (equal code identity); the note says so whenever commits differ."""
    ok = df[df.status == "finished"]
    if ok.empty or "git_commit" not in ok:
        return ""
    commits = sorted({c[:10] for c in ok.git_commit if c})
    data = sorted({d for d in ok.data_identity if d})
    code = ok.groupby("task").code_identity.agg(lambda s: ", ".join(sorted({c for c in s if c})))
    text = f"\n\nCode: git commit {', '.join(commits) or 'unknown'}"
    if len(commits) > 1:
        text += (
            f" ({len(commits)} commits: cells are reused across commits only where the code that decides them is "
            "unchanged, i.e. equal code identity)"
        )
    text += "; code identity per task: " + ", ".join(f"{t} {c or 'unrecorded'}" for t, c in code.items())
    text += f". Data identity: {', '.join(data) or 'unrecorded'}."
    if (code.str.contains(",") | (code == "")).any():
        text += " WARNING: some task's numbers come from more than one code version, or from unrecorded code."
    return text


def stats_markdown(comp: pd.DataFrame, df: pd.DataFrame) -> str:
    sizes = df[df.status == "finished"].groupby(["task", "protocol", "budget"]).size()
    n_seeds = int(sizes.max()) if len(sizes) else 0
    lines = [
        "# Paired comparisons against the baselines",
        "",
        "Paired by seed (shared labelled subsets and initialisations). p-values Holm-corrected over all rows.",
        "",
    ]
    if min_wilcoxon_p(n_seeds) >= ALPHA:
        lines += [
            f"With n = {n_seeds} seeds the smallest possible two-sided Wilcoxon p is "
            f"{min_wilcoxon_p(n_seeds):.3g}: no Wilcoxon test here can reach p < {ALPHA} "
            "(an exact two-sided Wilcoxon needs n >= 6). The t-test can, but leans on normality.",
            "",
        ]
    if 0 < n_seeds < 10:
        lines += [
            f"Bootstrap intervals from {n_seeds} seeds understate the uncertainty (a resample can only repeat the "
            "few differences observed); read them as the spread of those differences.",
            "",
        ]
    lines += [
        "| budget | task | protocol | vs | n | mean diff [95% bootstrap CI] | p t (Holm) | p Wilcoxon (Holm) "
        "| P(improve) |",
        "|---|---|---|---|---:|---|---:|---:|---:|",
    ]
    for r in comp.itertuples():
        ci = f" [{r.ci_low:+.4f}, {r.ci_high:+.4f}]" if not np.isnan(r.ci_low) else ""
        lines.append(
            f"| {r.budget} | {r.task} | {r.protocol} | {r.baseline}+{r.baseline_protocol} | {r.n} | "
            f"{r.mean_diff:+.4f}{ci} | {r.p_ttest_holm:.3g} | {r.p_wilcoxon_holm:.3g} | {r.p_improve:.2f} |"
        )
    return "\n".join(lines) + _partial_note(df) + "\n"


def figures(df: pd.DataFrame, comp: pd.DataFrame, out: Path) -> list[Path]:
    written = []
    ok = df[df.status == "finished"].copy()
    note = " (partial)" if (df.status != "finished").any() else ""
    if ok.empty:
        return written
    ok["entry"] = ok.task + "+" + ok.protocol
    ok["baseline"] = ok.task.isin(BASELINES)
    g = sns.relplot(
        data=ok,
        x="n_labels",
        y="test_acc",
        hue="task",
        style="baseline",
        col="protocol",
        kind="line",
        errorbar=("ci", 95),
        marker="o",
        dashes={False: "", True: (4, 2)},
        height=3.5,
        aspect=1.1,
    )
    g.set(xscale="log", xlabel="labelled images", ylabel="test accuracy")
    g.figure.suptitle(f"label efficiency, mean and 95% CI over seeds{note}", y=1.03)
    for ext in ("png", "pdf"):
        g.figure.savefig(out / f"label_efficiency.{ext}", bbox_inches="tight", dpi=120)
        written.append(out / f"label_efficiency.{ext}")
    plt.close(g.figure)

    vs = comp[comp.baseline == "scratch"] if len(comp) else comp
    if len(vs):
        vs = vs.assign(entry=vs.task + "+" + vs.protocol)
        gain = vs.pivot(index="entry", columns="budget", values="mean_diff")[_budget_order(df)]
        sig = vs.pivot(index="entry", columns="budget", values="p_ttest_holm")[_budget_order(df)]
        labels = gain.map(lambda v: f"{v:+.3f}") + sig.map(lambda p: "*" if p < ALPHA else "")
        fig, ax = plt.subplots(figsize=(1.4 * gain.shape[1] + 2, 0.5 * gain.shape[0] + 1.5))
        sns.heatmap(gain, annot=labels, fmt="", cmap="RdBu", center=0, ax=ax, cbar_kws={"label": "gain"})
        ax.set_title(f"accuracy gain over scratch+finetune (* Holm p < {ALPHA}){note}")
        fig.savefig(out / "gain_heatmap.png", bbox_inches="tight", dpi=120)
        plt.close(fig)
        written.append(out / "gain_heatmap.png")

    blocks = ok.pivot_table(index=["budget", "seed"], columns="entry", values="test_acc")
    result = friedman_nemenyi(blocks)
    if result is not None:
        import scikit_posthocs as sp

        p, ranks, nemenyi = result
        fig, ax = plt.subplots(figsize=(8, 0.4 * len(ranks) + 1.5))
        sp.critical_difference_diagram(ranks, nemenyi, ax=ax)
        ax.set_title(f"average rank over {len(blocks.dropna())} (budget, seed) blocks; Friedman p = {p:.3g}{note}")
        fig.savefig(out / "cd_diagram.png", bbox_inches="tight", dpi=120)
        plt.close(fig)
        written.append(out / "cd_diagram.png")
    return written


def write_report(df: pd.DataFrame, out: Path) -> list[Path]:
    """Write every report file into ``out``; returns the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    comp = comparisons(df)
    files = {
        "runs.csv": df.to_csv(index=False),
        "stats.csv": comp.to_csv(index=False),
        "table.md": markdown_table(df, comp) + "\n",
        "table.tex": latex_table(df, comp),
        "stats.md": stats_markdown(comp, df),
    }
    for name, text in files.items():
        (out / name).write_text(text)
    return [out / n for n in files] + figures(df, comp, out)
