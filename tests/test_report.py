"""The report from a tidy table: files, partial sweeps, figure contents, Markdown and LaTeX agree."""

import re
import shutil
import subprocess

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

import bench.report as report


def sweep(missing: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    base = {"scratch": 0.3, "random": 0.2, "rotation": 0.4}
    for task, protocols in (("scratch", ["finetune"]), ("random", ["linear"]), ("rotation", ["linear", "finetune"])):
        for protocol in protocols:
            for budget, n in (("100", 100), ("1000", 1000), ("full", 5000)):
                for seed in range(3):
                    acc = base[task] + 0.1 * np.log10(n) + rng.normal(0, 0.005)
                    rows.append(
                        {
                            "task": task,
                            "protocol": protocol,
                            "budget": budget,
                            "seed": seed,
                            "test_acc": acc,
                            "n_labels": n,
                            "status": "finished",
                        }
                    )
    df = pd.DataFrame(rows)
    if missing:
        gap = (df.task == "rotation") & (df.protocol == "linear") & (df.budget == "1000") & (df.seed == 2)
        df.loc[gap, ["test_acc", "status"]] = [np.nan, "missing"]
    return df


def test_report_writes_every_file(tmp_path):
    written = report.write_report(sweep(), tmp_path)
    names = {p.name for p in written}
    assert {
        "runs.csv",
        "stats.csv",
        "stats.md",
        "table.md",
        "table.tex",
        "label_efficiency.png",
        "label_efficiency.pdf",
        "gain_heatmap.png",
        "cd_diagram.png",
    } <= names
    assert all(p.stat().st_size > 0 for p in written)
    assert len(pd.read_csv(tmp_path / "runs.csv")) == len(sweep())  # the tidy table round-trips
    table = (tmp_path / "table.md").read_text()
    assert "PARTIAL" not in table and "| rotation | **" in table
    # rotation beats scratch by ~0.1 with 0.005 noise and 3 seeds: significant after Holm, marked
    assert "▲" in table
    stats_md = (tmp_path / "stats.md").read_text()
    assert "With n = 3 seeds the smallest possible two-sided Wilcoxon p is 0.25" in stats_md


def test_partial_sweep_is_marked_everywhere(tmp_path):
    report.write_report(sweep(missing=True), tmp_path)
    table = (tmp_path / "table.md").read_text()
    assert "(n=2 of 3)" in table and "PARTIAL: 1 of" in table
    assert "PARTIAL" in (tmp_path / "stats.md").read_text()
    assert "$^{*}$" in (tmp_path / "table.tex").read_text()


def test_figures_contain_the_expected_lines_and_cells(tmp_path, monkeypatch):
    figures = []
    monkeypatch.setattr(report.plt, "close", lambda fig=None: figures.append(fig))
    report.write_report(sweep(), tmp_path)
    efficiency, heatmap, cd = figures
    by_protocol = {ax.get_title(): ax for ax in efficiency.axes}
    lines = [ln for ln in by_protocol["protocol = linear"].get_lines() if len(ln.get_xdata()) == 3]
    assert len(lines) == 2  # random and rotation, three budgets each
    assert any(ln.get_linestyle() == "--" for ln in lines)  # the baseline is dashed
    cells = [t.get_text() for t in heatmap.axes[0].texts]
    assert len(cells) == 3 * 3  # (random+linear, rotation+linear, rotation+finetune) vs scratch, 3 budgets
    assert all(re.fullmatch(r"[+-]\d\.\d{3}\*?", c) for c in cells)
    assert "Friedman p" in cd.axes[0].get_title()
    plt.close("all")


def test_latex_numbers_match_the_markdown(tmp_path):
    report.write_report(sweep(), tmp_path)
    md = [float(x) for x in re.findall(r"\| \**(0\.\d{4})", (tmp_path / "table.md").read_text())]
    tex = [
        float(x) / 100
        for x in re.findall(r"(?:\\textbf\{)?(\d+\.\d{2})\}?(?: \$\\pm)", (tmp_path / "table.tex").read_text())
    ]
    assert len(md) == len(tex) > 0
    assert np.allclose(md, tex, atol=5e-5)


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="no TeX engine (pdflatex) on this machine")
def test_latex_table_compiles(tmp_path):
    report.write_report(sweep(), tmp_path)
    doc = "\\documentclass{article}\\usepackage{booktabs}\\begin{document}\\input{table.tex}\\end{document}"
    (tmp_path / "doc.tex").write_text(doc)
    subprocess.run(["pdflatex", "-interaction=nonstopmode", "doc.tex"], cwd=tmp_path, check=True, capture_output=True)


def test_a_sweep_with_nothing_finished_still_reports_what_is_missing(tmp_path):
    df = sweep().assign(test_acc=np.nan, status="missing")
    written = {p.name for p in report.write_report(df, tmp_path)}
    assert {"table.md", "stats.md", "runs.csv"} <= written and "label_efficiency.png" not in written
    assert "— (0 of 3)" in (tmp_path / "table.md").read_text()
    assert f"PARTIAL: {len(df)} of {len(df)}" in (tmp_path / "table.md").read_text()
