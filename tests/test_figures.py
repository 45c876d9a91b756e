"""The figures: the tables' interval drawn, titles that name suite, dataset and interval, fixed task colours from a
colour-blind-safe palette, TrueType fonts in the PDFs, gain panels against the matching baseline, and rank
diagrams only over enough independent blocks."""

import itertools

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.colors import to_hex, to_rgb

from bench.report import figures, palette
from bench.report.comparisons import comparisons, rank_blocks, rank_note
from bench.report.stats import interval
from bench.report.tidy import BASELINES
from bench.report.write import write_report
from tests.test_report import sweep

WIDE = {
    "scratch": ["finetune"],
    "random": ["linear"],
    "rotation": ["linear", "finetune"],
    "simclr": ["linear", "finetune"],
    "jigsaw": ["linear", "finetune"],
}


def test_label_efficiency_draws_the_tables_interval_and_names_it():
    df = sweep(missing=True)
    fig = figures.label_efficiency(df)
    assert "demo on cifar10" in fig._suptitle.get_text() and "partial" in fig._suptitle.get_text()
    assert "bars: 95% Student-t confidence interval over seeds, clipped to [0, 1]" in fig._suptitle.get_text()
    linear = next(ax for ax in fig.axes if ax.get_title() == "linear")
    assert [t.get_text() for t in linear.get_xticklabels()] == ["100", "1,000", "full"]
    checked = 0
    for bars in linear.containers:
        task = bars.get_label()
        low_high = [seg[:, 1] for seg in bars[2][0].get_segments()]
        for (low, high), budget in zip(low_high, ("100", "1000", "full"), strict=True):
            cell = df[(df.task == task) & (df.protocol == "linear") & (df.budget == budget)]
            iv = interval(cell.test_acc)
            assert (low, high) == (pytest.approx(iv.low), pytest.approx(iv.high))
            checked += 1
        assert to_hex(bars[0].get_color()) == to_hex(palette.colour(task))
        assert bars[0].get_linestyle() == ("--" if task in BASELINES else "-")
    assert checked == 6  # random and rotation, three budgets each
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["rotation", "random", "scratch"]  # tasks only: no seaborn "baseline False/True" entries
    plt.close(fig)


def test_each_task_keeps_its_colour_and_marker_across_figures():
    df = sweep(seeds=6, plan=WIDE)
    curve, cd = figures.label_efficiency(df), figures.cd_diagram(df)
    for ax in curve.axes:
        for bars in ax.containers:
            assert to_hex(bars[0].get_color()) == to_hex(palette.colour(bars.get_label()))
            assert bars[0].get_marker() == palette.style(bars.get_label())["marker"]
    texts = [t for ax in cd.axes for t in ax.texts if t.get_text().strip()]
    assert texts
    for t in texts:
        task = next(name for name in WIDE if name in t.get_text())
        assert to_hex(t.get_color()) == to_hex(palette.colour(task))
    assert palette.style("rotation") == palette.style("rotation") and palette.colour("my_task") in palette.COLOURS
    plt.close("all")


# Machado, Oliveira & Fernandes (2009), severity 1, on linear RGB
CVD = {
    "normal": np.eye(3),
    "protan": [[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216], [-0.003882, -0.048116, 1.051998]],
    "deutan": [[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413], [-0.011820, 0.042940, 0.968881]],
    "tritan": [[1.255528, -0.076749, -0.178779], [-0.078411, 0.930809, 0.147602], [0.004733, 0.691367, 0.303900]],
}


def _lab(hex_colour, matrix):
    c = np.asarray(to_rgb(hex_colour))
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    rgb = np.clip(np.asarray(matrix) @ linear, 0, 1)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ rgb
    t = xyz / np.array([0.9505, 1.0, 1.089])
    f = np.where(t > (6 / 29) ** 3, np.cbrt(t), t / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def test_palette_is_distinct_for_fifteen_tasks_under_colour_blindness():
    styles = [palette.style(t) for t in palette.TASK_ORDER] + [palette.style(t) for t in BASELINES]
    assert len(palette.TASK_ORDER) == 15 and len({s["color"] for s in styles}) == 17
    assert len({s["marker"] for s in styles}) == 17  # a second cue: no pair relies on colour alone
    for vision, matrix in CVD.items():
        closest = min(
            np.linalg.norm(_lab(a["color"], matrix) - _lab(b["color"], matrix))
            for a, b in itertools.combinations(styles, 2)
        )
        assert closest > 9, vision  # CIE76 units; 2.3 is a just-noticeable difference


def test_pdfs_embed_truetype_fonts_not_type3(tmp_path, pdf_figures):
    df = sweep(seeds=6, plan=WIDE)
    written = write_report(df, tmp_path)
    pdfs = [p for p in written if p.suffix == ".pdf"]
    assert {p.stem for p in pdfs} == {"label_efficiency", "gain_heatmap", "cd_diagram"}
    for pdf in pdfs:
        data = pdf.read_bytes()
        assert b"/Subtype /Type3" not in data and b"/FontFile2" in data, pdf.name  # FontFile2: embedded TrueType
    # the check can fail: matplotlib's default (Type 3) is caught
    fig, ax = plt.subplots()
    ax.set_title("type 3")
    with plt.rc_context({"pdf.fonttype": 3}):
        fig.savefig(tmp_path / "t3.pdf")
    plt.close(fig)
    assert b"/Subtype /Type3" in (tmp_path / "t3.pdf").read_bytes()


def test_gain_heatmap_panels_against_the_matching_baseline_in_accuracy_points():
    df = sweep(seeds=7, plan=WIDE | {"random": ["linear", "knn"], "rotation": ["linear", "knn", "finetune"]})
    comp = comparisons(df)
    fig = figures.gain_heatmap(df, comp)
    panels = [ax for ax in fig.axes if ax.get_title()]
    titles = [ax.get_title() for ax in panels]
    assert titles == [
        "linear: task − random+linear",
        "knn: task − random+knn",
        "finetune: task − scratch+finetune (labels only)",
    ]
    assert all(ax.get_xlabel() == "labelled images" for ax in panels)
    assert [ax.get_ylabel() for ax in panels] == ["task", "task", "task"]
    # like against like: only fine-tuned tasks beside fine-tuned scratch (no frozen probe read as a loss)
    tuned = comp[(comp.protocol == "finetune") & (comp.baseline == "scratch")].task.unique()
    assert sorted(t.get_text() for t in panels[2].get_yticklabels()) == sorted(tuned) and "random" not in tuned
    colourbar = next(ax for ax in fig.axes if not ax.get_title())
    assert colourbar.get_ylabel() == "gain (accuracy points)"
    knn = panels[1]
    assert [t.get_text() for t in knn.get_yticklabels()] == ["rotation"]
    expected = comp[(comp.protocol == "knn") & (comp.baseline == "random")]
    shown = [float(t.get_text().rstrip("△▽")) for t in knn.texts]
    assert shown == pytest.approx((expected.mean_diff * 100).round(1).tolist(), abs=0.051)
    assert all(t.get_text().endswith("△") for t in knn.texts)  # the tables' symbol against random
    assert all(t.get_text().endswith("▲") for t in panels[2].texts)  # and against scratch+finetune
    legend = "▲/△: sign-flip p < 0.05, Holm over the tasks against the panel's baseline at one budget"
    assert legend in fig._suptitle.get_text()
    plt.close(fig)


def test_rank_comparisons_are_per_budget_as_the_tables_and_span_every_rank():
    df = sweep(seeds=6, plan=WIDE)
    scores = rank_blocks(df, "linear", "100")
    assert scores.shape == (6, 4)  # seeds x (random, rotation, simclr, jigsaw) at one budget
    by_hand = df[(df.protocol == "linear") & (df.task == "simclr") & (df.seed == 4) & (df.budget == "100")]
    assert scores.loc[4, "simclr"] == pytest.approx(by_hand.test_acc.item())
    dropped = df.drop(
        df[(df.task == "jigsaw") & (df.protocol == "linear") & (df.seed == 5) & (df.budget == "100")].index
    )
    assert rank_blocks(dropped, "linear", "100").index.tolist() == [0, 1, 2, 3, 4]  # incomplete seed left out
    assert rank_blocks(dropped, "linear", "1000").index.tolist() == [0, 1, 2, 3, 4, 5]  # other budgets keep it
    budgets = sorted(set(df.budget), key=lambda b: float("inf") if b == "full" else int(b))
    cd = figures.cd_diagram(df)
    titles = [ax.get_title() for ax in cd.axes]
    assert titles[0].startswith(f"linear at {budgets[0]} labels: average rank of 4 tasks over 6 seeds (blocks")
    assert sum(t.startswith("linear at ") for t in titles) == len(budgets)  # one diagram per budget
    assert "Friedman p" in titles[0] and "demo on cifar10" in cd._suptitle.get_text()
    for ax in cd.axes:  # every possible rank on the axis, 1 to the number of tasks
        assert sorted(ax.get_xlim()) == [1, len(ax.get_xticks())]
    assert rank_note(scores, "linear", "100") == ""
    titles = [ax.get_title() for ax in figures.cd_diagram(dropped).axes]
    assert not any(t.startswith("linear at 100 labels") for t in titles)  # 5 blocks at 100 labels: no diagram
    assert any(t.startswith(f"linear at {budgets[1]} labels") for t in titles)
    assert "5 complete seeds" in rank_note(rank_blocks(dropped, "linear", "100"), "linear", "100")
    plt.close("all")
