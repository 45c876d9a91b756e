"""The tracking service of a cluster: PostgreSQL (Debian's ``postgresql`` package) and an MLflow tracking server on
it that also serves the artifacts, so every worker reads and writes runs and checkpoints over HTTP and no shared
file system is needed. Optuna's studies go in a second database of the same PostgreSQL.

``bench server`` (``nox -s server``) starts both in the foreground and prints what to point the suite at;
``Services`` is the same as a context manager, for tests. PostgreSQL keeps its data in a folder under
``results/`` and runs as an unprivileged user (``postgres``, else ``nobody``, when started as root); it accepts
password logins only over TCP (the password is generated once and kept beside the data, mode 0600) and, by
default, listens on 127.0.0.1 alone. The MLflow server has no login of its own: on another address than
loopback, put it on a network only the cluster can reach.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.errors import ServiceError

DATABASES = ("mlflow", "optuna")
USER = "bench"  # the PostgreSQL role owning both databases


def pg_bin(name: str) -> str:
    """A PostgreSQL program: on PATH, else in Debian's versioned folder (the newest)."""
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), key=lambda p: int(p.parts[-3]))
    if versions:
        return str(versions[-1])
    raise ServiceError(f"PostgreSQL is not installed (no {name!r}); install it with: apt-get install postgresql")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _service_user() -> str | None:
    """PostgreSQL refuses to run as root: then it runs as ``postgres`` (Debian's), else ``nobody``."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise ServiceError("running as root and no unprivileged user (postgres, nobody) exists to run PostgreSQL as")


def _wait_until(ready, what: str, timeout_s: float, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.25)
    tail = log.read_text(errors="replace")[-2000:] if log.is_file() else ""
    raise RuntimeError(f"{what} did not start within {timeout_s:.0f} s (log {log}):\n{tail}")


@dataclass
class Postgres:
    folder: Path
    host: str = "127.0.0.1"
    port: int = 5433
    max_connections: int = 200  # every worker process holds one for Optuna; the MLflow server a pool
    durable: bool = True  # False: no fsync (tests)

    @property
    def data(self) -> Path:
        return self.folder / "pgdata"

    @property
    def log(self) -> Path:
        return self.folder / "postgres.log"

    @property
    def socket_dir(self) -> Path:
        return self.folder / "socket"

    def url(self, database: str) -> str:
        password = (self.folder / "password").read_text().strip()
        return f"postgresql+psycopg://{USER}:{password}@{self.host}:{self.port}/{database}"

    def __post_init__(self) -> None:
        self.folder = Path(self.folder).resolve()  # PostgreSQL resolves relative paths from its data folder
        self.started = False

    def _as_user(self, cmd: list[str], **kw) -> subprocess.CompletedProcess:
        user = _service_user()
        full = ["runuser", "-u", user, "--", *cmd] if user else cmd
        env = dict(os.environ, LC_MESSAGES="C")  # messages matched below are the English ones
        return subprocess.run(full, capture_output=True, text=True, env=env, **kw)

    def _check(self, done: subprocess.CompletedProcess, what: str) -> None:
        if done.returncode != 0:
            log = self.log.read_text(errors="replace").strip()[-1500:] if self.log.is_file() else ""
            said = (done.stderr or done.stdout).strip()[-1500:]
            raise RuntimeError(f"{what} failed ({done.returncode}): {said}" + (f"\n{self.log}:\n{log}" if log else ""))

    def initialise(self) -> None:
        """initdb, once: a cluster owned by role ``bench``, password logins over TCP, trust on its own socket."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        self.socket_dir.chmod(0o700)  # its socket lets the owner in without a password
        if len(str(self.socket_dir)) > 90:
            raise ServiceError(
                f"{self.folder}: too deep for PostgreSQL's socket (over 90 characters); use --dir with a shorter path"
            )
        password = self.folder / "password"
        if not password.is_file():
            with os.fdopen(os.open(password, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
                f.write(secrets.token_urlsafe(24) + "\n")
        user = _service_user()
        if user:
            record = pwd.getpwnam(user)
            for path in (self.folder, self.socket_dir, password):
                os.chown(path, record.pw_uid, record.pw_gid)
        password.chmod(0o600)
        if user and self._as_user(["test", "-x", str(self.folder)]).returncode != 0:
            raise ServiceError(
                f"{self.folder}: PostgreSQL runs as {user!r}, who cannot reach this folder (a parent folder is "
                "private); choose a folder under one it can enter, e.g. --dir /srv/bench"
            )
        if (self.data / "PG_VERSION").is_file():
            return
        cmd = [pg_bin("initdb"), "-D", str(self.data), "-U", USER, "-E", "UTF8", "--locale=C"]
        cmd += ["--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={password}"]
        self._check(self._as_user(cmd + ([] if self.durable else ["--no-sync"])), "initdb")
        if self.host not in ("127.0.0.1", "localhost", "::1"):  # initdb allows TCP logins from loopback only
            with open(self.data / "pg_hba.conf", "a") as f:
                f.write("host all all 0.0.0.0/0 scram-sha-256\nhost all all ::/0 scram-sha-256\n")

    def start(self, timeout_s: float = 60) -> None:
        self.initialise()
        options = f"-c listen_addresses={self.host} -p {self.port} -c unix_socket_directories={self.socket_dir}"
        options += f" -c max_connections={self.max_connections}"
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        cmd = [pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options, "-w"]
        self._check(self._as_user([*cmd, "-t", str(int(timeout_s)), "start"]), "pg_ctl start")
        self.started = True
        for name in DATABASES:
            made = self._as_user(
                [pg_bin("createdb"), "-h", str(self.socket_dir), "-p", str(self.port), "-U", USER, name]
            )
            if made.returncode != 0 and "already exists" not in made.stderr:
                self._check(made, f"createdb {name}")

    def stop(self) -> None:
        if self.started:  # never a server another invocation started on the same folder
            self._as_user([pg_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"])


@dataclass
class MlflowServer:
    backend_uri: str
    artifacts: Path
    log: Path
    host: str = "127.0.0.1"
    port: int = 5000
    workers: int = 2
    process: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _healthy(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"the MLflow server exited ({self.process.returncode}); log {self.log}")
        try:
            with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def start(self, timeout_s: float = 180) -> None:
        self.artifacts.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "mlflow", "server", "--serve-artifacts"]
        cmd += ["--artifacts-destination", str(self.artifacts.resolve())]
        cmd += ["--host", self.host, "--port", str(self.port), "--workers", str(self.workers)]
        if self.host not in ("127.0.0.1", "localhost", "::1"):  # workers may name the machine any way
            cmd += ["--allowed-hosts", "*"]
        env = dict(os.environ, MLFLOW_BACKEND_STORE_URI=self.backend_uri)  # its password stays off `ps`
        with open(self.log, "ab") as out:  # its own session: a Ctrl-C reaches bench, which stops it in order
            self.process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        _wait_until(self._healthy, "the MLflow server", timeout_s, self.log)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, 15)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait()


@dataclass
class Services:
    """PostgreSQL and the MLflow server on it, started in that order and stopped in reverse."""

    folder: Path
    host: str = "127.0.0.1"
    pg_port: int = 5433
    port: int = 5000
    workers: int = 2
    durable: bool = True

    def __post_init__(self) -> None:
        self.folder = Path(self.folder).resolve()
        self.postgres = Postgres(self.folder, self.host, self.pg_port, durable=self.durable)
        self.mlflow: MlflowServer | None = None

    @property
    def tracking_uri(self) -> str:
        return self.mlflow.uri if self.mlflow else ""

    @property
    def optuna_url(self) -> str:
        return self.postgres.url("optuna")

    @contextlib.contextmanager
    def running(self) -> Iterator[Services]:
        try:
            self.postgres.start()
            self.mlflow = MlflowServer(
                self.postgres.url("mlflow"),
                self.folder / "artifacts",
                self.folder / "mlflow.log",
                self.host,
                self.port,
                self.workers,
            )
            self.mlflow.start()
            yield self
        finally:
            if self.mlflow is not None:
                self.mlflow.stop()
            self.postgres.stop()

    def describe(self) -> str:
        return "\n".join(
            [
                f"PostgreSQL on {self.host}:{self.pg_port}, data in {self.postgres.data} (log {self.postgres.log})",
                f"MLflow server on {self.tracking_uri}, artifacts in {self.folder / 'artifacts'}",
                "point bench at them (on the driver; workers get both from it):",
                f"  export MLFLOW_TRACKING_URI={self.tracking_uri}",
                f"  bench run SUITE --set tuning.storage={self.optuna_url}",
            ]
        )
