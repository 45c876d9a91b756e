"""A new user's first run in a clone: it writes where a user's results go (git ignores it), leaves the committed
reference results as they were, and says how close it came to them."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.config.load import load_suite

from .conftest import ROOT

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
    assert "8 of its 8 evaluations rerun, 8 with the same test accuracy to 4 decimals" in out, out
