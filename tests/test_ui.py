"""The MLflow UI in a real browser: a smoke store served by ``mlflow server`` on 127.0.0.1, opened in headless
Chromium at the URLs ``bench run`` prints. The runs table must show every evaluation run by name with its
``test_acc``; the parent run's page must show its results table as written; a screenshot is taken."""

import json
import math
import os
import re
import signal
import struct
import subprocess
import sys
import time
import urllib.request
from html.parser import HTMLParser

import pytest
from mlflow.tracking import MlflowClient

from bench.cli import main
from bench.store import ui
from bench.store.tracking import NOTE

from .conftest import SMOKE

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        ui.find_chromium() is None, reason="no chromium on PATH (Debian: apt-get install chromium; .ci/run does)"
    ),
]

# The smoke suite, trimmed so the store is written in well under a minute; still two seeds, every task, and a
# frozen and a fine-tuned protocol.
TRIM = ["budgets=[32]", 'protocols=["linear", "finetune"]', "pretrain.epochs=1"]
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class Page(HTMLParser):
    """Text of a dumped DOM: all of it, the runs grid's cells by (row-id, col-id), and the rows of HTML tables."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.stack: list[tuple[str, str | None, str | None]] = []  # (tag, row-id, col-id) in force
        self.skip = 0
        self.text: list[str] = []
        self.cells: dict[tuple[str, str], str] = {}
        self.tables: list[list[str]] = []  # rendered table rows, cells joined by " | "
        self.row: list[str] | None = None
        self.cell: list[str] | None = None
        self.feed(html)
        self.text_all = re.sub(r"\s+", " ", " ".join(self.text))

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        row_id, col_id = self.stack[-1][1:] if self.stack else (None, None)
        if tag in VOID:
            return
        self.stack.append((tag, a.get("row-id", row_id), a.get("col-id", col_id)))
        self.skip += tag in ("script", "style")
        if tag == "tr":
            self.row = []
        elif tag in ("td", "th"):
            self.cell = []

    def handle_endtag(self, tag):
        if tag in VOID or not self.stack:
            return
        while self.stack:  # tolerate an unclosed element
            top = self.stack.pop()[0]
            self.skip -= top in ("script", "style")
            if top == tag:
                break
        if tag in ("td", "th") and self.row is not None and self.cell is not None:
            self.row.append(squash("".join(self.cell)))
            self.cell = None
        elif tag == "tr" and self.row is not None:
            self.tables.append(" | ".join(self.row))
            self.row = None

    def handle_data(self, data):
        if self.skip:
            return
        self.text.append(data)
        if self.cell is not None:
            self.cell.append(data)
        if self.stack and self.stack[-1][1] and self.stack[-1][2]:
            key = (self.stack[-1][1], self.stack[-1][2])
            self.cells[key] = squash(self.cells.get(key, "") + " " + data)

    def cell_of(self, run_id: str, col_id: str) -> str | None:
        """A run's cell in the runs grid (row ids are ``<group id>.<run id>`` when runs are grouped)."""
        found = [v for (row, col), v in self.cells.items() if col == col_id and row.split(".")[-1] == run_id]
        return found[0] if found else None


def squash(s: str) -> str:
    return re.sub(r"\s+", " ", s).strip()


def markdown_rows(note: str) -> list[str]:
    """The body and header rows of the Markdown tables in a note, as the rendered text should read."""
    rows = []
    for line in note.splitlines():
        line = line.strip()
        if not line.startswith("|") or re.fullmatch(r"[|:\-\s]+", line):
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        cells = [re.sub(r"\\(.)", r"\1", c.replace("**", "").replace("`", "")) for c in cells]
        rows.append(" | ".join(squash(c) for c in cells))
    return rows


def png_size(path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


def test_mlflow_ui_shows_the_runs_their_test_acc_and_the_results_table(tmp_path, store):
    assert main(["run", str(SMOKE), *(f"--set={s}" for s in store + TRIM)]) == 0
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("smoke")
    assert set(ui.EXPERIMENT_TAGS.items()) <= set(exp.tags.items()), "the tracker sets the UI's experiment tags"
    found = client.search_runs([exp.experiment_id], max_results=1000)
    parent = next(r for r in found if r.data.tags.get("kind") == "suite")
    evals = [r for r in found if r.data.tags.get("kind") == "eval"]
    assert len(evals) >= 4 and all("test_acc" in r.data.metrics for r in evals)
    note = parent.data.tags.get(NOTE, "")
    expected_rows = markdown_rows(note)
    assert len(expected_rows) >= 4, f"the parent's description holds no results table:\n{note}"

    with ui.serve(uri, log=tmp_path / "server.log") as base:
        runs_page = Page(ui.browse(ui.runs_url(base, exp.experiment_id)))
        parent_page = Page(ui.browse(ui.run_url(base, exp.experiment_id, parent.info.run_id)))
        shot = tmp_path / "runs.png"
        ui.browse(ui.runs_url(base, exp.experiment_id), screenshot=shot)

    # The runs table, not the GenAI overview; the experiment's description says what the suite compares.
    page_text = runs_page.text_all
    assert "Runs - Experiment" in page_text and "Group by: cell_group" in page_text, page_text[:2000]
    first_words = re.sub(r"[\s*`]", "", exp.tags[NOTE])[:60]
    assert first_words in re.sub(r"\s", "", page_text), f"experiment description {first_words!r} not shown"
    for run in evals:  # every evaluation run by name, with its test accuracy in its own row
        run_id = run.info.run_id
        assert runs_page.cell_of(run_id, "attributes.`Run Name`") == run.info.run_name, run.info.run_name
        shown = runs_page.cell_of(run_id, "metrics.`test_acc`")
        assert shown is not None, f"no test_acc cell for {run.info.run_name}"
        assert math.isclose(float(shown), run.data.metrics["test_acc"], abs_tol=5e-4), (run.info.run_name, shown)

    # The parent's page renders its description's tables cell for cell, as the Markdown says.
    assert parent.info.run_name in parent_page.text_all
    missing = [row for row in expected_rows if row not in parent_page.tables]
    assert not missing, f"rows of the results table rendered differently:\n{missing}\nrendered: {parent_page.tables}"

    assert png_size(shot) == (1600, 1000) and shot.stat().st_size > 20_000
    # The view: best first (groups by their mean test accuracy, falling), accuracies to at most 6 decimals.
    order = [row.split(".")[-1] for (row, col) in runs_page.cells if col == "attributes.`Run Name`"]
    group_of = {r.info.run_id: r.data.tags["cell_group"] for r in evals}
    groups = list(dict.fromkeys(group_of[i] for i in order if i in group_of))
    accs = {g: [r.data.metrics["test_acc"] for r in evals if group_of[r.info.run_id] == g] for g in groups}
    means = [sum(accs[g]) / len(accs[g]) for g in groups]
    assert len(groups) >= 3 and means == sorted(means, reverse=True), (groups, means)
    assert all(len(runs_page.cell_of(r.info.run_id, "metrics.`test_acc`").split(".")[-1]) <= 6 for r in evals)


def dark_pixels(png) -> int:
    from PIL import Image

    grey = Image.open(png).convert("L")
    return sum(grey.histogram()[:128])


def test_bench_ui_serves_the_store_the_suite_ran_into_and_its_results_page(tmp_path, store):
    assert main(["run", str(SMOKE), *(f"--set={s}" for s in store + TRIM)]) == 0
    exp = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_experiment_by_name("smoke")
    port = ui.free_port()
    no_torch = "import sys; sys.modules['torch'] = None; from bench.cli import main; sys.exit(main(sys.argv[1:]))"
    args = ["ui", str(SMOKE), *(f"--set={s}" for s in store), f"--port={port}"]
    cmd = [sys.executable, "-c", no_torch, *args]  # as in nox's light environment: reading a store needs no PyTorch
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        lines = []
        while not any(line.startswith("serving") for line in lines):
            line = proc.stdout.readline()
            assert line, "bench ui ended: " + "".join(lines)
            lines.append(line)
        printed = "".join(lines)
        page_url = re.search(r"results of 'smoke': (\S+)", printed).group(1)
        runs = re.search(r"MLflow runs of 'smoke': (\S+)", printed).group(1)
        assert runs == ui.runs_url(f"http://127.0.0.1:{port}", exp.experiment_id), printed
        api = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/get-by-name?experiment_name=smoke"
        deadline = time.monotonic() + 120
        while True:  # the UI's server answers for this suite's store: the same experiment, the same id
            try:
                with urllib.request.urlopen(api, timeout=5) as r:
                    assert json.load(r)["experiment"]["experiment_id"] == exp.experiment_id
                    break
            except OSError:
                assert time.monotonic() < deadline, "the MLflow UI did not answer"
                time.sleep(0.5)
        with urllib.request.urlopen(page_url, timeout=10) as r:
            page = Page(r.read().decode())
        assert any(row.startswith("rotation |") for row in page.tables), page.tables  # the report's table
        shot = tmp_path / "page.png"
        ui.browse(page_url, screenshot=shot, budget_ms=0)  # a plain screenshot, no time to run scripts
        assert dark_pixels(shot) > 2000  # text drawn: a blank page or a skeleton has next to none
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=60)


def test_a_run_ends_with_the_command_that_serves_its_store(tmp_path, store, capsys):
    assert main(["run", str(SMOKE), *(f"--set={s}" for s in store + TRIM)]) == 0
    out = capsys.readouterr().out
    assert f'(serve them: bench ui {SMOKE} --set "results_dir={str(tmp_path / "results")!r}" --set ' in out, out
