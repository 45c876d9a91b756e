"""The report from a tidy table: files, partial sweeps, intervals, tests, Holm families, captions, the console
summary, and Markdown, LaTeX and console agreeing."""

import io
import re
import shutil
import subprocess
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from bench.report.comparisons import comparisons
from bench.report.provenance import provenance
from bench.report.stats import holm, interval
from bench.report.summary import render, render_summary, summary_tables
from bench.report.tidy import BASELINES, tidy
from bench.report.write import write_report

PLAN = {"scratch": ["finetune"], "random": ["linear"], "rotation": ["linear", "finetune"]}
BASE = {"scratch": 0.3, "random": 0.2, "rotation": 0.4, "simclr": 0.45, "jigsaw": 0.35}


def squash(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def sweep(missing: bool = False, seeds: int = 3, plan: dict | None = None, noise: float = 0.005) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for task, protocols in (plan or PLAN).items():
        for protocol in protocols:
            for budget, n in (("100", 100), ("1000", 1000), ("full", 5000)):
                for seed in range(seeds):
                    acc = BASE[task] + 0.1 * np.log10(n) + rng.normal(0, noise)
                    rows.append(
                        {
                            "suite": "demo",
                            "task": task,
                            "protocol": protocol,
                            "budget": budget,
                            "seed": seed,
                            "test_acc": acc,
                            "n_labels": n,
                            "status": "finished",
                            "dataset": "cifar10",
                        }
                    )
    df = pd.DataFrame(rows)
    if missing:
        gap = (df.task == "rotation") & (df.protocol == "linear") & (df.budget == "1000") & (df.seed == 2)
        df.loc[gap, ["test_acc", "status"]] = [np.nan, "missing"]
    return df


def test_report_writes_every_file(tmp_path, pdf_figures):
    written = write_report(sweep(), tmp_path)
    names = {p.name for p in written}
    expected = {"runs.csv", "stats.csv", "stats.md", "table.md", "table.tex"}
    expected |= {f"{f}.{e}" for f in ("label_efficiency", "gain_heatmap") for e in ("png", "pdf")}
    assert expected <= names and "cd_diagram.png" not in names  # 3 seeds: too few blocks to rank
    assert all(p.stat().st_size > 0 for p in written)
    assert len(pd.read_csv(tmp_path / "runs.csv")) == len(sweep())  # the tidy table round-trips
    table = (tmp_path / "table.md").read_text()
    assert "PARTIAL" not in table and "| rotation | **" in table and "demo on cifar10" in table
    stats_md = (tmp_path / "stats.md").read_text()
    note = "linear at 100: no critical-difference diagram: 3 complete seeds (independent blocks) for 2 tasks"
    assert note in stats_md


def test_holm_family_is_tasks_against_one_baseline_within_one_protocol_at_one_budget():
    plan = {"scratch": ["finetune"], "random": ["linear", "finetune"], "rotation": ["linear", "finetune"]}
    plan |= {"simclr": ["linear"]}
    comp = comparisons(sweep(plan=plan))
    assert not comp.task.isin(BASELINES).any()  # random vs scratch is never tested
    families = {k: len(g) for k, g in comp.groupby(["protocol", "baseline", "budget"])}
    # linear: rotation and simclr at each budget, against random+linear and against scratch+finetune;
    # finetune: rotation against scratch+finetune only (random is compared within frozen protocols)
    budgets = ("100", "1000", "full")
    expected = {("linear", "random", b): 2 for b in budgets} | {("linear", "scratch", b): 2 for b in budgets}
    assert families == expected | {("finetune", "scratch", b): 1 for b in budgets}
    assert set(comp[comp.baseline == "random"].baseline_protocol) == {"linear"}
    assert set(comp[comp.baseline == "scratch"].baseline_protocol) == {"finetune"}
    for _, fam in comp.groupby(["protocol", "baseline", "budget"]):
        assert fam.p_holm.tolist() == pytest.approx(holm(fam.p_signflip).tolist())
        assert fam.p_wilcoxon_holm.tolist() == pytest.approx(holm(fam.p_wilcoxon).tolist())
        assert (fam.family_size == len(fam)).all()


def test_two_seeds_give_p_one_half_no_markers_and_say_why(tmp_path):
    write_report(sweep(seeds=2), tmp_path)
    comp = pd.read_csv(tmp_path / "stats.csv")
    assert comp.p_signflip.tolist() == pytest.approx([0.5] * len(comp))  # every difference has one sign
    table = (tmp_path / "table.md").read_text()
    assert "▲" not in table and "▼" not in table
    said = "No markers: with 2 seeds the sign-flip test cannot reach p < 0.05 after Holm (6 seeds needed)"
    assert said in table and "Brackets: the seeds' range [min, max]" in table and "range [" in table
    stats_md = (tmp_path / "stats.md").read_text()  # the method, said once per family there
    family = "Holm over the tasks against scratch+finetune at each budget (1 per budget)"
    assert f"No markers: exact sign-flip test over seeds, {family}" in stats_md
    assert "with 2 seeds the smallest possible p is 0.5; p < 0.05 after Holm needs 6 seeds" in stats_md
    assert family not in table and "Inconclusive" not in table
    assert "Left out with 2 seeds: the paired t-test p" in stats_md and "p t-test" not in stats_md
    tex = (tmp_path / "table.tex").read_text()
    assert "uparrow" not in tex and "downarrow" not in tex and "dagger" not in tex


def test_markers_appear_when_the_family_can_reach_significance(tmp_path):
    write_report(sweep(seeds=7), tmp_path)  # 3 comparisons per family: 3 * 2/2^7 = 0.047 < 0.05
    table = (tmp_path / "table.md").read_text()
    assert table.count(") ▲") == 6 and "▼" not in table  # rotation beats scratch+finetune at 3 budgets, 2 protocols
    assert "▲: better than scratch+finetune; △: better than random+linear. Tests: stats.md." in table
    # frozen protocols are also tested against random under the same protocol, with their own markers
    assert table.count("▲ △") == 3 and "▽" not in table and "△" not in table.split("**finetune**")[1]
    tex = (tmp_path / "table.tex").read_text()
    assert "$\\uparrow$: better than" in tex and "downarrow" not in tex
    assert "$\\bigtriangleup$: better than random+linear" in tex
    stats_md = (tmp_path / "stats.md").read_text()
    assert "| △ |" in stats_md and "with 7 seeds the smallest possible p is 0.0156" in stats_md
    assert "▲: better than scratch+finetune (exact two-sided sign-flip test over seeds" in stats_md
    assert "p t-test (Holm)" in stats_md and "Left out" not in stats_md


def test_table_intervals_are_the_shared_interval_and_stay_in_unit_range(tmp_path):
    df = sweep(plan={"scratch": ["finetune"], "rotation": ["finetune"]}, noise=0.05)
    df["test_acc"] = df.test_acc.clip(upper=0.999) + 0.25  # near 1: a raw t-interval would leave [0, 1]
    df["test_acc"] = df.test_acc.clip(upper=1.0)
    write_report(df, tmp_path)
    table = (tmp_path / "table.md").read_text()
    shown = [(float(lo), float(hi)) for lo, hi in re.findall(r"\[(-?\d\.\d{3}), (-?\d\.\d{3})\]", table)]
    assert shown and all(0 <= lo <= hi <= 1 for lo, hi in shown)
    expected = [interval(g.test_acc) for _, g in df.groupby(["task", "budget"], sort=False)]
    assert sorted(shown) == sorted((round(iv.low, 3), round(iv.high, 3)) for iv in expected)
    assert any(hi == 1.0 for _, hi in shown)  # the clipping happened
    assert "95% Student-t confidence interval over seeds, clipped to [0, 1]" in table


def test_partial_sweep_is_marked_everywhere(tmp_path):
    write_report(sweep(missing=True), tmp_path)
    table = (tmp_path / "table.md").read_text()
    assert "(n=2 of 3)" in table and "PARTIAL: 1 of" in table
    assert "cells marked range have fewer than 3 seeds" in table  # the 2-seed cell shows its range, says so
    assert "PARTIAL" in (tmp_path / "stats.md").read_text()
    tex = (tmp_path / "table.tex").read_text()
    assert "$^{*}$" in tex and "$^{*}$: partial" in tex and "$^{\\dagger}$" in tex


def test_latex_numbers_match_the_markdown(tmp_path):
    write_report(sweep(), tmp_path)
    md = re.findall(
        r"(?:\| |\*\*)(0\.\d{4})\**( range)? \[(\d\.\d{3}), (\d\.\d{3})\]", (tmp_path / "table.md").read_text()
    )
    tex = re.findall(
        r"(\d+\.\d{2})\}? \{\\footnotesize \[(\d+\.\d), (\d+\.\d)\]\}", (tmp_path / "table.tex").read_text()
    )
    assert len(md) == len(tex) == 12
    for (mean, _, lo, hi), (tmean, tlo, thi) in zip(md, tex, strict=True):
        assert float(tmean) / 100 == pytest.approx(float(mean), abs=5e-5)
        assert float(tlo) / 100 == pytest.approx(float(lo), abs=6e-4)
        assert float(thi) / 100 == pytest.approx(float(hi), abs=6e-4)


def test_latex_has_a_label_per_table_and_headers_in_labels(tmp_path):
    write_report(sweep(), tmp_path)
    tex = (tmp_path / "table.tex").read_text()
    assert tex.count("\\begin{table}") == 2 and re.findall(r"\\label\{([^}]*)\}", tex) == [
        "tab:demo-linear",
        "tab:demo-finetune",
    ]
    assert "Task & 100 labels & 1000 labels & full (5000 labels) \\\\" in tex
    assert "95\\% Student-t" in tex and "95% " not in tex.replace("95\\% ", "")  # % escaped in captions


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="no TeX engine (pdflatex) on this machine")
@pytest.mark.parametrize("seeds, missing", [(3, True), (7, False)])  # footnote marks; significance arrows
def test_latex_table_compiles(tmp_path, seeds, missing):
    write_report(sweep(missing=missing, seeds=seeds), tmp_path)
    doc = "\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n\\input{table.tex}\n\\end{document}\n"
    (tmp_path / "doc.tex").write_text(doc)
    run = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout[-2000:]
    assert (tmp_path / "doc.pdf").stat().st_size > 0


def test_a_sweep_with_nothing_finished_still_reports_what_is_missing(tmp_path):
    df = sweep().assign(test_acc=np.nan, status="missing")
    written = {p.name for p in write_report(df, tmp_path)}
    assert {"table.md", "stats.md", "runs.csv"} <= written and "label_efficiency.png" not in written
    assert "— (0 of 3)" in (tmp_path / "table.md").read_text()
    assert f"PARTIAL: {len(df)} of {len(df)}" in (tmp_path / "table.md").read_text()


def _run(params, metrics, tags):
    return SimpleNamespace(
        data=SimpleNamespace(params=params, metrics=metrics, tags=tags), info=SimpleNamespace(run_id="r1")
    )


class _Tracker:
    def __init__(self, runs):
        self._runs = runs
        self.experiment_id = "7"
        self.client = SimpleNamespace(get_experiment=lambda i: SimpleNamespace(name="quick"))

    def finished(self):
        return self._runs


def test_tidy_reads_params_tags_and_experiment_with_fallbacks_for_old_runs():
    cells = [
        SimpleNamespace(kind="eval", task="rotation", protocol="linear", budget=b, seed=0, key=f"k{b}", source="p")
        for b in ("full", 100, 250)
    ] + [SimpleNamespace(kind="pretrain", key="p", source="p")]
    new = _run(
        {"n_labels": "50000", "dataset.name": "cifar10"},
        {"test_acc": 0.5},
        {"mlflow.source.git.commit": "abc", "code_identity": "c1", "data_identity": "d1"},
    )
    old = _run({}, {"test_acc": 0.4, "n_labels": 100.0}, {"git_commit": "old", "cell_key": "k100"})
    df = tidy(_Tracker({"kfull": new, "k100": old}), cells)
    assert len(df) == 3 and set(df.suite) == {"quick"} and set(df.dataset) == {"cifar10"}
    rows = df.set_index("budget")
    assert rows.loc["full", "n_labels"] == 50000 and rows.loc["100", "n_labels"] == 100
    assert rows.loc["250", "n_labels"] == 250 and rows.loc["250", "status"] == "missing"
    assert (rows.loc["full", "git_commit"], rows.loc["100", "git_commit"]) == ("abc", "old")
    assert tidy(_Tracker({}), cells).git_commit.tolist() == ["", "", ""]
    assert rows.rankme.isna().all()  # no finished pretraining run: no health
    metrics = {"rankme": 41.5, "collapse_std": 0.06, "health_s": 0.5, "epoch_s": 20.0}
    tracker = _Tracker({"kfull": new, "p": _run({}, metrics, {"kind": "pretrain"})})
    history = {"health_s": [0.4, 0.5], "epoch_s": [10.0, 20.0, 20.0, 10.0]}  # measured twice in four epochs
    tracker.client.get_metric_history = lambda run_id, key: [SimpleNamespace(value=v) for v in history[key]]
    health = tidy(tracker, cells)
    assert health.rankme.tolist() == [41.5] * 3 and health.collapse_std.tolist() == [0.06] * 3  # its source's
    assert health.health_cost.tolist() == [pytest.approx(0.9 / 60)] * 3  # all measurements over all epochs
    totals = _run({}, metrics | {"health_wall_s": 0.9, "pretrain_wall_s": 60.0}, {"kind": "pretrain"})
    tracker = _Tracker({"kfull": new, "p": totals})  # a run that logged its totals: no query per run
    tracker.client.get_metric_history = lambda run_id, key: pytest.fail("read a metric history")
    assert tidy(tracker, cells).health_cost.tolist() == [pytest.approx(0.9 / 60)] * 3
    named = _Tracker({"kfull": new})
    named.name = "smoke"  # the tracker's experiment name, when it has one, without asking the store
    assert set(tidy(named, cells).suite) == {"smoke"}


def test_a_cell_planned_twice_is_one_sample_in_the_report():
    cell = SimpleNamespace(kind="eval", task="random", protocol="linear", budget=8, seed=0, key="k", source="k")
    run = _run({}, {"test_acc": 0.5}, {"cell_key": "k"})
    assert len(tidy(_Tracker({"k": run}), [cell, cell])) == 1  # one key, one row, whatever repeats it


def test_console_summary_is_the_report_table_as_rich_text(tmp_path):
    df = sweep(missing=True)
    write_report(df, tmp_path)
    md = (tmp_path / "table.md").read_text()
    console = Console(file=io.StringIO(), width=80)
    text = render(console, df)
    assert text == console.file.getvalue()  # what it returns is what it printed
    assert "┃ task" in text and "PARTIAL: 1 of" in text
    assert max(len(line) for line in text.splitlines()) <= 80  # four budgets fit a terminal of 80 columns
    found = re.findall(r"(\d\.\d{4})(?: range)? (\[\d\.\d{3}, \d\.\d{3}\]) (\(n=\d(?: of \d)?\))", md.replace("**", ""))
    assert found and all(f"{mean} {n}" in text and interval in text for mean, interval, n in found)  # as table.md
    assert "clipped to [0, 1]" in squash(text) and "cells marked range" in squash(text)  # captions, not markup


def test_render_summary_and_summary_tables_read_the_tracker():
    cells = [
        SimpleNamespace(kind="eval", task="rotation", protocol="linear", budget=100, seed=s, key=f"k{s}", source="p")
        for s in (0, 1)
    ]
    runs = {f"k{s}": _run({"n_labels": "100"}, {"test_acc": 0.4 + s / 10}, {}) for s in (0, 1)}
    console = Console(file=io.StringIO(), width=160)
    text = render_summary(console, _Tracker(runs), cells)
    assert "0.4500 (n=2)" in text and "[0.400, 0.500]" in text and text == summary_tables(_Tracker(runs), cells)


def test_a_one_seed_sweep_reports_without_intervals_or_markers(tmp_path):
    write_report(sweep(seeds=1), tmp_path)
    table = (tmp_path / "table.md").read_text()
    assert "One seed: no interval." in table and "▲" not in table and "[" not in table.split("\n\n")[1]
    assert "No markers: with one seed the sign-flip test cannot reach" in table and "1 seeds" not in table
    stats_md = (tmp_path / "stats.md").read_text()
    assert "with one seed the smallest possible p is 1" in stats_md and "1 seeds" not in stats_md


def test_provenance_names_each_tasks_parts_and_warns_only_when_a_part_has_two_versions():
    tuned = '{"cells": 1, "protocols": 1, "task.rotation": 1, "tuning": 1}'
    untuned = '{"cells": 1, "protocols": 1, "task.rotation": 1}'
    bumped = '{"cells": 1, "protocols": 2, "task.rotation": 1}'

    def frame(identities):
        return pd.DataFrame(
            {
                "task": ["rotation"] * len(identities),
                "status": "finished",
                "git_commit": "abc",
                "data_identity": "d1",
                "code_identity": identities,
            }
        )

    same = provenance(frame([tuned, untuned]))
    assert "code identity per task: rotation parts-" in same and "WARNING" not in same
    assert "WARNING: some task's numbers come from more than one code version" in provenance(frame([untuned, bumped]))
    old = provenance(frame(["c1", "c1"]))
    assert "rotation c1" in old and "WARNING" not in old
    assert "WARNING" in provenance(frame([untuned, "c1"]))


def test_a_small_suite_reports_briefly_and_says_once_what_it_cannot_compute(tmp_path):
    """The first run's shape (suites/quick.toml): one pretext task, two baselines, two seeds, three protocols."""
    plan = {"scratch": ["finetune"], "random": ["linear", "knn"], "rotation": ["linear", "knn", "finetune"]}
    df = sweep(seeds=2, plan=plan)
    df["rankme"] = np.where(df.task == "rotation", 48.0 + df.seed, np.nan)
    written = {p.name for p in write_report(df, tmp_path)}
    assert "health.md" in written and "health_vs_accuracy.png" not in written  # one task: nothing to draw
    health = (tmp_path / "health.md").read_text()
    assert health.count("Not computed") == 1 and "too few" not in health and "No health_vs_accuracy figure" in health
    table = (tmp_path / "table.md").read_text()
    captions = [p for p in table.split("\n\n") if p.startswith("**")]
    assert len(captions) == 3 and all(len(c.split()) <= 60 for c in captions), [len(c.split()) for c in captions]
    assert "Holm over the tasks" not in table and "Holm over the tasks" in (tmp_path / "stats.md").read_text()
    console = Console(file=io.StringIO(), width=80)
    assert max(len(line) for line in render(console, df).splitlines()) <= 80


def test_a_report_laid_out_again_from_its_runs_csv_is_the_same_report(tmp_path):
    from bench.config.suite import Suite
    from bench.report.publish import from_runs_csv

    first = tmp_path / "first" / "demo"
    write_report(sweep(missing=True), first, suite="demo", dataset="cifar10")
    suite = Suite(name="demo", results_dir=str(tmp_path / "again"))
    from_runs_csv(first / "runs.csv", suite, Console(file=io.StringIO()))
    for name in ("table.md", "table.tex", "stats.md", "stats.csv", "verdicts.md", "runs.csv"):
        assert (tmp_path / "again" / "demo" / name).read_text() == (first / name).read_text(), name
