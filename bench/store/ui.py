"""Addresses in the MLflow UI that open on a suite's results, and the experiment tags they rely on.

Read from MLflow 3.17's UI bundle (``mlflow/server/js/build/static/js/main.*.js``):

- The UI uses a hash router (``createHashRouter``), so every page is ``<base>/#/<route>``; the routes are
  ``/experiments/:experimentId/runs`` (runs table) and ``/experiments/:experimentId/runs/:runUuid`` (a run).
- ``#/experiments/<id>`` opens the GenAI overview (no runs) because the UI's *workflow type* defaults to
  ``genai``: it is read from the URL's ``workflowType`` parameter, else local storage ``mlflow.workflowType``,
  else ``genai``. The experiment kind comes from that workflow type, not from the experiment's
  ``mlflow.experimentKind`` tag (the feature switch that chooses this returns true in 3.17), so the tag alone does
  not help in 3.17; ``?workflowType=machine_learning`` does, and it also shows the model-training navigation.
  The tag is still set: earlier 3.x UIs chose the view from it, and it is harmless here.
- Even on the runs tab, nested child runs sit collapsed under their parent and metric columns are hidden
  (default columns: Source, Models, Dataset). A *shared view* fixes both without clicks: the UI loads view state
  from the experiment tag ``mlflow.sharedViewState.<key>`` (JSON) when the URL has ``viewStateShareKey=<key>``;
  it may hold the selected columns, the sort and a grouping. Ours shows ``test_acc``, sorts by it, best first, and
  groups runs by the ``cell_group`` tag (task/protocol/budget), so the seeds of one cell sit together under their
  mean.
  A missing key makes the UI report an error and fall back to the GenAI overview, so the key is only put into a
  URL of an experiment that carries the tag.

``python -m bench.store.ui urls [STORE]`` prints the runs URL of every experiment in a store;
``python -m bench.store.ui screenshot [STORE] EXPERIMENT [-o PNG]`` serves a store and screenshots a runs table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

DEFAULT_UI = "http://127.0.0.1:5000"
DEFAULT_STORE = "sqlite:///results/mlflow.db"
VIEW_KEY = "bench-results"
SHARED_VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"
SHARED_VIEW = {
    "selectedColumns": ["metrics.`test_acc`"],
    "orderByKey": "metrics.`test_acc`",
    "orderByAsc": False,
    "groupBy": {"aggregateFunction": "average", "groupByKeys": [{"mode": "tag", "groupByData": "cell_group"}]},
}
EXPERIMENT_TAGS = {
    "mlflow.experimentKind": "custom_model_development",
    SHARED_VIEW_TAG: json.dumps(SHARED_VIEW),
}
WORKFLOW = {"workflowType": "machine_learning"}


def runs_url(base_url: str, experiment_id: str, shared_view: bool = True) -> str:
    """The experiment's runs table; ``shared_view`` only for an experiment that carries ``EXPERIMENT_TAGS``."""
    query = WORKFLOW | ({"viewStateShareKey": VIEW_KEY} if shared_view else {})
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs?{urlencode(query)}"


def run_url(base_url: str, experiment_id: str, run_id: str) -> str:
    """One run's page: its description (a parent's results table), params, metrics, artifacts."""
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}?{urlencode(WORKFLOW)}"


def runs_hint(client, uri: str, name: str, experiment_id: str | None, command: str, base: str = DEFAULT_UI) -> str:
    """The line a run ends with: the address of its suite's runs, and the command that serves them (a tracking
    server serves its own UI)."""
    if experiment_id is None:
        return f"MLflow: no runs of {name!r} yet in {uri}"
    tags = client.get_experiment(experiment_id).tags
    shared = all(tags.get(k) == v for k, v in EXPERIMENT_TAGS.items())  # older stores lack the view
    remote = uri.startswith(("http://", "https://"))
    url = runs_url(uri if remote else base, experiment_id, shared_view=shared)
    return f"MLflow runs of {name!r}: {url}" + ("" if remote else f" (serve them: {command})")


def experiment_urls(store_uri: str, base_url: str = DEFAULT_UI) -> dict[str, str]:
    """Experiment name -> runs URL, for every experiment in a store that has runs."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store_uri)
    out = {}
    for exp in client.search_experiments():
        if client.search_runs([exp.experiment_id], max_results=1):
            out[exp.name] = runs_url(base_url, exp.experiment_id, SHARED_VIEW_TAG in exp.tags)
    return out


# ---------------------------------------------------------------------------------------- serving and browsing


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(store_uri: str, timeout_s: float = 120.0, log: Path | None = None) -> Iterator[str]:
    """``mlflow server`` for a store on 127.0.0.1 and a free port; yields its base URL once it answers, and stops
    it (its whole process group) on exit."""
    port = free_port()
    env = os.environ | {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store_uri]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    out = open(log, "w") if log else subprocess.DEVNULL  # closed below
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {proc.returncode}" + (f"; see {log}" if log else ""))
            if time.monotonic() > deadline:
                raise TimeoutError(f"mlflow server did not answer on {base} within {timeout_s:.0f} s")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{base}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            time.sleep(0.5)
        yield base
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)
        if log:
            out.close()


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if path := shutil.which(name):
            return path
    return None


def browse(url: str, screenshot: Path | None = None, budget_ms: int = 20000, size: str = "1600,1000") -> str:
    """The DOM of a page after headless Chromium ran its scripts for ``budget_ms`` of virtual time (network waits
    do not count); with ``screenshot``, also a PNG of the window. A fresh profile, so no saved UI state."""
    binary = find_chromium()
    if binary is None:
        raise FileNotFoundError("no chromium binary on PATH (Debian: apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="bench-chromium-") as profile:
        cmd = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
        cmd += ["--no-first-run", "--disable-background-networking", "--disable-component-update", "--hide-scrollbars"]
        cmd += [f"--user-data-dir={profile}", f"--window-size={size}"]
        cmd += [f"--virtual-time-budget={budget_ms}"] if budget_ms else []  # 0: as a plain headless screenshot
        if screenshot:
            cmd.append(f"--screenshot={Path(screenshot).resolve()}")
        else:
            cmd.append("--dump-dom")
        done = subprocess.run(
            [*cmd, url], capture_output=True, text=True, timeout=120 + budget_ms / 1000, start_new_session=True
        )
        if done.returncode != 0:
            raise RuntimeError(f"chromium failed ({done.returncode}): {done.stderr[-2000:]}")
        return done.stdout


def take_screenshot(store_uri: str, experiment: str, out: Path) -> Path:
    """Serve a store and save a PNG of one experiment's runs table."""
    from mlflow.tracking import MlflowClient

    exp = MlflowClient(store_uri).get_experiment_by_name(experiment)
    if exp is None:
        raise SystemExit(f"no experiment {experiment!r} in {store_uri}")
    out.parent.mkdir(parents=True, exist_ok=True)
    with serve(store_uri) as base:
        browse(runs_url(base, exp.experiment_id, SHARED_VIEW_TAG in exp.tags), screenshot=out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.store.ui", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    urls = sub.add_parser("urls", help="print the runs URL of every experiment in a store")
    urls.add_argument("store", nargs="?", default=DEFAULT_STORE)
    urls.add_argument("--base", default=DEFAULT_UI, help=f"the UI's address (default {DEFAULT_UI})")
    shot = sub.add_parser("screenshot", help="serve a store and save a PNG of an experiment's runs table")
    shot.add_argument("store", nargs="?", default=DEFAULT_STORE)
    shot.add_argument("experiment")
    shot.add_argument("-o", "--out", type=Path, default=Path("docs/mlflow_ui.png"))
    args = parser.parse_args(argv)
    if args.command == "urls":
        found = experiment_urls(args.store, args.base)
        for name, url in found.items():
            print(f"{name}: {url}")
        if not found:
            print(f"no runs in {args.store}")
        return 0
    print(take_screenshot(args.store, args.experiment, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
