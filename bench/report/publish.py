"""The report where people look: <results_dir>/<suite>/ on disk, and in MLflow on the latest parent run.

The latest parent run (tag ``kind = suite``) receives the report files as artifacts and the results table with
the verdicts (``verdicts.md``) as its description, so opening it in the UI shows the results and what they show.
A parent run that held an earlier report is marked superseded (tag ``report_status``, and a first line in its
description naming the run that replaced it), so an old table is never read as the current one.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console

from bench.cell import Cell, plan_digest
from bench.config.suite import Suite
from bench.data.datasets import Dataset
from bench.errors import ConfigError
from bench.files import check_writable, inside
from bench.report.reference import against_reference
from bench.report.tidy import tidy
from bench.report.write import write_report
from bench.store.runlog import into_artifacts
from bench.store.tracking import NOTE, Tracker

# the files write_report may write (other files in <results_dir>/<suite>/, such as parity.md, are left alone)
REPORT_STEMS = {
    "runs",
    "stats",
    "table",
    "verdicts",
    "health",
    "cost",
    "variance",
    "label_efficiency",
    "gain_heatmap",
    "cd_diagram",
    "health_vs_accuracy",
}
FRONT = ("table.md", "verdicts.md")  # the parent run's description, in this order


def write_files(df, suite: Suite, dataset: str, warnings: list[str] = ()) -> tuple[Path, list[Path]]:
    """Write <results_dir>/<suite>/ from a tidy table; remove what an earlier report wrote and this one does not."""
    out = inside(suite.results_dir, suite.name)
    check_writable(out)
    margin = suite.report.equivalence_margin
    written = write_report(df, out, suite=suite.name, dataset=dataset, margin=margin, data_warnings=warnings)
    for old in out.iterdir():  # a figure an earlier report drew and this one does not (too few seeds now)
        if old.is_file() and old.stem in REPORT_STEMS and old not in written:
            old.unlink()
        elif old.name.startswith(".") and old.suffix == ".tmp" and time.time() - old.stat().st_mtime > 60:
            old.unlink(missing_ok=True)  # a file a killed report was writing (never one being written now)
    return out, written


def from_runs_csv(csv: Path, suite: Suite, console: Console) -> list[Path]:
    """Rewrite <results_dir>/<suite>/ from a report's ``runs.csv`` (the tidy table, with every run's numbers),
    without the store: the same numbers, laid out by this version of the report. Nothing is written to MLflow."""
    import pandas as pd

    try:
        df = pd.read_csv(csv, dtype={"budget": str, "status": str})
    except (OSError, ValueError) as e:
        raise ConfigError(f"--from-csv {csv}: cannot read it as a report's runs.csv ({e})") from None
    missing = {"task", "protocol", "budget", "seed", "test_acc", "status"} - set(df.columns)
    if missing:
        raise ConfigError(f"--from-csv {csv}: not a report's runs.csv (no column {sorted(missing)[0]!r})")
    dataset = str(df["dataset"].dropna().iloc[0]) if "dataset" in df and df["dataset"].notna().any() else ""
    out, written = write_files(df, suite, dataset)
    console.print(f"report: {out}/ ({len(written)} files, from {csv})")
    return written


def publish(tracker: Tracker, cells: list[Cell], suite: Suite, data: Dataset, console: Console) -> list[Path]:
    """Write <results_dir>/<suite>/ from the suite's finished runs and attach it to the latest parent run. A suite
    without any finished evaluation is an error (nothing is written, nothing is created in the store)."""
    df = tidy(tracker, cells)
    if df["test_acc"].notna().sum() == 0:
        raise ConfigError(
            f"suite {suite.name!r} has no finished evaluation runs in {tracker.uri} under its current keys; "
            f"run it first (bench run), or check --dry-run for stale cells"
        )
    out, written = write_files(df, suite, data.name, data.warnings)
    parents = sorted(tracker.runs("tags.kind = 'suite'"), key=lambda r: r.info.start_time)
    plan = plan_digest(cells)
    if parents and parents[-1].data.tags.get("plan") != plan:  # the latest record is of other cells: keep it
        parents.append(tracker.report_run(suite, plan))
    if parents:
        latest = parents[-1]
        run_id = latest.info.run_id
        with into_artifacts(latest.info.artifact_uri):
            tracker.client.log_artifacts(run_id, str(out), artifact_path="report")
        # MLflow renders the description as Markdown: "[a, b] (n=2)" would read as a link, so brackets are escaped
        table, verdicts = ((out / f).read_text().replace("[", "\\[").replace("]", "\\]") for f in FRONT)
        tracker.set_note(
            run_id, f"## Results of {suite.name}\n\n{table}\n{verdicts}\nReport files: artifacts, `report/`."
        )
        tracker.client.set_tag(run_id, "report_status", "current")
        complete = bool(df["test_acc"].notna().all())  # a partial report supersedes only its own plan's records
        for old in parents[:-1]:
            if old.data.tags.get("report_status") == "current" and (complete or old.data.tags.get("plan") == plan):
                tracker.client.set_tag(old.info.run_id, "report_status", f"superseded by {run_id}")
                note = old.data.tags.get(NOTE, "")
                banner = f"**Superseded** by the report on run {run_id} ({latest.info.run_name})."
                tracker.set_note(old.info.run_id, f"{banner}\n\n{note}")
    console.print(f"report: {out}/ ({len(written)} files)")
    if suite.reference_dir and (line := against_reference(out / "runs.csv", suite.reference_dir, suite.name)):
        console.print(line, highlight=False, markup=False)
    return written
