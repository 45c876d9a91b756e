"""Sessions: `nox -s tests` (everything, what CI runs), `nox -s fast` (the inner loop: unit, contract and golden
tests, no full `bench run`), `nox -s golden`, `nox -s benchmark [-- SUITE [bench run options]]`, `nox -s ui`,
`nox -s screenshot`, `nox -s server`, `nox -s lint`.

Every session that runs bench shares one environment, `.nox/bench` (PyTorch and the rest installed once, each
session adding its extras); `ui` and `screenshot` only read a store and get a light one, `.nox/ui`, without
PyTorch. `BENCH_TORCH_INDEX=https://download.pytorch.org/whl/cpu` installs PyTorch's CPU build first (about a
tenth of the CUDA build's size) on a machine without a GPU."""

import os
import sys
from pathlib import Path

import nox

SHARED = Path(".nox/bench")
LIGHT_ENV = Path(".nox/ui")
LIGHT = ["mlflow>=2.14", "pydantic>=2.6", "rich>=13", "markdown>=3.4"]  # what `bench ui` imports

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True


def venv(session: nox.Session, where: Path) -> str:
    """The python of the virtualenv at ``where``, created when missing."""
    python = where / "bin" / "python"
    if not python.exists():
        session.run_install(sys.executable, "-m", "venv", str(where), external=True)
    return str(python)


def bench_env(session: nox.Session, extras: str = "") -> str:
    """The shared environment's python, with bench and ``extras`` installed (pip's progress shown: a first
    install takes minutes)."""
    python = venv(session, SHARED)
    index = os.environ.get("BENCH_TORCH_INDEX")
    if index:
        session.run_install(python, "-m", "pip", "install", "torch", "torchvision", "--index-url", index, external=True)
    session.run_install(python, "-m", "pip", "install", "-e", f".[{extras}]" if extras else ".", external=True)
    return python


def light_env(session: nox.Session) -> str:
    """bench without its numeric dependencies, for the sessions that only read a store."""
    python = venv(session, LIGHT_ENV)
    session.run_install(python, "-m", "pip", "install", *LIGHT, external=True)
    session.run_install(python, "-m", "pip", "install", "--no-deps", "-e", ".", external=True)
    return python


@nox.session(venv_backend="none")
def tests(session: nox.Session) -> None:
    """The test suite (offline; uses synthetic data, plus the CIFAR-10 copy under $BENCH_DATA if present). The
    cluster tests start PostgreSQL, an MLflow server and Ray on loopback (needs root and Debian's postgresql)."""
    python = bench_env(session, "dev,cluster")
    session.run(python, "-m", "pytest", "-q", "--durations=25", *session.posargs, external=True)


@nox.session(venv_backend="none")
def fast(session: nox.Session) -> None:
    """The fast tier (at most about 2 minutes on 2 cores): unit and contract tests, the identity lock and the
    golden check; no end-to-end run, no services. Extra arguments go to pytest."""
    python = bench_env(session, "dev")
    session.run(python, "-m", "pytest", "-q", "-m", "not slow", *session.posargs, external=True)


@nox.session(venv_backend="none")
def golden(session: nox.Session) -> None:
    """Tiny deterministic runs of every task, protocol and pipeline part, compared bitwise with
    bench/run/golden.json; then the identity lock. After a refactor: `python -m bench identity --update`."""
    python = bench_env(session, "vit")
    session.run(python, "-m", "bench", "golden", *session.posargs, external=True)
    session.run(python, "-m", "bench", "identity", external=True)


@nox.session(venv_backend="none")
def benchmark(session: nox.Session) -> None:
    """Run a suite (default suites/quick.toml) into its results_dir (runs/ for the suites in suites/)."""
    python = bench_env(session, "vit")  # the ViT suites need timm
    args = session.posargs or ["suites/quick.toml"]
    session.run(python, "-m", "bench", "run", *args, external=True)


@nox.session(venv_backend="none")
def report(session: nox.Session) -> None:
    """Write <results_dir>/<suite>/ (tables, statistics, figures) from the MLflow store: -- SUITE (default quick)."""
    python = bench_env(session)
    session.run(python, "-m", "bench", "report", *(session.posargs or ["suites/quick.toml"]), external=True)


@nox.session(venv_backend="none")
def perf(session: nox.Session) -> None:
    """Throughput of the on-device path against lightly's reference pipeline; JSON under results/perf/."""
    python = bench_env(session)
    session.run(python, "-m", "bench", "perf", *session.posargs, external=True)


@nox.session(venv_backend="none")
def scale(session: nox.Session) -> None:
    """How the cost grows with the data (folders of 10k to 1M images) and the store (100 to 3,000 cells);
    results/scale/. About an hour on 2 cores; -- --quick checks the script in a few minutes."""
    python = bench_env(session)
    session.run(python, "-m", "bench.tools.scale", *session.posargs, external=True)


@nox.session(venv_backend="none")
def parity(session: nox.Session) -> None:
    """A suite on both data paths, test accuracy compared by seed: -- SUITE (default suites/parity.toml)."""
    python = bench_env(session)
    session.run(python, "-m", "bench", "parity", *(session.posargs or ["suites/parity.toml"]), external=True)


@nox.session(venv_backend="none")
def ui(session: nox.Session) -> None:
    """The MLflow UI on the store a suite ran into, and its results page: -- [SUITE] [--port N] (default quick,
    port 5000; the page on the next port). Prints both addresses first. A light environment, no PyTorch."""
    python = light_env(session)
    suite = [] if session.posargs[:1] and not session.posargs[0].startswith("-") else ["quick"]
    session.run(python, "-m", "bench", "ui", *suite, *session.posargs, external=True)


@nox.session(venv_backend="none")
def screenshot(session: nox.Session) -> None:
    """A PNG of a suite's runs table in the MLflow UI (needs chromium): -- [STORE_URI] EXPERIMENT [-o PNG]
    (default store sqlite:///runs/mlflow.db, experiment quick, PNG docs/mlflow_ui.png)."""
    python = light_env(session)
    args = session.posargs or ["sqlite:///runs/mlflow.db", "quick"]
    session.run(python, "-m", "bench.store.ui", "screenshot", *args, external=True)


@nox.session(venv_backend="none")
def server(session: nox.Session) -> None:
    """PostgreSQL and an MLflow server on it (artifacts served too), for suites run on a Ray cluster:
    -- [--dir results/server] [--host 127.0.0.1] [--port 5000] [--pg-port 5432]. Prints the URIs to use."""
    python = bench_env(session, "cluster")
    session.run(python, "-m", "bench", "server", *session.posargs, external=True)


@nox.session(venv_backend="none")
def docs(session: nox.Session) -> None:
    """The manual (docs/, mkdocs-material) built with --strict into site/: a broken link, a missing figure or a
    configuration reference that cannot be generated from the schema fails the build."""
    python = bench_env(session, "docs")
    session.run(python, "-m", "mkdocs", "build", "--strict", "-d", "site", external=True)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.5")
    session.run("ruff", "check", "bench", "tests", "noxfile.py")
    session.run("ruff", "format", "--check", "bench", "tests", "noxfile.py")
