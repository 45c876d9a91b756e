"""A new user's first run in a clone: it writes where a user's results go (git ignores it), leaves the committed
reference results as they were, and says how close it came to them."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.config.load import load_suite

from .conftest import ROOT, store_overrides

SUITES = sorted((ROOT / "suites").glob("*.toml"))
SMALL = ["--set=seeds=[0]", "--set=budgets=[8, 'full']", "--set=protocols=['linear', 'knn']"]
SMALL += ["--set=tasks={rotation={head_hidden=16}, random={}}"]


def git(folder: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=folder, check=True, capture_output=True, text=True).stdout


@pytest.mark.parametrize("path", SUITES, ids=[p.stem for p in SUITES])
def test_every_suite_of_the_clone_writes_where_git_ignores_it(path):
    suite = load_suite(path)
    for name in ("mlflow.db", "mlflow.db.lock", "optuna.journal", f"{suite.name}/table.md", "cache/x"):
        target = Path(suite.results_dir) / name
        ignored = subprocess.run(["git", "check-ignore", "-q", str(target)], cwd=ROOT).returncode == 0
        assert ignored, f"{path.name}: {target} would show in git status"
    if suite.reference_dir:
        assert (ROOT / suite.reference_dir / suite.name / "runs.csv").is_file(), path.name


@pytest.mark.slow
def test_a_run_in_a_clone_leaves_it_clean_and_compares_with_the_committed_results(tmp_path):
    clone = tmp_path / "clone"
    files = git(ROOT, "ls-files", "-co", "--exclude-standard", "-z").split("\0")
    for name in filter(None, files):
        if (ROOT / name).is_file() and (not name.startswith("results/") or name == "results/.gitignore"):
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, clone / name)
    run = [sys.executable, "-m", "bench", "run", "suites/smoke.toml", *SMALL, "--set=reference_dir='results'"]
    reference = subprocess.run([*run, "--set=results_dir='results'"], cwd=clone, capture_output=True, text=True)
    assert reference.returncode == 0, reference.stdout + reference.stderr
    git(clone, "init", "-q")
    git(clone, "add", "-A")  # the reference results of the clone, as committed ones are
    git(clone, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "reference")
    committed = (clone / "results" / "smoke" / "table.md").read_text()
    rerun = subprocess.run(run, cwd=clone, capture_output=True, text=True)  # the suite's own results_dir
    out = rerun.stdout + rerun.stderr
    assert rerun.returncode == 0, out
    assert git(clone, "status", "--porcelain", "--untracked-files=all") == ""  # nothing new, nothing changed
    assert (clone / "results" / "smoke" / "table.md").read_text() == committed
    assert (clone / "runs" / "smoke" / "table.md").is_file()
    assert "against the reference results/smoke/ (commit " in out
    assert "all 8 of its 8 evaluations rerun, with the same test accuracy to 4 decimals" in out, out


@pytest.mark.slow
def test_long_work_says_how_far_it_got_and_the_dry_run_how_long_it_will_take(tmp_path, monkeypatch, capsys):
    from bench.cli import main

    monkeypatch.setenv("BENCH_PROGRESS_EVERY_S", "0")  # every step and every check is due
    store = [f"--set={s}" for s in store_overrides(tmp_path)] + ["--set=tasks={rotation={head_hidden=16}, scratch={}}"]
    tuned = ["--set=tuning.enabled=true", "--set=tuning.protocols=['finetune']", "--set=tuning.trials=2"]
    tuned += ["--set=tuning.budgets=[32]", "--set=budgets=[32]", "--set=seeds=[0]", "--set=protocols=['finetune']"]
    smoke = str(ROOT / "suites" / "smoke.toml")
    assert main(["run", smoke, *store, *tuned, "--dry-run"]) == 0
    assert "no time estimate yet" in capsys.readouterr().out  # an empty store has measured nothing
    assert main(["run", smoke, *store, *tuned]) == 0
    out = capsys.readouterr().out
    assert re.search(r"rotation seed=0 epoch 1/2: step \d+/4 in \d+ s, about \d+ s left in the epoch", out), out
    assert re.search(r"trial 0: \d+% of its schedule, val_acc \d\.\d{4} \(\d+ s\)", out), out
    assert main(["run", smoke, *store, *tuned, "--set=seeds=[0, 1]", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"estimate: about \d+ s for the 3 cells to run, from 3 measured runs", out), out


def test_the_eta_column_estimates_from_measured_cells_and_learns_from_each_finished_one(monkeypatch):
    from types import SimpleNamespace

    import bench.run.eta as eta

    def cell(kind, task, protocol=None, budget=None):
        return SimpleNamespace(kind=kind, task=task, protocol=protocol, budget=budget)

    order = [
        cell("pretrain", "rotation"),
        cell("eval", "rotation", "linear", 100),
        cell("eval", "simclr", "linear", 100),
    ]
    now = [1000.0]
    monkeypatch.setattr(eta.time, "monotonic", lambda: now[0])
    times = eta.CellTimes()
    times.add("eval", "random", "linear", 100, 10.0)  # an earlier run: another task's linear probe at 100 labels
    column = eta.EtaColumn(times, order)
    assert column.render(SimpleNamespace(completed=0)).plain == "about 20 s left + 1 untimed"  # no pretraining yet
    now[0] += 120  # the pretraining took two minutes
    assert column.render(SimpleNamespace(completed=1)).plain == "about 20 s left"
    assert times.estimate(cell("pretrain", "simclr")) == 120.0  # another task's pretraining: the same kind
    now[0] += 4
    assert column.render(SimpleNamespace(completed=1)).plain == "about 16 s left"  # the current cell's 4 s
    assert eta.duration(45) == "45 s" and eta.duration(720) == "12 min" and eta.duration(9000) == "2.5 h"


def test_the_line_against_the_reference_names_the_largest_difference(tmp_path):
    import pandas as pd

    from bench.report.reference import against_reference

    rows = [("rotation", "linear", "100", s, 0.25 + s / 100) for s in (0, 1)]
    frame = pd.DataFrame(rows, columns=["task", "protocol", "budget", "seed", "test_acc"]).assign(
        git_commit="abc1234def"
    )
    (tmp_path / "ref" / "demo").mkdir(parents=True)
    frame.to_csv(tmp_path / "ref" / "demo" / "runs.csv", index=False)
    frame.assign(test_acc=[0.25, 0.27]).to_csv(tmp_path / "runs.csv", index=False)
    line = against_reference(tmp_path / "runs.csv", tmp_path / "ref", "demo")
    assert line.startswith(f"against the reference {tmp_path / 'ref' / 'demo'}/ (commit abc1234): 2 of its 2")
    assert "1 with the same test accuracy to 4 decimals" in line and "largest 0.0100 (rotation linear 100 s1" in line
    assert against_reference(tmp_path / "ref" / "demo" / "runs.csv", tmp_path / "ref", "demo") is None  # itself
    assert against_reference(tmp_path / "runs.csv", tmp_path / "nowhere", "demo") is None
