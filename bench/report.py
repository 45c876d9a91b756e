"""MLflow runs -> one tidy table -> results/<suite>/: tables (Markdown, LaTeX), statistics, figures.

Every number carries its n and its interval (:func:`bench.stats.interval`, the same in tables, console and
figures); a partial sweep says so in every output. Tasks are tested against ``scratch``+``finetune`` (training on
the labels alone) in every protocol, and tasks under a frozen protocol also against ``random`` under the same
protocol. The Holm family is the tasks against one baseline within one protocol at one budget: each budget
column answers its own question (which task pays off with that many labels), so a column's markers do not depend
on the other budgets. Baselines are never tested against each other.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from bench.stats import (
    ALPHA,
    MIN_T_SEEDS,
    can_reach,
    holm,
    interval,
    min_blocks,
    min_sign_flip_p,
    paired,
    seeds_needed,
)

BASELINES = ("scratch", "random")
REFERENCE = ("scratch", "finetune")  # the labels-only reference
FROZEN = ("linear", "knn")


def _experiment_name(tracker) -> str:
    """The suite's name: the tracker's experiment name."""
    if getattr(tracker, "name", None):
        return tracker.name
    try:
        return tracker.client.get_experiment(tracker.experiment_id).name
    except Exception:  # no experiment (yet): no name to give
        return ""


def _n_labels(run, cell) -> float:
    if run is not None:
        for source in (run.data.params, run.data.metrics):  # a param now; a metric in older runs
            if "n_labels" in source:
                return float(source["n_labels"])
    return np.nan if cell.budget == "full" else float(cell.budget)


def _commit(run) -> str:
    if run is None:
        return ""
    tags = run.data.tags
    return tags.get("mlflow.source.git.commit") or tags.get("git_commit") or "unknown"


def _health_cost(tracker, run, costs: dict) -> float:
    """What the health measurements cost a pretraining run: their seconds over its epochs' training seconds, from
    the metric histories (read once per run); NaN when nothing was measured."""
    if run.info.run_id not in costs:
        history = {k: tracker.client.get_metric_history(run.info.run_id, k) for k in ("health_s", "epoch_s")}
        measured, trained = (sum(m.value for m in history[k]) for k in ("health_s", "epoch_s"))
        costs[run.info.run_id] = measured / trained if history["health_s"] and trained else np.nan
    return costs[run.info.run_id]


def tidy(tracker, cells) -> pd.DataFrame:
    """One row per planned evaluation cell: its identity, and test_acc (NaN when it has no finished run). The
    ``suite`` column is the MLflow experiment's name, ``dataset`` the runs' ``dataset.name`` param."""
    finished = tracker.finished()
    rows, costs = [], {}
    for c in cells:
        if c.kind != "eval":
            continue
        run = finished.get(c.key)
        m = run.data.metrics if run else {}
        source = finished.get(c.source) if c.source != c.key else None
        health = source.data.metrics if source is not None and source.data.tags.get("kind") == "pretrain" else {}
        tags = run.data.tags if run else {}
        rows.append(
            {
                "task": c.task,
                "protocol": c.protocol,
                "budget": str(c.budget),
                "seed": c.seed,
                "test_acc": m.get("test_acc", np.nan),
                "val_acc": m.get("val_acc", np.nan),
                "train_acc": m.get("train_acc", np.nan),  # fine-tuning: accuracy on its own training labels
                "rankme": health.get("rankme", np.nan),  # the source pretraining's last logged (final) RankMe
                "collapse_std": health.get("collapse_std", np.nan),  # and its collapse signal (0: collapsed)
                "health_cost": _health_cost(tracker, source, costs) if "rankme" in health else np.nan,
                "health_images": float(source.data.params.get("pretrain.health_images", np.nan))
                if "rankme" in health
                else np.nan,  # the sample RankMe was measured on (at most this many pool images)
                "n_labels": _n_labels(run, c),
                "status": "finished" if run else "missing",
                "hp_source": tags.get("hp_source", ""),
                "cell_key": c.key,
                "run_id": run.info.run_id if run else "",
                "git_commit": _commit(run),
                "code_identity": tags.get("parts") or tags.get("code_identity", ""),
                "data_identity": tags.get("data_identity", ""),
                "dataset": run.data.params.get("dataset.name", "") if run else "",
            }
        )
    df = pd.DataFrame(rows)
    if len(df):
        known = df.dataset[df.dataset != ""]
        df["dataset"] = known.mode().iloc[0] if len(known) else ""
        df.insert(0, "suite", _experiment_name(tracker))
    return df


def references(protocol: str, df: pd.DataFrame) -> list[tuple[str, str]]:
    """The (baseline, baseline protocol) pairs a task under ``protocol`` is tested against."""
    present = set(zip(df.task, df.protocol, strict=True))
    refs = [("random", protocol)] if protocol in FROZEN else []
    return [r for r in refs + [REFERENCE] if r in present]


def comparisons(df: pd.DataFrame) -> pd.DataFrame:
    """Every non-baseline (task, protocol) against each of its references at every budget, paired by seed; the
    sign-flip (and t-test, Wilcoxon) p-values Holm-corrected within each family (protocol, baseline, budget)."""
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
    return out


def protocol_order(df: pd.DataFrame) -> list[str]:
    """Frozen protocols first, then fine-tuning, then any other, each once."""
    known = [p for p in (*FROZEN, "finetune") if p in set(df.protocol)]
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


# ---------------------------------------------------------------------------------------------- table cells

# ▲/▼ against scratch+finetune (labels only); △/▽ against random under the same frozen protocol
MD = {
    "up": "▲",
    "down": "▼",
    "up_random": "△",
    "down_random": "▽",
    "range": "range",
    "lt": "<",
    "partial": "(n=k of m)",
    "bold": "**{}**",
    "x": "×",
}
TEX = {
    "up": "$\\uparrow$",
    "down": "$\\downarrow$",
    "up_random": "$\\bigtriangleup$",
    "down_random": "$\\bigtriangledown$",
    "range": "$^{\\dagger}$",
    "lt": "$<$",
    "partial": "$^{*}$",
    "bold": "\\textbf{{{}}}",
    "x": "$\\times$",
}
TEXT = MD | {"bold": "{}"}


def table_cells(df: pd.DataFrame, comp: pd.DataFrame, protocol: str) -> dict:
    """{task: {budget: (Interval, planned, markers)}} for one protocol; ``markers`` holds symbol keys separated
    by spaces: against scratch+finetune ("up", "down") and against random of a frozen protocol ("up_random",
    "down_random")."""
    table = {}
    sub = df[df.protocol == protocol]
    marks: dict = {}
    if len(comp):
        mine = comp[(comp.protocol == protocol) & comp.marker.astype(bool)]
        for r in sorted(mine.itertuples(), key=lambda r: r.baseline != REFERENCE[0]):  # ▲/▼ first
            key = r.marker if r.baseline == REFERENCE[0] else f"{r.marker}_{r.baseline}"
            marks[(r.task, r.budget)] = (marks.get((r.task, r.budget), "") + " " + key).strip()
    for task, grp in sub.groupby("task", sort=False):
        table[task] = {}
        for budget in budget_order(df):
            cell = grp[grp.budget == budget]
            if not cell.empty:
                table[task][budget] = (interval(cell.test_acc), len(cell), marks.get((task, budget), ""))
    return table


def best_per_column(table: dict, budgets: list[str]) -> dict:
    return {b: max((v[b][0].mean for v in table.values() if b in v and v[b][0].n), default=None) for b in budgets}


def cell_text(iv, planned: int, marker: str, best: bool, sym: dict) -> str:
    """One table cell: mean [interval] (n), in fractions; ``sym`` selects Markdown or plain text."""
    if iv.n == 0:
        return f"— (0 of {planned})"
    mean = sym["bold"].format(f"{iv.mean:.4f}") if best else f"{iv.mean:.4f}"
    ci = f" {'range ' if iv.method == 'range' else ''}[{iv.low:.3f}, {iv.high:.3f}]" if iv.n > 1 else ""
    gap = f" of {planned}" if iv.n < planned else ""
    mark = "".join(f" {sym[m]}" for m in marker.split())
    return f"{mean}{ci} (n={iv.n}{gap}){mark}"


# ---------------------------------------------------------------------------------------------- captions


def _tex(text: str) -> str:
    """``text`` with LaTeX's special characters escaped (``%`` is left to the caller)."""
    return re.sub(r"([_&#$])", r"\\\1", text)


def interval_sentence(methods: set[str], sym: dict, what: str = "brackets", bounds: str = "[0, 1]") -> str:
    """What the interval shown is, for the methods present (from :func:`bench.stats.interval`)."""
    parts = []
    if "t" in methods:
        parts.append(f"{what}: 95% Student-t confidence interval over seeds, clipped to {bounds}")
        if "range" in methods:
            parts.append(
                f"cells marked {sym['range'].strip()} have fewer than {MIN_T_SEEDS} seeds and show the seeds' "
                "range [min, max] instead, not a confidence interval"
            )
    elif "range" in methods:
        parts.append(
            f"{what}: the seeds' range [min, max]; fewer than {MIN_T_SEEDS} seeds are too few for a confidence interval"
        )
    if "single" in methods:
        parts.append("one seed: no interval")
    return "; ".join(parts) + "." if parts else ""


def family_sentence(comp: pd.DataFrame, protocol: str, sym: dict, baseline: str = REFERENCE[0]) -> str:
    """The marker legend for one table: which markers appear, the test, the Holm family, and how many seeds
    significance needs; only markers that appear are named."""
    fam = comp[(comp.protocol == protocol) & (comp.baseline == baseline)] if len(comp) else comp
    if fam.empty or fam.p_signflip.isna().all():
        return ""
    m, n = int(fam.family_size.max()), int(fam.n.max())
    ref = "+".join(REFERENCE) if baseline == REFERENCE[0] else f"{baseline}+{protocol}"
    need, floor = seeds_needed(m), min_sign_flip_p(n)
    family = f"Holm over the tasks against {ref} at each budget ({m} per budget)"
    lt = sym["lt"]
    seeds = "one seed" if n == 1 else f"{n} seeds"
    reach = f"with {seeds} the smallest possible p is {floor:.3g}; p {lt} {ALPHA} after Holm needs {need} seeds"
    shown = [k for k in ("up", "down") if (fam.marker == k).any()]
    keys = {k: k if baseline == REFERENCE[0] else f"{k}_{baseline}" for k in ("up", "down")}
    if not can_reach(n, m):
        return f"No markers: exact sign-flip test over seeds, {family}; {reach}."
    if not shown:
        return f"No task differs from {ref} at p {lt} {ALPHA} (exact sign-flip test over seeds, {family}; {reach})."
    words = {"up": "better", "down": "worse"}
    legend = "/".join(sym[keys[k]] for k in shown) + ": " + "/".join(words[k] for k in shown)
    return f"{legend} than {ref} (exact two-sided sign-flip test over seeds, {family}, p {lt} {ALPHA}; {reach})."


def caption(df: pd.DataFrame, comp: pd.DataFrame, protocol: str, sym: dict) -> str:
    table = table_cells(df, comp, protocol)
    ivs = [v[0] for row in table.values() for v in row.values()]
    partial = any(0 < v[0].n < v[1] for row in table.values() for v in row.values())
    tex = sym is TEX
    unit = " (%)" if tex else ""
    parts = [
        f"{protocol}: test accuracy{unit}, {_tex(title(df)) if tex else title(df)}, mean over seeds (n per cell).",
        interval_sentence({iv.method for iv in ivs}, sym, "Brackets"),
        family_sentence(comp, protocol, sym),
        family_sentence(comp, protocol, sym, "random") if protocol in FROZEN else "",
        "Best per column in bold.",
    ]
    if partial:
        parts.append(f"{sym['partial']}: partial, some seeds missing.")
    text = " ".join(p for p in parts if p)
    return text.replace("%", "\\%") if tex else text


# ---------------------------------------------------------------------------------------------- tables


def markdown_table(df: pd.DataFrame, comp: pd.DataFrame) -> str:
    budgets = budget_order(df)
    parts = []
    for protocol in protocol_order(df):
        table = table_cells(df, comp, protocol)
        best = best_per_column(table, budgets)
        lines = [
            f"**{protocol}**: " + caption(df, comp, protocol, MD).removeprefix(f"{protocol}: "),
            "",
            "| task | " + " | ".join(budget_label(b, df) for b in budgets) + " |",
            "|---|" + "---:|" * len(budgets),
        ]
        for task, row in table.items():
            out = [
                cell_text(*row[b], best=row[b][0].n > 0 and row[b][0].mean == best[b], sym=MD) if b in row else ""
                for b in budgets
            ]
            lines.append(f"| {task} | " + " | ".join(out) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + partial_note(df)


def latex_table(df: pd.DataFrame, comp: pd.DataFrame) -> str:
    budgets = budget_order(df)
    suite = next((s for s in df.get("suite", []) if s), "bench")
    out = ["% generated by bench report; needs \\usepackage{booktabs}"]
    for protocol in protocol_order(df):
        table = table_cells(df, comp, protocol)
        best = best_per_column(table, budgets)
        mixed = {"t", "range"} <= {v[0].method for row in table.values() for v in row.values()}
        out += [
            "\\begin{table}[t]",
            "\\centering",
            f"\\caption{{{caption(df, comp, protocol, TEX)}}}",
            f"\\label{{tab:{re.sub(r'[^A-Za-z0-9]+', '-', suite)}-{protocol}}}",
            "\\begin{tabular}{l" + "r" * len(budgets) + "}",
            "\\toprule",
            "Task & " + " & ".join(budget_label(b, df) for b in budgets) + " \\\\",
            "\\midrule",
        ]
        for task, row in table.items():
            cells = []
            for b in budgets:
                if b not in row or row[b][0].n == 0:
                    cells.append("--")
                    continue
                iv, planned, marker = row[b]
                num = f"{100 * iv.mean:.2f}"
                num = f"\\textbf{{{num}}}" if iv.mean == best[b] else num
                ci = f" {{\\footnotesize [{100 * iv.low:.1f}, {100 * iv.high:.1f}]}}" if iv.n > 1 else ""
                flags = TEX["range"] if mixed and iv.method == "range" else ""
                flags += TEX["partial"] if iv.n < planned else ""
                cells.append(f"{num}{ci}{flags}" + "".join(f" {TEX[m]}" for m in marker.split()))
            out.append(_tex(task).replace("%", "\\%") + " & " + " & ".join(cells) + " \\\\")
        out += ["\\bottomrule", "\\end{tabular}", "\\end{table}", ""]
    return "\n".join(out)


def partial_note(df: pd.DataFrame) -> str:
    missing = int((df.status != "finished").sum())
    note = f"\n\nPARTIAL: {missing} of {len(df)} evaluation cells have no finished run." if missing else ""
    return note + provenance(df)


def _task_code(identities: pd.Series) -> tuple[str, bool]:
    """(a short name for the code behind one task's rows, whether they mix code versions). A row's identity is
    its run's ``parts`` tag ({part: version}, JSON); runs of older bench recorded a digest of the source
    (``code_identity``). Rows of one task use different parts (tuned cells use tuning), so they mix versions only
    where one part appears with two versions, or where some row's identity is an old digest or unrecorded."""
    merged: dict[str, set] = {}
    old = set()
    for text in identities:
        try:
            parts = json.loads(text) if text else None
        except ValueError:
            parts = None
        if isinstance(parts, dict):
            for name, version in parts.items():
                merged.setdefault(name, set()).add(version)
        else:
            old.add(text)
    mixed = (bool(old) and bool(merged)) or len(old) > 1 or "" in old or any(len(v) > 1 for v in merged.values())
    if not merged:
        return ", ".join(sorted(o or "unrecorded" for o in old)), mixed
    versions = json.dumps({k: sorted(v) for k, v in sorted(merged.items())}, sort_keys=True)
    name = "parts-" + hashlib.sha256(versions.encode()).hexdigest()[:8]
    return ", ".join([name, *sorted(o or "unrecorded" for o in old)]), mixed


def provenance(df: pd.DataFrame) -> str:
    """The code and data behind the numbers. Cells run at different commits are reused only where the versions
    of the code parts that decide them are equal (equal code identity); the note says so whenever commits
    differ."""
    ok = df[df.status == "finished"]
    if ok.empty or "git_commit" not in ok:
        return ""
    commits = sorted({c[:10] for c in ok.git_commit if c and c != "unknown"})
    data = sorted({d for d in ok.data_identity if d})
    code = {task: _task_code(rows.code_identity) for task, rows in ok.groupby("task")}
    text = f"\n\nCode: git commit {', '.join(commits) or 'unknown'}"
    if len(commits) > 1:
        text += (
            f" ({len(commits)} commits: cells are reused across commits only where the versions of the code parts "
            "that decide them are equal, i.e. equal code identity)"
        )
    text += "; code identity per task: " + ", ".join(f"{t} {c or 'unrecorded'}" for t, (c, _) in code.items())
    text += f". Data identity: {', '.join(data) or 'unrecorded'}."
    if any(mixed for _, mixed in code.values()):
        text += " WARNING: some task's numbers come from more than one code version, or from unrecorded code."
    return text


def rank_blocks(df: pd.DataFrame, protocol: str) -> pd.DataFrame:
    """Seeds x tasks scores for a rank comparison under one protocol: one block per seed, scored by the task's
    mean test accuracy over the budgets (the whole label-efficiency curve). Seeds are the independent units:
    within a seed every budget reuses the same pretrained encoders and nested label subsets, so (budget, seed)
    pairs are not independent blocks. A seed missing any planned (task, budget) cell of the protocol is dropped."""
    sub = df[df.protocol == protocol]
    planned = pd.MultiIndex.from_frame(sub[["task", "budget"]].drop_duplicates())
    wide = sub[sub.status == "finished"].pivot_table(index="seed", columns=["task", "budget"], values="test_acc")
    wide = wide.reindex(columns=planned).dropna()
    return wide.T.groupby(level="task", sort=False).mean().T


def rank_note(scores: pd.DataFrame, protocol: str) -> str:
    """Why no critical-difference diagram is drawn for ``protocol``; empty when one is."""
    blocks, k = scores.shape
    if k >= 3 and blocks >= min_blocks():
        return ""
    return (
        f"{protocol}: no critical-difference diagram: {blocks} complete seeds (independent blocks) for {k} tasks; "
        f"a rank comparison here needs at least 3 tasks and {min_blocks()} blocks (with fewer blocks even a task "
        f"that wins in every block could not differ from another at p < {ALPHA}: exact sign test, smallest "
        "p = 2/2^n)."
    )


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
    extra = n_max >= MIN_T_SEEDS
    if len(comp) and not extra:
        lines += [
            f"Left out at n = {n_max} seeds: the paired t-test p (one degree of freedom: two equal differences "
            "would read as near-certainty) and the exact Wilcoxon signed-rank p (with n < 3 pairs it equals the "
            "sign-flip p). Both are in stats.csv.",
            "",
        ]
    head = "| budget | task | n | mean diff [interval] | p sign-flip | p Holm |"
    head += " p t-test (Holm) | p Wilcoxon (Holm) |" if extra else ""
    head += " P(improve) | |"
    for (protocol, base), fam in comp.groupby(["protocol", "baseline"], sort=False) if len(comp) else []:
        ref = "+".join(REFERENCE) if base == REFERENCE[0] else f"{base}+{protocol}"
        m, n = int(fam.family_size.max()), int(fam.n.max())
        lines += [
            f"## {protocol}: tasks against {ref}",
            "",
            f"Holm families of {m} tasks, one per budget; with {'one seed' if n == 1 else f'{n} seeds'} the "
            "smallest possible p is "
            f"{min_sign_flip_p(n):.3g}; "
            f"p < {ALPHA} after Holm needs {seeds_needed(m)} seeds.",
            "",
            head,
            "|---|---|---:|---|---:|---:|" + ("---:|---:|" if extra else "") + "---:|---|",
        ]
        for r, pw in zip(fam.itertuples(), fam.p_wilcoxon_holm, strict=True):
            label = "range " if r.ci_method == "range" else ""
            ci = f" {label}[{r.ci_low:+.4f}, {r.ci_high:+.4f}]" if r.n > 1 else ""
            cols = [r.budget, r.task, r.n, f"{r.mean_diff:+.4f}{ci}", f"{r.p_signflip:.3g}", f"{r.p_holm:.3g}"]
            cols += [f"{r.p_ttest_holm:.3g}", f"{pw:.3g}"] if extra else []
            key = r.marker if base == REFERENCE[0] else f"{r.marker}_{base}"
            cols += [f"{r.p_improve:.2f}", TEXT[key] if r.marker else ""]
            lines.append("| " + " | ".join(str(c) for c in cols) + " |")
        lines.append("")
    lines += ["## Rank comparison (cd_diagram.png)", ""]
    for protocol in protocol_order(df):
        scores = rank_blocks(df, protocol)
        note = rank_note(scores, protocol)
        lines.append(f"- {note}" if note else f"- {protocol}: {len(scores)} seeds x {scores.shape[1]} tasks, drawn.")
    return "\n".join(lines) + partial_note(df) + "\n"


def write_report(df: pd.DataFrame, out: Path, suite: str | None = None, dataset: str | None = None) -> list[Path]:
    """Write every report file into ``out``; returns the paths written. ``suite`` and ``dataset`` (for titles
    and captions) override the tidy table's ``suite`` and ``dataset`` columns."""
    from bench.figures import write_figures
    from bench.files import write_atomic
    from bench.health_report import health_markdown

    df = df.copy()
    if suite is not None or "suite" not in df:
        df["suite"] = suite or ""
    if dataset is not None or "dataset" not in df:
        df["dataset"] = dataset or ""
    out.mkdir(parents=True, exist_ok=True)
    comp = comparisons(df)
    files = {
        "runs.csv": df.to_csv(index=False),
        "stats.csv": comp.to_csv(index=False),
        "table.md": markdown_table(df, comp) + "\n",
        "table.tex": latex_table(df, comp),
        "stats.md": stats_markdown(comp, df),
    }
    health = health_markdown(df)
    if health is not None:
        files["health.md"] = health
    for name, text in files.items():  # each file whole or not at all: a killed report leaves the previous one
        write_atomic(out / name, text.encode())
    return [out / n for n in files] + write_figures(df, comp, out)
