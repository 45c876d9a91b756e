"""Sessions: `nox -s tests`, `nox -s benchmark [-- SUITE [bench run options]]`, `nox -s ui`, `nox -s lint`."""

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite (offline; uses synthetic data, plus the CIFAR-10 copy under $BENCH_DATA if present)."""
    session.install("-e", ".[dev]")
    session.run("pytest", "-q", *session.posargs)


@nox.session
def benchmark(session: nox.Session) -> None:
    """Run a suite (default suites/quick.toml) into the MLflow store under results/."""
    session.install("-e", ".")
    args = session.posargs or ["suites/quick.toml"]
    session.run("python", "-m", "bench", "run", *args)


@nox.session
def report(session: nox.Session) -> None:
    """Write results/<suite>/ (tables, statistics, figures) from the MLflow store: -- SUITE (default quick)."""
    session.install("-e", ".")
    session.run("python", "-m", "bench", "report", *(session.posargs or ["suites/quick.toml"]))


@nox.session
def perf(session: nox.Session) -> None:
    """Throughput of the on-device path against lightly's reference pipeline; JSON under results/perf/."""
    session.install("-e", ".")
    session.run("python", "-m", "bench", "perf", *session.posargs)


@nox.session
def parity(session: nox.Session) -> None:
    """A suite on both data paths, test accuracy compared by seed: -- SUITE (default suites/parity.toml)."""
    session.install("-e", ".")
    session.run("python", "-m", "bench", "parity", *(session.posargs or ["suites/parity.toml"]))


@nox.session
def ui(session: nox.Session) -> None:
    """The MLflow UI for the default store, on http://127.0.0.1:5000 (pass -- --port N to change)."""
    session.install("-e", ".")
    session.run(
        "mlflow",
        "ui",
        "--backend-store-uri",
        "sqlite:///results/mlflow.db",
        "--host",
        "127.0.0.1",
        *session.posargs,
    )


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.5")
    session.run("ruff", "check", "bench", "tests", "noxfile.py")
    session.run("ruff", "format", "--check", "bench", "tests", "noxfile.py")
