"""The fault suite: bad input, damaged files, full or read-only disks, and killed, interrupted or concurrent runs,
as a user meets them. Each case ends in one line naming what to fix and a documented exit code (2: input to fix,
3: another invocation holds the suite, 130: interrupted), never a traceback; afterwards every cell has exactly one
FINISHED run and the report is whole."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from bench.cli import main
from bench.config.load import load_suite
from bench.run.runner import Runner
from bench.store.client import open_client

from .conftest import ROOT

pytestmark = pytest.mark.slow

TINY = """
name = "tiny"
seeds = [0]
budgets = [8, "full"]
protocols = ["linear"]
device = "cpu"

[dataset]
name = "synthetic"
synthetic = { classes = 4, train = 64, test = 32, size = 16 }

[encoder]
name = "small_cnn"

[pretrain]
epochs = 1
batch_size = 32

[linear]
l2_grid = [1e-3]
max_iter = 10

[tasks.rotation]
head_hidden = 16

[tasks.random]
"""


# ---------------------------------------------------------------- helpers


def suite_file(tmp_path: Path, text: str = TINY, name: str = "tiny.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def sets(tmp_path: Path, *extra: str) -> list[str]:
    base = [
        f"results_dir={str(tmp_path / 'results')!r}",
        f"tracking_uri={('sqlite:///' + str(tmp_path / 'mlflow.db'))!r}",
    ]
    return [f"--set={s}" for s in (*base, *extra)]


def bench(capsys, *argv: str) -> tuple[int, str]:
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out + out.err


def one_error(out: str, *fragments: str) -> str:
    """The single ``error:`` line of ``out`` (no traceback anywhere), containing every fragment."""
    assert "Traceback" not in out, out
    lines = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, out
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def all_runs(tmp_path: Path, experiment: str = "tiny") -> list:
    db = tmp_path / "mlflow.db"
    if not db.exists():
        return []
    client = open_client(f"sqlite:///{db}")  # under the store's first-open lock: a run may be creating it
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], max_results=5000) if exp else []


def finished_once(tmp_path: Path, suite: Path, *extra: str) -> None:
    """Every planned cell has exactly one FINISHED run; nothing is left RUNNING; the report is whole."""
    overrides = [s.removeprefix("--set=") for s in sets(tmp_path, *extra)]
    plan = Runner(load_suite(suite, overrides), suite).cells
    counts: dict[str, int] = {}
    for r in all_runs(tmp_path):
        assert r.info.status != "RUNNING", r.info.run_name
        if r.info.status == "FINISHED" and "cell_key" in r.data.tags:
            counts[r.data.tags["cell_key"]] = counts.get(r.data.tags["cell_key"], 0) + 1
    assert {c.key: counts.get(c.key, 0) for c in plan} == {c.key: 1 for c in plan}
    assert set(counts.values()) == {1}  # cells of earlier settings too: never two FINISHED runs of one cell
    report = tmp_path / "results" / "tiny"
    table = pd.read_csv(report / "runs.csv")
    assert len(table) == sum(c.kind == "eval" for c in plan) and table.test_acc.between(0, 1).all()
    table_md = (report / "table.md").read_text()
    assert all(f"| {c.task}" in table_md for c in plan if c.kind == "eval") and "Code: git commit" in table_md


def popen(tmp_path: Path, suite: Path, *extra: str, args: tuple[str, ...] = ()) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "bench", "run", str(suite), *sets(tmp_path, *extra), *args]
    env = dict(os.environ, COLUMNS="250")
    # a shell starts background jobs with SIGINT ignored, and Python keeps it so: give the run Ctrl-C back
    default_sigint = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)  # noqa: E731
    return subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, preexec_fn=default_sigint
    )


def signal_when(proc: subprocess.Popen, trigger: str, sig: int) -> str:
    """Send ``sig`` when a line containing ``trigger`` is printed; returns everything printed."""
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if trigger in line:
            proc.send_signal(sig)
            break
    rest, _ = proc.communicate(timeout=120)
    return "".join(seen) + rest


def can_mount() -> bool:
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    return probe.returncode == 0 and os.geteuid() == 0


# ---------------------------------------------------------------- bad suites: one line, exit 2, nothing written

BAD_SETTINGS = [
    # item 2: names are folders under results_dir
    ("name=../../x", "key 'name'"),
    ("name='/tmp/bench-absolute'", "key 'name'"),
    ("name=", "key 'name'"),
    ("name='a b'", "key 'name'"),
    ("name=.hidden", "key 'name'"),
    ("name=..", "key 'name'"),
    (f"name={'x' * 65}", "key 'name'"),
    ("results_dir=''", "results_dir is empty"),
    # item 4: values that pass a type check but mean nothing
    ("linear.l2_grid=[-1e-3]", "key 'linear.l2_grid.0'"),
    ("linear.l2_grid=[0.0]", "key 'linear.l2_grid.0'"),
    ("tuning.space.finetune.lr=[0.3, 0.001]", "low 0.3 is above high 0.001"),
    ("tuning.space.linear.l2=[0, 1]", "a log-scale range starts above 0"),
    ("tuning.space.knn.temperature=[-1, 1]", "a log-scale range starts above 0"),
    ("tuning.budgets=[1000]", "tuning.budgets [1000] are not among the suite's budgets"),
    ("pretrain.lr=inf", "key 'pretrain.lr': Input should be a finite number"),
    ("pretrain.lr=nan", "key 'pretrain.lr': Input should be a finite number"),
    ("finetune.weight_decay=inf", "key 'finetune.weight_decay'"),
    ("seeds=[-1]", "key 'seeds.0': Input should be greater than or equal to 0"),
    ("seeds=[18446744073709551616]", "key 'seeds.0': Input should be less than or equal to 4294967295"),
    ("seeds=[4294967296]", "key 'seeds.0'"),
    ("tuning.sampler_seed=-1", "key 'tuning.sampler_seed'"),
    ("tuning.label_seed=5", "tuning.label_seed': removed: each seed's cells are tuned on that seed's own budget"),
    ("pretrain.warmup_epochs=3", "warmup_epochs = 3 is longer than training (epochs = 1)"),
    ("budgets=[2, 'full']", "key 'budgets': budget 2 is smaller than the 4 classes"),
    ("budgets=[8, 8]", "key 'budgets': values must be unique"),
    # a cell named twice would run twice and count as two seeds in the report
    ("protocols=['linear', 'linear']", "key 'protocols': values must be unique; 'linear' is listed more than once"),
    ("protocols=['linear', 'knn', 'linear']", "key 'protocols': values must be unique"),
    ("tasks={rotation={protocols=['linear', 'linear']}}", "key 'tasks.rotation.protocols': values must be unique"),
    ("tuning.protocols=['linear', 'linear']", "key 'tuning.protocols': values must be unique"),
    ("tuning.budgets=[8, 8]", "key 'tuning.budgets': values must be unique"),
    ("budgets=[8, '8']", "key 'budgets': values must be unique"),
    ("tasks.rotaton={}", "key 'tasks.rotaton': unknown task 'rotaton'; registered: barlowtwins"),
    ("encoder.name=vit_huge", "unknown encoder 'vit_huge'"),
    ("pretrain.epochs=0", "pretrain.epochs = 0, but rotation pretrains"),
    ("tracking_uri='foo://x'", "unknown scheme 'foo'"),
    ("tracking_uri='mlruns'", "is an MLflow file store, which cannot keep one writer per suite"),
    ("tracking_uri='file:///tmp/mlruns'", "is an MLflow file store"),
    ("protocols=['svm']", "key 'protocols.0'"),
    ("device=tpu", "key 'device'"),
    ("dataset.name=imagenet", "key 'dataset.name'"),
    ("pretrain.batch_size=1", "key 'pretrain.batch_size'"),
    ("nonsense", "expected key=value"),
]


@pytest.mark.parametrize("setting, message", BAD_SETTINGS, ids=[s for s, _ in BAD_SETTINGS])
def test_a_bad_setting_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, setting, message):
    suite = suite_file(tmp_path)
    rc, out = bench(capsys, "run", str(suite), *sets(tmp_path), f"--set={setting}")
    assert rc == 2
    line = one_error(out, message)
    assert "(top level)" not in line and "{" not in line.split("(got")[-1]  # names a key, never dumps the suite
    assert all_runs(tmp_path) == [] and not (tmp_path / "results").exists()
    assert not Path("/tmp/bench-absolute").exists() and not (tmp_path.parent.parent / "x").exists()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("dry", [True, False], ids=["dry-run", "run"])
def test_cuda_without_cuda_is_refused_by_the_dry_run_as_by_the_run(tmp_path, capsys, dry):
    suite = suite_file(tmp_path)
    rc, out = bench(capsys, "run", str(suite), *sets(tmp_path), "--set=device='cuda'", *(["--dry-run"] if dry else []))
    assert rc == 2
    one_error(out, "key 'device': device = 'cuda' but no CUDA device is available")
    assert all_runs(tmp_path) == []


def test_a_suite_file_that_is_not_utf8_not_toml_or_missing(tmp_path, capsys):
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes('name = "caf\xe9"\n'.encode("latin-1"))
    rc, out = bench(capsys, "run", str(latin1))
    assert rc == 2 and "not UTF-8 text" in one_error(out, str(latin1))
    broken = suite_file(tmp_path, "name = [unclosed", "broken.toml")
    rc, out = bench(capsys, "run", str(broken))
    assert rc == 2 and "not valid TOML" in one_error(out, str(broken))
    rc, out = bench(capsys, "run", str(tmp_path / "nowhere.toml"))
    assert rc == 2 and "no suite" in one_error(out)


def test_an_unknown_tracking_scheme_in_the_environment(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "mongodb://127.0.0.1/x")
    suite = suite_file(tmp_path)
    rc, out = bench(capsys, "run", str(suite), f"--set=results_dir={str(tmp_path / 'results')!r}")
    assert rc == 2
    one_error(out, "$MLFLOW_TRACKING_URI", "unknown scheme 'mongodb'")


# ---------------------------------------------------------------- bad data: one line naming the file


def _image(path: Path, size=(16, 16), seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def _folder(root: Path) -> Path:
    for k, c in enumerate(("cat", "dog")):
        for i in range(6):
            _image(root / "train" / c / f"{i}.png", seed=k * 100 + i)
        for i in range(3):
            _image(root / "test" / c / f"{i}.png", seed=k * 100 + 50 + i)
    return root


def _jpeg_cut(path: Path) -> None:
    _image(path.with_suffix(".png"), seed=7)
    Image.open(path.with_suffix(".png")).save(path, "JPEG")
    path.with_suffix(".png").unlink()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 9 // 10])


BAD_DATA = {
    "truncated jpeg": (lambda r: _jpeg_cut(r / "train" / "dog" / "cut.jpg"), "train/dog/cut.jpg", "truncated"),
    "garbage file": (
        lambda r: (r / "train" / "cat" / "x.png").write_bytes(b"not an image"),
        "cat/x.png",
        "not a readable image",
    ),
    "empty file": (lambda r: (r / "test" / "cat" / "e.png").write_bytes(b""), "cat/e.png", "empty file"),
    "dangling link": (
        lambda r: (r / "train" / "cat" / "l.png").symlink_to(r / "gone.png"),
        "cat/l.png",
        "No such file",
    ),
    "unlabeled of another size": (lambda r: _image(r / "unlabeled" / "u.png", (24, 24)), "unlabeled", "24x24"),
    "not square": (lambda r: _image(r / "test" / "dog" / "wide.png", (20, 16)), "dog/wide.png", "not square"),
    "one class": (lambda r: __import__("shutil").rmtree(r / "train" / "dog"), "", "class"),
}


@pytest.mark.parametrize("case", BAD_DATA, ids=list(BAD_DATA))
def test_bad_image_folders_are_one_line_naming_the_file(tmp_path, capsys, monkeypatch, case):
    damage, where, reason = BAD_DATA[case]
    root = _folder(tmp_path / "data")
    damage(root)
    text = TINY.replace('name = "synthetic"', f'name = "imagefolder"\nroot = "{root}"').replace(
        "budgets = [8", "budgets = [4"
    )
    rc, out = bench(capsys, "run", str(suite_file(tmp_path, text)), *sets(tmp_path))
    assert rc == 2
    one_error(out, where, reason)
    assert all_runs(tmp_path) == []


def test_a_truncated_jpeg_is_refused_even_when_pil_accepts_truncated_files(tmp_path, capsys, monkeypatch):
    from PIL import ImageFile

    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    root = _folder(tmp_path / "data")
    _jpeg_cut(root / "test" / "cat" / "cut.jpg")
    text = TINY.replace('name = "synthetic"', f'name = "imagefolder"\nroot = "{root}"').replace("[8,", "[4,")
    rc, out = bench(capsys, "run", str(suite_file(tmp_path, text)), *sets(tmp_path))
    assert rc == 2 and "truncated" in one_error(out, "cat/cut.jpg")


# ---------------------------------------------------------------- the store and the results folder


def test_a_garbage_store_is_one_line_and_left_untouched(tmp_path, capsys):
    (tmp_path / "mlflow.db").write_bytes(b"this is not sqlite" * 100)
    rc, out = bench(capsys, "run", str(suite_file(tmp_path)), *sets(tmp_path))
    assert rc == 2
    one_error(out, "mlflow.db is damaged", "move it aside")
    assert (tmp_path / "mlflow.db").read_bytes() == b"this is not sqlite" * 100


def test_a_truncated_store_is_one_line(tmp_path, capsys):
    suite = suite_file(tmp_path)
    assert bench(capsys, "run", str(suite), *sets(tmp_path))[0] == 0
    db = tmp_path / "mlflow.db"
    db.write_bytes(db.read_bytes()[:8192])
    rc, out = bench(capsys, "run", str(suite), *sets(tmp_path))
    assert rc == 2
    one_error(out, "mlflow.db", "move it aside")


def test_a_locked_store_is_one_line(tmp_path, capsys):
    MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").search_experiments()
    holder = sqlite3.connect(tmp_path / "mlflow.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another program holds the file (a DB browser, a stuck process)
    try:
        rc, out = bench(capsys, "run", str(suite_file(tmp_path)), *sets(tmp_path))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert rc == 2
    one_error(out, "mlflow.db is locked by another process")


def test_a_store_of_another_schema_version_is_one_line(tmp_path):
    MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").search_experiments()
    with sqlite3.connect(tmp_path / "mlflow.db") as con:  # a schema revision this MLflow does not know
        con.execute("UPDATE alembic_version SET version_num = 'ffffffffffff'")
    proc = popen(tmp_path, suite_file(tmp_path))  # a fresh process: this one keeps its opened store
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 2
    one_error(out, "mlflow.db cannot be used", "database schema")


def test_results_dir_that_is_a_file(tmp_path, capsys):
    (tmp_path / "results").write_text("a file where the results folder should be")
    suite = suite_file(tmp_path)
    rc, out = bench(capsys, "run", str(suite), *sets(tmp_path))
    assert rc == 2
    one_error(out, "results")


@pytest.mark.skipif(not can_mount(), reason="needs root and mount namespaces (unshare -m) for a read-only folder")
def test_a_read_only_results_folder_is_one_line_then_a_writable_one_runs(tmp_path):
    suite = suite_file(tmp_path)
    results = tmp_path / "results"
    results.mkdir()
    cmd = [sys.executable, "-m", "bench", "run", str(suite), *sets(tmp_path)]
    script = f'mount --bind {results} {results} && mount -o remount,ro,bind {results} && exec "$@"'
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", *cmd], cwd=ROOT, capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    one_error(out, str(results), "cannot be written")
    assert all_runs(tmp_path) == []
    assert subprocess.run(cmd, cwd=ROOT, capture_output=True).returncode == 0
    finished_once(tmp_path, suite)


@pytest.mark.skipif(not can_mount(), reason="needs root and mount namespaces (unshare -m) for a small disk")
def test_a_full_disk_stops_the_run_with_one_line_then_a_rerun_completes(tmp_path):
    suite = suite_file(tmp_path)
    results = tmp_path / "results"
    results.mkdir()
    cmd = [sys.executable, "-m", "bench", "run", str(suite), *sets(tmp_path)]
    # 256 KiB: the suite's small files fit, the 400 KB checkpoint does not
    script = f'mount -t tmpfs -o size=256k tmpfs {results} && exec "$@"'
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", *cmd], cwd=ROOT, capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    one_error(out, "no space left writing", "checkpoints", "free space and rerun")
    assert not any(
        r.info.status in ("FINISHED", "RUNNING") and r.data.tags.get("kind") == "pretrain" for r in all_runs(tmp_path)
    )
    assert subprocess.run(cmd, cwd=ROOT, capture_output=True).returncode == 0
    finished_once(tmp_path, suite)


@pytest.mark.skipif(not can_mount(), reason="needs root and mount namespaces (unshare -m) for a small disk")
@pytest.mark.parametrize("store_on_the_full_disk", [False, True])
def test_a_full_disk_is_named_in_the_line_whatever_was_being_written(tmp_path, store_on_the_full_disk):
    """700 KiB: the checkpoint fits, its copy into the MLflow artifacts does not (MLflow's copy raises without a
    file name); with the store on the same disk, SQLite fills it first (its error has no file name either)."""
    suite = suite_file(tmp_path)
    results = tmp_path / "results"
    results.mkdir()
    store = results / "mlflow.db" if store_on_the_full_disk else tmp_path / "mlflow.db"
    cmd = [sys.executable, "-m", "bench", "run", str(suite), *sets(tmp_path, f"tracking_uri='sqlite:///{store}'")]
    script = f'mount -t tmpfs -o size=700k tmpfs {results} && exec "$@"'
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", *cmd], cwd=ROOT, capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    line = one_error(out, "free space and rerun")
    assert str(store) in line if store_on_the_full_disk else str(results / "mlartifacts") in line, line


@pytest.mark.skipif(not can_mount(), reason="needs root and mount namespaces (unshare -m) for a read-only folder")
def test_a_read_only_data_folder_runs_without_its_decoded_cache(tmp_path):
    root = _folder(tmp_path / "data")
    text = TINY.replace('name = "synthetic"', f'name = "imagefolder"\nroot = "{root}"').replace("[8,", "[4,")
    suite = suite_file(tmp_path, text)
    cmd = [sys.executable, "-m", "bench", "run", str(suite), *sets(tmp_path)]
    script = f'mount --bind {root} {root} && mount -o remount,ro,bind {root} && exec "$@"'
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", *cmd], cwd=ROOT, capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "decoded images not cached (Read-only file system)" in out, out
    assert not (root / ".bench-cache").exists()
    finished_once(tmp_path, suite)


def test_an_unexpected_error_is_one_line_with_its_traceback_in_a_file(tmp_path, capsys, monkeypatch):
    from bench.run import runner

    def broken(*args, **kwargs):
        raise TypeError("a bug")

    monkeypatch.setattr(runner, "build_plan", broken)
    rc, out = bench(capsys, "run", str(suite_file(tmp_path)), *sets(tmp_path))
    assert rc == 1
    line = one_error(out, "TypeError: a bug", "unexpected; the traceback is in")
    log = Path(line.rsplit(" ", 1)[1].rstrip(")"))
    assert "Traceback" in log.read_text() and "build_plan" in log.read_text()


# ---------------------------------------------------------------- killed and interrupted runs


@pytest.mark.parametrize(
    "where, trigger, extra",
    [
        ("pretraining", "epoch 3/40", ("pretrain.epochs=40", "pretrain.checkpoint_every_s=0")),
        ("evaluation", "test_acc", ("budgets=[8, 16, 32, 'full']", "protocols=['linear', 'knn']")),
        ("report", "linear: test accuracy", ()),
    ],
)
def test_sigkill_then_rerun_finishes_every_cell_once(tmp_path, capsys, where, trigger, extra):
    suite = suite_file(tmp_path)
    proc = popen(tmp_path, suite, *extra)
    signal_when(proc, trigger, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    survivors = {r.info.run_id for r in all_runs(tmp_path) if r.info.status == "FINISHED"}
    rc, out = bench(capsys, "run", str(suite), *sets(tmp_path, *extra))
    assert rc == 0 and "Traceback" not in out
    if where == "pretraining":
        assert re.search(r"resuming at epoch [3-9]/40 from the state saved by suite 'tiny' \(interrupted\)", out), out
    finished_once(tmp_path, suite, *extra)
    assert survivors <= {r.info.run_id for r in all_runs(tmp_path) if r.info.status == "FINISHED"}


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["sigkill", "ctrl-c"])
def test_a_kill_during_tuning_trial_0_then_rerun(tmp_path, capsys, sig):
    extra = (
        "tuning.enabled=true",
        "tuning.protocols=['finetune']",
        "tuning.budgets=['full']",
        "tuning.trials=2",
        "protocols=['linear', 'finetune']",
        "finetune.epochs=300",  # a trial of about 2 s: the signal lands inside trial 0
        "finetune.min_steps=0",
        "finetune.patience=1000",
    )
    suite = suite_file(tmp_path)
    proc = popen(tmp_path, suite, *extra)
    out = signal_when(proc, "trial 0: started", sig)  # printed inside trial 0's run, before it trains
    assert proc.returncode == (-signal.SIGKILL if sig == signal.SIGKILL else 130), out
    if sig == signal.SIGINT:
        assert "interrupted; rerun to resume" in out and "Traceback" not in out
        assert all(r.info.status != "FAILED" for r in all_runs(tmp_path))  # KILLED, trial and cells alike
    rc, out = bench(capsys, "run", str(suite), *sets(tmp_path, *extra))
    assert rc == 0 and "Traceback" not in out
    finished_once(tmp_path, suite, *extra)
    trials = [r for r in all_runs(tmp_path) if r.data.tags.get("kind") == "trial"]
    killed = [r for r in trials if r.info.status == "KILLED"]
    finished = [r for r in trials if r.info.status == "FINISHED"]
    assert len(killed) == 1 and killed[0].info.run_name.endswith("trial 0") and len(finished) == 2
    # the killed trial 0 (the configured defaults) was evaluated again, not skipped
    assert killed[0].data.params in [r.data.params for r in finished]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupt_is_exit_130_its_runs_killed_and_a_rerun_resumes(tmp_path, capsys, sig):
    suite = suite_file(tmp_path)
    proc = popen(tmp_path, suite, "pretrain.epochs=40")
    out = signal_when(proc, "epoch 3/40", sig)
    assert proc.returncode == 130, out
    assert "interrupted; rerun to resume" in out and "Traceback" not in out
    statuses = {r.info.run_name: r.info.status for r in all_runs(tmp_path)}
    assert statuses["rotation pretrain s0"] == "KILLED" and "FAILED" not in statuses.values()
    assert sum(s == "KILLED" for s in statuses.values()) == 2  # the cell and its parent
    assert bench(capsys, "run", str(suite), *sets(tmp_path, "pretrain.epochs=40"))[0] == 0
    finished_once(tmp_path, suite, "pretrain.epochs=40")


# ---------------------------------------------------------------- two invocations, one suite


def _two_at_once(tmp_path, suite, *extra, args=()) -> list[tuple[int, str]]:
    """Two invocations started together; each needs several seconds of pretraining, so they overlap."""
    procs = [popen(tmp_path, suite, *extra, args=args) for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    return [(p.returncode, out) for p, out in zip(procs, outs)]


def test_two_invocations_at_once_on_a_fresh_store(tmp_path):
    suite = suite_file(tmp_path)
    results = sorted(_two_at_once(tmp_path, suite, "pretrain.epochs=20"))
    (ok, _), (busy, out) = results
    assert (ok, busy) == (0, 3), results
    one_error(out, "suite 'tiny' is being run by process", "one writer per suite", "--wait")
    finished_once(tmp_path, suite, "pretrain.epochs=20")


def test_two_invocations_at_once_on_an_existing_store_with_wait(tmp_path, capsys):
    suite = suite_file(tmp_path)
    assert bench(capsys, "run", str(suite), *sets(tmp_path))[0] == 0
    extra = ("budgets=[8, 16, 'full']", "protocols=['linear', 'knn']", "pretrain.epochs=20")
    results = _two_at_once(tmp_path, suite, *extra, args=("--wait", "300"))
    assert [rc for rc, _ in results] == [0, 0], results
    assert any("waiting for process" in out for _, out in results)
    assert any(" 0 to run" in out for _, out in results)  # the second found everything done
    finished_once(tmp_path, suite, *extra)


def test_waiting_longer_than_wait_is_exit_3(tmp_path, capsys):
    _lease_from_elsewhere(tmp_path, heartbeat_age_s=0)
    start = time.monotonic()
    rc, out = bench(capsys, "run", str(suite_file(tmp_path)), *sets(tmp_path), "--wait", "3")
    assert rc == 3 and time.monotonic() - start >= 3
    assert "waiting for process 4242 on node-7" in out
    one_error(out, "try again later")


def _lease_from_elsewhere(tmp_path, heartbeat_age_s: float, host: str = "node-7") -> str:
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    beat = f"{time.time() - heartbeat_age_s:.3f}"
    tags = {"holder_host": host, "holder_machine": "another-boot/1", "holder_pid": "4242", "holder_since": beat}
    return client.create_experiment("lease:tiny", tags={**tags, "heartbeat": beat})


def test_a_holder_with_this_hostname_in_another_container_is_not_judged_by_its_pid(tmp_path, capsys):
    import socket

    _lease_from_elsewhere(tmp_path, heartbeat_age_s=1, host=socket.gethostname())  # pid 4242 is not ours
    rc, out = bench(capsys, "run", str(suite_file(tmp_path)), *sets(tmp_path))
    assert rc == 3
    one_error(out, "process 4242 on", "last heartbeat 1 s ago")


def test_a_lease_deleted_by_hand_is_freed(tmp_path, capsys):
    experiment = _lease_from_elsewhere(tmp_path, heartbeat_age_s=1)
    MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").delete_experiment(experiment)  # in the UI
    suite = suite_file(tmp_path)
    rc, out = bench(capsys, "run", str(suite), *sets(tmp_path))
    assert rc == 0 and "it was deleted by hand; taking it over" in out
    finished_once(tmp_path, suite)


def test_a_live_holder_on_another_machine_is_waited_for(tmp_path, capsys):
    _lease_from_elsewhere(tmp_path, heartbeat_age_s=1)
    rc, out = bench(capsys, "run", str(suite_file(tmp_path)), *sets(tmp_path))
    assert rc == 3
    one_error(out, "process 4242 on node-7")
    assert all_runs(tmp_path) == []


def test_a_silent_holder_on_another_machine_is_taken_over(tmp_path, capsys):
    _lease_from_elsewhere(tmp_path, heartbeat_age_s=3600)
    suite = suite_file(tmp_path)
    rc, out = bench(capsys, "run", str(suite), *sets(tmp_path))
    assert rc == 0 and "sent no heartbeat for 3600 s" in out and "taking it over" in out
    finished_once(tmp_path, suite)


def test_only_one_of_many_concurrent_takers_gets_the_lease(tmp_path):
    from bench.store.client import open_client
    from bench.store.lease import LeaseBusy, acquire

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    open_client(uri)
    got, busy = [], []

    def take():
        try:
            got.append(acquire(open_client(uri), "tiny", say=lambda _: None))
        except LeaseBusy:
            busy.append(1)

    threads = [threading.Thread(target=take) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 1 and len(busy) == 5
    got[0].release()
    acquire(open_client(uri), "tiny", say=lambda _: None).release()  # free again after release


def test_a_holder_that_could_not_renew_for_half_the_expiry_stops(tmp_path):
    from bench.store.client import open_client
    from bench.store.lease import LeaseLost, acquire

    lease = acquire(open_client(f"sqlite:///{tmp_path / 'mlflow.db'}"), "tiny", ttl=1.0, say=lambda _: None)
    lease._stop.set()  # the heartbeat stalls (a suspended process, an unreachable server)
    lease._thread.join()
    lease.check()
    time.sleep(0.6)
    with pytest.raises(LeaseLost, match="could not be renewed for"):
        lease.check()  # before anyone may break it (after 1 s)
    lease.release()


def test_a_holder_whose_lease_was_broken_stops(tmp_path):
    from bench.store.client import open_client
    from bench.store.lease import LeaseLost, _break, acquire

    client = open_client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    lease = acquire(client, "tiny", ttl=0.6, say=lambda _: None)
    lease.check()
    _break(client, lease.experiment_id, "expired")  # as another invocation does after the expiry
    time.sleep(0.5)
    with pytest.raises(LeaseLost, match="taken over by another invocation"):
        lease.check()
    lease.release()


# ---------------------------------------------------------------- damaged files


def _checkpoints(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "results" / "cache" / "checkpoints").glob("*.pt"))


def test_a_truncated_cached_checkpoint_is_fetched_again_from_the_artifact(tmp_path, capsys):
    suite = suite_file(tmp_path)
    assert bench(capsys, "run", str(suite), *sets(tmp_path))[0] == 0
    (ckpt,) = _checkpoints(tmp_path)
    whole = ckpt.read_bytes()
    ckpt.write_bytes(whole[:1000])
    rc, out = bench(capsys, "run", str(suite), *sets(tmp_path, "protocols=['linear', 'knn']"))
    assert rc == 0 and "failed" not in out
    assert ckpt.read_bytes() == whole  # the verified artifact copy replaced it
    finished_once(tmp_path, suite, "protocols=['linear', 'knn']")


def test_a_checkpoint_damaged_everywhere_is_pretrained_again(tmp_path, capsys):
    suite = suite_file(tmp_path)
    assert bench(capsys, "run", str(suite), *sets(tmp_path))[0] == 0
    (ckpt,) = _checkpoints(tmp_path)
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    (artifact,) = (tmp_path / "results" / "mlartifacts").rglob(ckpt.name)
    data = bytearray(artifact.read_bytes())
    data[5000] ^= 0xFF  # one flipped byte: the size matches, the digest does not
    artifact.write_bytes(bytes(data))
    rc, out = bench(capsys, "run", str(suite), *sets(tmp_path, "protocols=['linear', 'knn']"))
    assert rc == 0 and "pretraining again" in out and "SHA-256" in out
    finished_once(tmp_path, suite, "protocols=['linear', 'knn']")
    pre = [r for r in all_runs(tmp_path) if r.data.tags.get("kind") == "pretrain"]
    assert sorted(r.info.status for r in pre) == ["FAILED", "FINISHED"]
    assert "checkpoint unusable" in next(r for r in pre if r.info.status == "FAILED").data.tags["failure_reason"]


def test_an_unreadable_saved_training_state_restarts_the_cell(tmp_path, capsys):
    suite = suite_file(tmp_path)
    overrides = [s.removeprefix("--set=") for s in sets(tmp_path)]
    cell = next(c for c in Runner(load_suite(suite, overrides), suite).cells if c.kind == "pretrain")
    partial = tmp_path / "results" / "cache" / "checkpoints" / f"{cell.key}.partial.pt"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"PK\x03\x04 cut short")
    rc, out = bench(capsys, "run", str(suite), *sets(tmp_path))
    assert rc == 0 and "saved training state is unreadable" in out and "Traceback" not in out
    finished_once(tmp_path, suite)


def test_a_damaged_optuna_journal_is_one_line_and_a_cut_record_is_repaired(tmp_path, capsys):
    extra = ("tuning.enabled=true", "tuning.protocols=['linear']", "tuning.budgets=['full']", "tuning.trials=2")
    suite = suite_file(tmp_path)
    assert bench(capsys, "run", str(suite), *sets(tmp_path, *extra))[0] == 0
    journal = tmp_path / "results" / "optuna.journal"
    whole = journal.read_bytes()
    journal.write_bytes(whole[:-20])  # the last record cut by a kill
    rc, out = bench(capsys, "run", str(suite), *sets(tmp_path, *extra, "tuning.trials=3"))
    assert rc == 0 and "removed its last record" in out
    finished_once(tmp_path, suite, *extra, "tuning.trials=3")
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(b"".join([*lines[:2], b"{garbage\n", *lines[2:]]))
    rc, out = bench(capsys, "run", str(suite), *sets(tmp_path, *extra, "tuning.trials=4"))
    assert rc == 2
    one_error(out, str(journal), "the Optuna journal is damaged", "move it aside")
