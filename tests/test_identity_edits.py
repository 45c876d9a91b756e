"""Both directions on an edited copy of the package, against a finished smoke store: comments, docstrings and a
moved function renew no key; a changed constant in a task fails the pin until the task's version is bumped,
and then exactly that task's cells are stale."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.run import golden

from .conftest import ROOT, SMOKE

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(bool(golden.comparable()), reason=str(golden.comparable())),  # the refactor verdict needs it
]


def copy_package(tmp_path: Path) -> Path:
    root = tmp_path / "edited"
    shutil.copytree(ROOT / "bench", root / "bench", ignore=shutil.ignore_patterns("__pycache__"))
    return root


def bench(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = os.environ | {"PYTHONPATH": str(root), "COLUMNS": "250"}
    return subprocess.run(
        [sys.executable, "-m", "bench", *args], cwd=root, env=env, capture_output=True, text=True, timeout=300
    )


def dry_run(root: Path, store: list[str], *extra: str) -> str:
    done = bench(root, "run", str(SMOKE), *(f"--set={s}" for s in store), *extra, "--dry-run")
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def test_comments_docstrings_and_a_moved_function_renew_no_key(smoke_store, tmp_path):
    root = copy_package(tmp_path)
    for module in (root / "bench").rglob("*.py"):
        module.write_text(module.read_text() + "\n# a comment line appended to every module\n")
    features = root / "bench" / "protocols" / "features.py"
    edit(features, "What the protocols share", "What protocols share")  # a docstring
    # a moved function: default_workers from augment/reference.py to train/loop.py, its one caller
    reference = root / "bench" / "augment" / "reference.py"
    source = reference.read_text()
    start = source.index("def default_workers()")
    end = source.index("\n\n\n", start) + 3
    moved, rest = source[start:end], source[:start] + source[end:]
    reference.write_text(rest)
    loop = root / "bench" / "train" / "loop.py"
    edit(
        loop,
        "from bench.augment.reference import default_workers, epoch_batches",
        "from bench.augment.reference import epoch_batches",
    )
    edit(loop, "\n\n@dataclass\nclass EpochStats", "\n\n" + moved + "\n@dataclass\nclass EpochStats")
    assert "0 to run" in dry_run(root, smoke_store.sets, "--verbose")
    assert "0 to run" in dry_run(root, smoke_store.sets, "--set=pretrain.warmup_epochs=0")
    pin = bench(root, "identity")
    assert pin.returncode == 1
    moved_parts = sorted(line.split()[1] for line in pin.stdout.splitlines() if line.startswith("part "))
    assert moved_parts == ["reference", "train"], pin.stdout  # comments and the docstring moved no digest
    assert "still version 1" in pin.stdout and "identity --update" in pin.stdout
    update = bench(root, "identity", "--update")  # golden outputs unchanged: a refactor, recorded
    assert update.returncode == 0, update.stdout + update.stderr
    assert bench(root, "identity").returncode == 0
    assert "0 to run" in dry_run(root, smoke_store.sets, "--verbose")


def test_a_constant_in_rotation_fails_the_pin_until_its_version_is_bumped(smoke_store, tmp_path):
    root = copy_package(tmp_path)
    rotation = root / "bench" / "tasks" / "rotation.py"
    edit(rotation, "nn.BatchNorm1d(cfg.head_hidden)", "nn.BatchNorm1d(cfg.head_hidden, eps=1e-3)")
    pin = bench(root, "identity")
    assert pin.returncode == 1 and "part task.rotation (bench/tasks/rotation.py) changed" in pin.stdout
    assert "bump its version (`version` of the task class in rotation.py)" in pin.stdout
    checked = bench(root, "golden", "--case", "pretrain/rotation")
    assert checked.returncode == 1 and "changed: no version moved" in checked.stdout
    refused = bench(root, "identity", "--update")  # a change of behaviour cannot be recorded as a refactor
    assert refused.returncode == 1 and "golden case pretrain/rotation: its outputs changed" in refused.stdout
    edit(rotation, '    name = "rotation"\n', '    name = "rotation"\n    version = 2\n')
    out = dry_run(root, smoke_store.sets, "--verbose")
    todo = [line for line in out.splitlines() if line.strip().startswith("todo")]
    assert todo and all(" rotation" in line or "pretrain rotation" in line for line in todo)
    assert all("stale: parts changed (task.rotation 1 -> 2)" in line for line in todo)
    summary = dry_run(root, smoke_store.sets)  # without --verbose: a line per task, the reasons counted
    assert f"stale: parts changed (task.rotation 1 -> 2) ({len(todo)} cells)" in summary
    (line,) = [x for x in summary.splitlines() if x.split()[:1] == ["rotation"]]
    assert f"0 done  {len(todo):>5} to run ({len(todo)} with results from other code or data)" in line, line
    assert "todo" not in summary
    assert f"{len(todo)} to run" in out
    pin = bench(root, "identity")  # what is left: recording the bump (and its new outputs) in the lock
    assert pin.returncode == 1 and "part task.rotation is version 2, the lock has 1" in pin.stdout
