"""Equivalence within the suite's margin (TOST) and the four verdicts: the test by hand, the verdict of each
comparison in stats.csv, and the words of the captions, verdicts.md, the console summary and the parent run's
description, which never read a test that did not reject as "no difference"."""

import io
import re
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from rich.console import Console
from scipy import stats as sps

from bench.config.load import load_suite
from bench.errors import ConfigError
from bench.report.comparisons import comparisons
from bench.report.stats import holm
from bench.report.write import write_report
from bench.run.plan import build_plan

from .conftest import SMOKE

# per-seed differences of test accuracy against scratch+finetune, 7 seeds
TINY = [0.001, 0.002, 0.0, 0.001, 0.002, 0.001, 0.0]  # +0.1 point, small spread: inside ±1 point
WIDE = [0.02, -0.01, 0.015, -0.005, 0.01, 0.0, 0.005]  # +0.5 point, 95% interval about [-0.5, +1.5] points
LARGE = [0.04, 0.05, 0.045, 0.035, 0.05, 0.04, 0.045]  # +4.4 points, every seed ahead
NEVER = ("no difference", "does not differ", "do not differ", "differs from", "no task differs")


def paired_frame(diffs: dict[str, list[float]], budgets=("1000",), protocol: str = "finetune") -> pd.DataFrame:
    """scratch+finetune and each task of ``diffs`` under ``protocol``, the task's accuracy the baseline's plus
    its difference, seed by seed, at each budget."""
    rows = []
    for budget in budgets:
        for seed in range(len(next(iter(diffs.values())))):
            base = 0.40 + 0.013 * ((seed * 5) % 7)  # seed-to-seed variation that cancels in the differences
            entries = [("scratch", "finetune", base)]
            entries += [(task, protocol, base + d[seed]) for task, d in diffs.items()]
            for task, prot, acc in entries:
                row = {"suite": "demo", "task": task, "protocol": prot, "budget": budget, "seed": seed}
                rows.append(row | {"test_acc": acc, "n_labels": 1000, "status": "finished", "dataset": "cifar10"})
    return pd.DataFrame(rows)


def words(text: str) -> str:
    return text.lower()


def test_equivalence_p_is_the_larger_one_sided_t_test_p_and_matches_the_90_percent_interval():
    from bench.report.stats import equivalence_p

    d = np.array(WIDE)
    lower = sps.ttest_1samp(d, -0.01, alternative="greater").pvalue
    upper = sps.ttest_1samp(d, 0.01, alternative="less").pvalue
    assert equivalence_p(d, 0.01) == pytest.approx(max(lower, upper), rel=1e-9)
    for margin in (0.005, 0.01, 0.02, 0.05):  # p < 0.05 exactly when the 90% t-interval lies inside the margin
        half = sps.t.ppf(0.95, len(d) - 1) * sps.sem(d)
        inside = -margin < d.mean() - half and d.mean() + half < margin
        assert (equivalence_p(d, margin) < 0.05) == inside
    assert np.isnan(equivalence_p([0.001, 0.002], 0.01))  # two seeds: too few for a t-test
    assert equivalence_p([0.003] * 4, 0.01) == 0.0 and equivalence_p([0.02] * 4, 0.01) == 1.0  # no spread


def test_a_tiny_difference_with_small_spread_is_equivalent_within_one_point(tmp_path):
    write_report(paired_frame({"rotation": TINY}), tmp_path)
    comp = pd.read_csv(tmp_path / "stats.csv")
    assert comp.verdict.tolist() == ["equivalent"] and comp.margin.tolist() == [0.01]
    assert comp.p_tost_holm[0] < 0.05 and comp.p_holm[0] >= 0.05  # shown equivalent, not shown different
    table = (tmp_path / "table.md").read_text()
    assert "(n=7) ≈" in table and "≈: equivalent to scratch+finetune within ±1 point. Tests: stats.md." in table
    stats_md = (tmp_path / "stats.md").read_text()
    assert "≈: equivalent to scratch+finetune within ±1 point (two one-sided paired t-tests, TOST" in stats_md
    assert "$\\approx$: equivalent to scratch+finetune within $\\pm$1 point" in (tmp_path / "table.tex").read_text()
    verdicts = (tmp_path / "verdicts.md").read_text()
    family = "- finetune at 1000 labels, against scratch+finetune: "
    assert re.search(
        re.escape(family) + r"rotation is equivalent within ±1 point \(\+0\.1 points \[\+0\.\d, \+0\.\d\]; "
        r"TOST p = [\d.e-]+ after Holm\)\.",
        verdicts,
    )
    assert not any(w in words(table + verdicts) for w in NEVER)


def test_a_wide_spread_is_inconclusive_and_never_called_no_difference(tmp_path):
    write_report(paired_frame({"rotation": WIDE}), tmp_path)
    said = [w for w in NEVER if w in words((tmp_path / "table.md").read_text())]
    assert not said, f"the caption reads a test that did not reject as {said}"
    comp = pd.read_csv(tmp_path / "stats.csv")
    assert comp.verdict.tolist() == ["inconclusive"] and comp.p_holm[0] >= 0.05 and comp.p_tost_holm[0] >= 0.05
    table, verdicts = (tmp_path / "table.md").read_text(), (tmp_path / "verdicts.md").read_text()
    caption = table.split("\n\n")[0]
    assert "No task is shown better or worse than scratch+finetune. Tests: stats.md." in caption
    stats_md = (tmp_path / "stats.md").read_text()
    assert "No task is shown better or worse than scratch+finetune (exact two-sided sign-flip" in stats_md
    assert "Inconclusive against scratch+finetune (neither a difference nor equivalence within ±1 point" in stats_md
    assert "≈" not in table and "▲" not in table
    low, high = 100 * comp.ci_low[0], 100 * comp.ci_high[0]
    assert low < -0.05 and high > 1  # the interval allows a gain larger than the margin
    sentence = (
        f"rotation is inconclusive: the 95% interval [{low:+.1f}, {high:+.1f}] allows a gain of more than 1 point"
    )
    assert sentence in verdicts
    assert not any(w in words(table + verdicts + (tmp_path / "stats.md").read_text()) for w in NEVER)


def test_verdict_counts_in_stats_csv_and_holm_over_the_family(tmp_path):
    df = paired_frame({"jigsaw": WIDE, "rotation": LARGE, "simclr": TINY}, budgets=("100", "1000"))
    write_report(df, tmp_path)
    comp = pd.read_csv(tmp_path / "stats.csv")
    assert {"verdict", "p_tost", "p_tost_holm", "margin"} <= set(comp.columns)
    assert comp.verdict.value_counts().to_dict() == {"inconclusive": 2, "better": 2, "equivalent": 2}
    assert set(comp.verdict[comp.task == "rotation"]) == {"better"}
    for _, fam in comp.groupby(["protocol", "baseline", "budget"]):  # TOST Holm over the same family of tasks
        assert len(fam) == 3 and fam.p_tost_holm.tolist() == pytest.approx(holm(fam.p_tost).tolist())
    stats_md = (tmp_path / "stats.md").read_text()
    assert "| p TOST (Holm) |" in stats_md and "| ▲ | better |" in stats_md
    assert "| equivalent within ±1 point |" in stats_md and "| inconclusive |" in stats_md
    verdicts = (tmp_path / "verdicts.md").read_text()
    assert verdicts.count("\n- finetune at ") == 2  # one sentence per family
    assert re.search(r"rotation is better by 4\.4 points \[\+\d\.\d, \+\d\.\d\]", verdicts)


def test_the_margin_decides_equivalence_and_too_few_seeds_say_why(tmp_path):
    narrow = comparisons(paired_frame({"rotation": TINY}), margin=0.001)
    assert narrow.verdict.tolist() == ["inconclusive"] and narrow.margin.tolist() == [0.001]
    write_report(paired_frame({"rotation": TINY[:2]}), tmp_path)
    comp = pd.read_csv(tmp_path / "stats.csv")
    assert comp.verdict.tolist() == ["inconclusive"] and comp.p_tost.isna().all()
    from bench.report.verdicts import signed

    assert (signed(-0.0004), signed(0.0004), signed(-0.0151)) == ("+0.0", "+0.0", "-1.5")  # never '-0.0'

    reason = "with 2 seeds neither a difference nor equivalence within ±1 point can be shown (equivalence needs 3"
    assert reason in (tmp_path / "verdicts.md").read_text() and reason in (tmp_path / "stats.md").read_text()


def test_console_summary_carries_the_verdicts():
    from bench.report.summary import render

    console = Console(file=io.StringIO(), width=250)
    text = render(console, paired_frame({"rotation": TINY, "jigsaw": WIDE}), 0.01)
    assert "≈" in text and "rotation is equivalent within ±1 point" in text and "jigsaw is inconclusive" in text
    assert not any(w in words(text) for w in NEVER)


def test_the_parent_runs_description_carries_the_verdicts_with_the_suites_margin(tmp_path, monkeypatch):
    import bench.report.publish as publish_module
    from bench.config.suite import Suite

    df = paired_frame({"rotation": TINY})
    monkeypatch.setattr(publish_module, "tidy", lambda tracker, cells: df)
    notes: dict = {}
    from bench.cell import plan_digest

    tags = {"plan": plan_digest([])}  # the record of the invocation whose cells (none here) are reported
    parent = SimpleNamespace(
        info=SimpleNamespace(run_id="p1", start_time=1, run_name="demo", artifact_uri=tmp_path.as_uri()),
        data=SimpleNamespace(tags=tags),
    )
    client = SimpleNamespace(log_artifacts=lambda *a, **k: None, set_tag=lambda *a: None)
    tracker = SimpleNamespace(
        uri="sqlite://", client=client, runs=lambda f: [parent], set_note=lambda run, text: notes.update({run: text})
    )
    console = Console(file=io.StringIO())
    for margin, verdict in ((0.01, "is equivalent within ±1 point"), (0.001, "is inconclusive")):
        suite = Suite(name="demo", results_dir=str(tmp_path), report={"equivalence_margin": margin})
        written = publish_module.publish(tracker, [], suite, SimpleNamespace(name="cifar10", warnings=[]), console)
        assert tmp_path / "demo" / "verdicts.md" in written and "verdicts" in publish_module.REPORT_STEMS
        assert f"rotation {verdict}" in notes["p1"] and "Verdicts of demo on cifar10" in notes["p1"]
    assert "\\[+" in notes["p1"] and not re.search(r"(?<!\\)\[", notes["p1"])  # escaped: not Markdown links


def test_the_margin_is_validated_and_changes_no_cell_key(tmp_path):
    from bench.config.sections import ReportConfig
    from bench.report.stats import MARGIN

    assert ReportConfig().equivalence_margin == MARGIN == 0.01
    for bad in ("0", "-0.01", "1", "5"):
        with pytest.raises(ConfigError) as err:
            load_suite(SMOKE, [f"report.equivalence_margin={bad}"])
        msg = str(err.value)
        assert "key 'report.equivalence_margin': the equivalence margin is a difference of accuracies" in msg
        assert "above 0 and below 1 (0.01 = 1 point)" in msg and "\n" not in msg
    data = "d" * 16
    plain = build_plan(load_suite(SMOKE), data)
    wider = build_plan(load_suite(SMOKE, ["report.equivalence_margin=0.05"]), data)
    assert load_suite(SMOKE, ["report.equivalence_margin=0.05"]).report.equivalence_margin == 0.05
    assert [(c.key, c.config_key) for c in wider] == [(c.key, c.config_key) for c in plain]
