"""Sessions: `nox -s tests` (everything, what CI runs), `nox -s fast` (the inner loop: unit, contract and golden
tests, no full `bench run`), `nox -s golden`, `nox -s benchmark [-- SUITE [bench run options]]`, `nox -s ui`,
`nox -s screenshot`, `nox -s server`, `nox -s lint`."""

from pathlib import Path

import nox

STORE = "results/mlflow.db"
STORE_URI = f"sqlite:///{STORE}"

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite (offline; uses synthetic data, plus the CIFAR-10 copy under $BENCH_DATA if present). The
    cluster tests start PostgreSQL, an MLflow server and Ray on loopback (needs root and Debian's postgresql)."""
    session.install("-e", ".[dev,cluster]")
    session.run("pytest", "-q", "--durations=25", *session.posargs)


@nox.session
def fast(session: nox.Session) -> None:
    """The fast tier (at most about 2 minutes on 2 cores): unit and contract tests, the identity lock and the
    golden check; no end-to-end run, no services. Extra arguments go to pytest."""
    session.install("-e", ".[dev]")
    session.run("pytest", "-q", "-m", "not slow", *session.posargs)


@nox.session
def golden(session: nox.Session) -> None:
    """Tiny deterministic runs of every task, protocol and pipeline part, compared bitwise with
    bench/run/golden.json; then the identity lock. After a refactor: `python -m bench identity --update`."""
    session.install("-e", ".[vit]")
    session.run("python", "-m", "bench", "golden", *session.posargs)
    session.run("python", "-m", "bench", "identity")


@nox.session
def benchmark(session: nox.Session) -> None:
    """Run a suite (default suites/quick.toml) into the MLflow store under results/."""
    session.install("-e", ".[vit]")  # the ViT suites need timm
    args = session.posargs or ["suites/quick.toml"]
    session.run("python", "-m", "bench", "run", *args)


@nox.session
def report(session: nox.Session) -> None:
    """Write <results_dir>/<suite>/ (tables, statistics, figures) from the MLflow store: -- SUITE (default quick)."""
    session.install("-e", ".")
    session.run("python", "-m", "bench", "report", *(session.posargs or ["suites/quick.toml"]))


@nox.session
def perf(session: nox.Session) -> None:
    """Throughput of the on-device path against lightly's reference pipeline; JSON under results/perf/."""
    session.install("-e", ".")
    session.run("python", "-m", "bench", "perf", *session.posargs)


@nox.session
def scale(session: nox.Session) -> None:
    """How the cost grows with the data (folders of 10k to 1M images) and the store (100 to 3,000 cells);
    results/scale/. About an hour on 2 cores; -- --quick checks the script in a few minutes."""
    session.install("-e", ".")
    session.run("python", "-m", "bench.tools.scale", *session.posargs)


@nox.session
def parity(session: nox.Session) -> None:
    """A suite on both data paths, test accuracy compared by seed: -- SUITE (default suites/parity.toml)."""
    session.install("-e", ".")
    session.run("python", "-m", "bench", "parity", *(session.posargs or ["suites/parity.toml"]))


@nox.session
def ui(session: nox.Session) -> None:
    """The MLflow UI for the default store, on http://127.0.0.1:5000 (pass -- --port N to change); prints the
    address of each suite's runs table first (a plain experiment address opens MLflow's GenAI overview)."""
    if not Path(STORE).is_file():
        session.error(f"no MLflow store at {STORE}; write one with `nox -s benchmark` (python -m bench run SUITE)")
    session.install("-e", ".")
    args, port = session.posargs, "5000"
    for i, arg in enumerate(args):
        if arg in ("--port", "-p") and i + 1 < len(args):
            port = args[i + 1]
        elif arg.startswith("--port="):
            port = arg.split("=", 1)[1]
    session.run("python", "-m", "bench.store.ui", "urls", STORE_URI, "--base", f"http://127.0.0.1:{port}")
    session.run("mlflow", "ui", "--backend-store-uri", STORE_URI, "--host", "127.0.0.1", *session.posargs)


@nox.session
def screenshot(session: nox.Session) -> None:
    """A PNG of a suite's runs table in the MLflow UI (needs chromium): -- [STORE_URI] EXPERIMENT [-o PNG]
    (default store sqlite:///results/mlflow.db, default PNG docs/mlflow_ui.png)."""
    session.install("-e", ".")
    session.run("python", "-m", "bench.store.ui", "screenshot", *(session.posargs or [STORE_URI, "quick"]))


@nox.session
def server(session: nox.Session) -> None:
    """PostgreSQL and an MLflow server on it (artifacts served too), for suites run on a Ray cluster:
    -- [--dir results/server] [--host 127.0.0.1] [--port 5000] [--pg-port 5432]. Prints the URIs to use."""
    session.install("-e", ".[cluster]")
    session.run("python", "-m", "bench", "server", *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """The manual (docs/, mkdocs-material) built with --strict into site/: a broken link, a missing figure or a
    configuration reference that cannot be generated from the schema fails the build."""
    session.install("-e", ".[docs]")
    session.run("mkdocs", "build", "--strict", "-d", "site")


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.5")
    session.run("ruff", "check", "bench", "tests", "noxfile.py")
    session.run("ruff", "format", "--check", "bench", "tests", "noxfile.py")
