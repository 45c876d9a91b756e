"""Never reuse a stale result: cell keys hold the code's and the data's identity; the dry run says what changed."""

import pytest

import bench.identity as identity
from bench.__main__ import main
from bench.config import load_suite
from bench.plan import build_plan
from bench.tasks import TASKS

from .conftest import SMOKE

DATA = "d" * 16
ORIGINAL = identity.module_digest
JOINT = [n for n, t in TASKS.items() if "bench.views" in identity.closure(t.__module__)]


def test_every_module_is_hashed_or_declared_unable_to_change_a_result():
    reachable = set(identity.closure(*identity.ROOTS, *(t.__module__ for t in TASKS.values())))
    unclassified = set(identity.all_modules()) - reachable - set(identity.PRESENTATION)
    assert not unclassified, f"add these to a cell's imports or to identity.PRESENTATION: {unclassified}"
    assert {"bench.runner", "bench.evaluate", "bench.pretrain", "bench.augment", "bench.data"} <= reachable


def edited(monkeypatch, module: str) -> None:
    """Pretend the source of ``module`` changed."""
    monkeypatch.setattr(identity, "module_digest", lambda m: "edited" if m == module else ORIGINAL(m))


def keys(suite, data=DATA) -> dict[tuple, str]:
    return {(c.kind, c.task, c.seed, c.budget, c.protocol): c.key for c in build_plan(suite, data)}


def test_a_code_change_renews_exactly_the_cells_whose_code_changed(monkeypatch):
    suite = load_suite(SMOKE, ["tasks.simclr={}", "tasks.moco={}"])
    before = keys(suite)
    edited(monkeypatch, "bench.tasks.moco")
    after = keys(suite)
    changed = {k[1] for k in before if before[k] != after[k]}
    assert changed == {"moco"}
    edited(monkeypatch, "bench.views")  # shared by the joint-embedding tasks only
    after = keys(suite)
    assert {k[1] for k in before if before[k] != after[k]} == {"simclr", "moco"} and {"simclr", "moco"} <= set(JOINT)
    edited(monkeypatch, "bench.evaluate")  # every cell goes through the protocols
    after = keys(suite)
    assert all(before[k] != after[k] for k in before)


def test_the_data_identity_is_in_every_key():
    suite = load_suite(SMOKE)
    a, b = keys(suite, "a" * 16), keys(suite, "b" * 16)
    assert all(a[k] != b[k] for k in a)
    assert [c.config_key for c in build_plan(suite, "a" * 16)] == [c.config_key for c in build_plan(suite, "b" * 16)]


TINY = """
name = "tiny"
seeds = [0]
budgets = [32]
protocols = ["linear"]
device = "cpu"
[dataset]
name = "synthetic"
synthetic = { classes = 4, train = 128, test = 64, size = 16 }
[encoder]
name = "small_cnn"
[pretrain]
epochs = 1
batch_size = 32
[linear]
l2_grid = [1e-2]
max_iter = 10
[tasks.rotation]
head_hidden = 16
[tasks.random]
"""


@pytest.mark.slow
def test_dry_run_names_the_stale_cells_and_what_changed(tmp_path, store, monkeypatch, capsys):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    sets = [f"--set={s}" for s in store]
    assert main(["run", str(path), *sets]) == 0
    capsys.readouterr()
    assert main(["run", str(path), *sets, "--dry-run"]) == 0
    assert "3 already done, 0 to run" in capsys.readouterr().out
    edited(monkeypatch, "bench.tasks.rotation")
    assert main(["run", str(path), *sets, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "1 already done, 2 to run" in out  # random's cell is still current
    assert out.count("stale: the code changed (tasks/rotation.py)") == 2
    assert "2 cell(s) have results from other code or data; they will rerun" in out
