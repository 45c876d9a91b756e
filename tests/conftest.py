import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "suites" / "smoke.toml"


@pytest.fixture
def store(tmp_path: Path) -> list[str]:
    """--set overrides that send a run's MLflow store, artifacts and caches into a temporary folder."""
    return [
        f"results_dir={str(tmp_path / 'results')!r}",
        f"tracking_uri={('sqlite:///' + str(tmp_path / 'mlflow.db'))!r}",
    ]


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
def smoke_store(tmp_path_factory) -> list[str]:
    """One finished run of the smoke suite, shared by every test that only reads it (never write to it): the
    --set overrides that point at its store."""
    from bench.__main__ import main

    folder = tmp_path_factory.mktemp("smoke_store")
    sets = store_overrides(folder)
    assert main(["run", str(SMOKE), *(f"--set={s}" for s in sets)]) == 0
    return sets
