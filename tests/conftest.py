import contextlib
import io
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Reports in tests draw PNG figures only (subprocesses inherit it); the tests about PDFs ask for them
os.environ.setdefault("BENCH_FIGURE_FORMATS", "png")
SMOKE = ROOT / "suites" / "smoke.toml"


@pytest.fixture
def store(tmp_path: Path) -> list[str]:
    """--set overrides that send a run's MLflow store, artifacts and caches into a temporary folder."""
    return store_overrides(tmp_path)


@pytest.fixture
def pdf_figures(monkeypatch):
    """Reports of this test draw their figures as PNG and PDF, as outside the tests."""
    monkeypatch.setenv("BENCH_FIGURE_FORMATS", "png,pdf")


def cifar_root() -> Path | None:
    root = os.environ.get("BENCH_DATA")
    if root and (Path(root) / "cifar10" / "train").is_dir():
        return Path(root)
    return None


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    """Console output is read by the tests: wide enough that rich does not wrap a line."""
    monkeypatch.setenv("COLUMNS", "250")


def pytest_collection_modifyitems(config, items):
    """Tests marked ``netns`` need PostgreSQL, an MLflow server and Ray on loopback only: they are collected only
    inside the network namespace that ``test_cluster.py`` starts (BENCH_NETNS=1), never beside other tests."""
    if os.environ.get("BENCH_NETNS") == "1":
        return
    kept = [item for item in items if item.get_closest_marker("netns") is None]
    if len(kept) != len(items):
        config.hook.pytest_deselected(items=[item for item in items if item not in kept])
        items[:] = kept


def store_overrides(folder: Path) -> list[str]:
    return [
        f"results_dir={str(folder / 'results')!r}",
        f"tracking_uri={('sqlite:///' + str(folder / 'mlflow.db'))!r}",
    ]


@pytest.fixture(scope="session")
def smoke_store(tmp_path_factory) -> SimpleNamespace:
    """One finished run of the smoke suite, shared by every test that only reads it (no test may add runs to
    it): ``sets`` (the --set overrides that point at its store), ``folder`` (holding mlflow.db and results/),
    ``uri`` (its tracking URI) and ``out`` (what the run printed)."""
    from bench.cli import main

    folder = tmp_path_factory.mktemp("smoke_store")
    sets = store_overrides(folder)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["run", str(SMOKE), *(f"--set={s}" for s in sets)]) == 0
    return SimpleNamespace(sets=sets, folder=folder, uri=f"sqlite:///{folder / 'mlflow.db'}", out=printed.getvalue())
