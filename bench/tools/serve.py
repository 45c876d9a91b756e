"""``bench ui [SUITE]``: the MLflow UI on the store the suite ran into, and beside it the suite's results page
(``bench.report.page``); both addresses are printed first. Needs MLflow, not PyTorch."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from bench.errors import ConfigError
from bench.report.page import render_page
from bench.store.client import sqlite_path
from bench.store.ui import experiment_urls


@contextlib.contextmanager
def results_page(page: Callable[[], str], host: str, port: int) -> Iterator[str]:
    """Serve ``page()`` (rendered at each request, so it follows the report) at ``http://host:port/``."""

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server name
            found = self.path.split("?", 1)[0] in ("/", "/index.html")
            body = (page() if found else "not found").encode()
            self.send_response(200 if found else 404)
            self.send_header("Content-Type", "text/html; charset=utf-8" if found else "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:  # one line per request would bury the addresses
            pass

    try:
        server = ThreadingHTTPServer((host, port), Page)
    except OSError as e:
        where = f"{host}:{port}"
        raise ConfigError(f"cannot serve the results page on {where} ({e.strerror}); choose another --port") from None
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def open_ui(name: str | None, uri: str, results_dir: str, host: str = "127.0.0.1", port: int = 5000, say=print) -> int:
    """Print where suite ``name``'s results page and runs are (every suite's runs, without a name), then serve
    the MLflow UI on ``port`` and the page on ``port + 1`` until Ctrl-C. A tracking server serves its own UI."""
    db, remote = sqlite_path(uri), uri.startswith(("http://", "https://"))
    if db is not None and not db.is_file():
        if name is None:
            raise ConfigError(f"no MLflow store at {db}; name the suite whose store to serve: bench ui SUITE")
        raise ConfigError(f"no MLflow store at {db}: suite {name!r} has not run into it yet (bench run writes it)")
    base = uri.rstrip("/") if remote else f"http://{host}:{port}"
    found = experiment_urls(uri, base)
    with contextlib.ExitStack() as stack:
        if name is None:
            for suite, url in found.items():
                say(f"MLflow runs of {suite!r}: {url}")
        else:
            report = Path(results_dir) / name
            render = lambda: render_page(name, report, found.get(name), uri)  # noqa: E731
            page = stack.enter_context(results_page(render, host, port + 1))
            say(f"results of {name!r}: {page} (the report's table)")
            say(f"MLflow runs of {name!r}: {found[name]}" if name in found else f"no runs of {name!r} yet in {uri}")
        if remote and name is None:
            return 0
        if remote:
            say("Ctrl-C stops the results page")
            return _wait(None)
        say(f"serving {uri} on {base} (Ctrl-C stops it)")
        env = os.environ | {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
        cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port)]
        return _wait(subprocess.Popen(cmd, env=env))


def _wait(proc: subprocess.Popen | None) -> int:
    try:
        if proc is None:
            threading.Event().wait()
        return proc.wait() if proc else 0
    except KeyboardInterrupt:  # the server got the same Ctrl-C
        if proc is not None:
            proc.wait(timeout=30)
        return 0
