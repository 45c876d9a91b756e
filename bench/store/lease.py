"""One writer per suite: a lease kept in the tracking store itself, so it holds between processes and between
machines (a sqlite file, or an MLflow server on PostgreSQL), with a heartbeat and an expiry.

The lease of suite ``s`` is an MLflow experiment named ``lease:s``. Taking it is creating that experiment: the
store's unique constraint on experiment names lets exactly one of any number of concurrent creators succeed,
whatever the backend. Its tags name the holder (host, process, start time) and carry a heartbeat, renewed by a
background thread. A lease is free again when its holder releases it, when the holder's process is gone (same
host: checked at once), or when its heartbeat is older than the expiry (another host: the holder stopped
renewing). Whoever finds it so breaks it by experiment id -- renamed, then deleted -- and creates a new one; two
breakers at once still end with one creator, and a holder whose lease was broken notices at its next heartbeat
and stops before writing another run. Operating on the id, never the name, means a late breaker can only ever
remove the lease it saw.

Clocks of the machines sharing a store must agree to well within the expiry (NTP does).
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from bench.errors import LeaseBusy, LeaseLost, StoreError
from bench.store.client import explain

TTL_S = 60.0  # a silent holder is gone after this long (BENCH_LEASE_TTL_S overrides)
POLL_S = 2.0  # how often a waiting invocation looks again
FREED = ("RESOURCE_DOES_NOT_EXIST", "INVALID_STATE")  # someone else released or broke it first


def ttl_s() -> float:
    text = os.environ.get("BENCH_LEASE_TTL_S", "")
    try:
        ttl = float(text) if text else TTL_S
    except ValueError:
        ttl = -1.0
    if not ttl > 0:
        raise StoreError(f"$BENCH_LEASE_TTL_S = {text!r}: expected a number of seconds above 0, e.g. 60")
    return ttl


def lease_name(suite: str) -> str:
    return f"lease:{suite}"  # ':' is not allowed in suite names, so no suite's experiment can clash


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def machine_id() -> str:
    """This boot of this kernel and this PID namespace: processes with the same value see each other's pids
    (two containers with one hostname do not)."""
    try:
        namespace = str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        namespace = ""
    return f"{_read('/proc/sys/kernel/random/boot_id')}/{namespace}"


def process_start(pid: int) -> str:
    """The start time of process ``pid`` in clock ticks since boot ('' when unknown): a pid and its start time
    name one process, even after the pid is reused."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def alive_here(pid: int, started: str) -> bool:
    if started and process_start(pid):
        return process_start(pid) == started
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class Holder:
    host: str
    machine: str
    pid: int
    started: str
    token: str
    since: float
    ttl: float

    @classmethod
    def me(cls, ttl: float) -> Holder:
        pid = os.getpid()
        return cls(socket.gethostname(), machine_id(), pid, process_start(pid), uuid.uuid4().hex, time.time(), ttl)

    def tags(self) -> dict[str, str]:
        return {
            "holder_host": self.host,
            "holder_machine": self.machine,
            "holder_pid": str(self.pid),
            "holder_started": self.started,
            "holder_token": self.token,
            "holder_since": f"{self.since:.3f}",
            "holder_ttl_s": f"{self.ttl:g}",
            "heartbeat": f"{self.since:.3f}",
        }

    @classmethod
    def of(cls, tags: dict[str, str]) -> Holder:
        def number(key: str) -> float:
            try:
                return float(tags.get(key, 0) or 0)
            except ValueError:
                return 0.0

        return cls(
            tags.get("holder_host", "?"),
            tags.get("holder_machine", ""),
            int(number("holder_pid")),
            tags.get("holder_started", ""),
            tags.get("holder_token", ""),
            number("holder_since"),
            number("holder_ttl_s"),
        )

    def describe(self) -> str:
        return f"process {self.pid} on {self.host} since {time.strftime('%H:%M:%S', time.localtime(self.since))}"


def describe_saver(owner: dict[str, str] | None) -> str:
    """Who saved a training state (``{"suite": ..., **Holder.tags()}``), and whether that process still runs."""
    if not owner:
        return "an earlier run"
    saver = Holder.of(owner)
    here = saver.host == socket.gethostname() and saver.machine == machine_id() and saver.pid != os.getpid()
    running = here and alive_here(saver.pid, saver.started)
    return f"suite {owner.get('suite', '?')!r} ({f'still running: {saver.describe()}' if running else 'interrupted'})"


def heartbeat_age(tags: dict[str, str], now: float | None = None) -> float:
    try:
        return (now or time.time()) - float(tags.get("heartbeat", 0) or 0)
    except ValueError:
        return float("inf")


def why_gone(tags: dict[str, str], ttl: float, now: float | None = None) -> str | None:
    """Why the lease with ``tags`` no longer protects anything, or None while its holder is alive. The expiry
    is the longer of this invocation's and the holder's own."""
    holder = Holder.of(tags)
    same_machine = holder.host == socket.gethostname() and holder.machine == machine_id() and holder.machine
    if same_machine and not alive_here(holder.pid, holder.started):
        return f"its holder, {holder.describe()}, has ended"
    ttl = max(ttl, holder.ttl)
    age = heartbeat_age(tags, now)
    if age > ttl:
        return f"its holder, {holder.describe()}, sent no heartbeat for {age:.0f} s (expiry {ttl:.0f} s)"
    return None


class Lease:
    """The held lease of one suite; renew it with a background heartbeat, release it when done."""

    def __init__(self, client: MlflowClient, suite: str, experiment_id: str, holder: Holder, ttl: float) -> None:
        self.client, self.suite, self.experiment_id, self.holder, self.ttl = client, suite, experiment_id, holder, ttl
        self.lost: str | None = None
        self.renewed = time.monotonic()
        self.error = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"lease {suite}", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl / 6):
            try:
                exp = self.client.get_experiment(self.experiment_id)
                if exp.lifecycle_stage != "active" or exp.name != lease_name(self.suite):
                    self.lost = f"the lease of {self.suite!r} was taken over by another invocation"
                    return
                self.client.set_experiment_tag(self.experiment_id, "heartbeat", f"{time.time():.3f}")
                self.renewed = time.monotonic()
            except Exception as e:  # noqa: BLE001 - a store hiccup: retried until check() gives up
                self.error = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}" if str(e) else type(e).__name__

    def check(self) -> None:
        """Raise LeaseLost when another invocation may be writing this suite now or soon: the lease was taken
        over, or it has not been renewed for half the expiry (a breaker waits the whole expiry, so a stalled
        holder stops before anyone can take over)."""
        silent = time.monotonic() - self.renewed
        if not self.lost and silent > self.ttl / 2:
            why = f" ({self.error})" if self.error else ""
            self.lost = f"the lease of {self.suite!r} could not be renewed for {silent:.0f} s{why}"
        if self.lost:
            raise LeaseLost(f"{self.lost}; stopping before writing more runs (rerun to resume)")

    def release(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        _break(self.client, self.experiment_id, "released")


def _break(client: MlflowClient, experiment_id: str, why: str) -> None:
    """Free a lease by id: renamed out of the way (so its name can be created again), then deleted. A lease
    deleted by hand (in the UI) still holds its name, so it is restored first."""
    try:
        exp = client.get_experiment(experiment_id)
        if exp.lifecycle_stage == "deleted":
            if not exp.name.startswith("lease:") or " " in exp.name:
                return  # already released or broken
            client.restore_experiment(experiment_id)
        client.rename_experiment(experiment_id, f"{exp.name} {why} {experiment_id}")
        client.delete_experiment(experiment_id)
    except MlflowException as e:
        if e.error_code not in FREED:  # e.g. no permission to change another user's experiment
            raise StoreError(
                f"cannot free the lease (experiment {experiment_id}): {explain(client.tracking_uri, e)}"
            ) from None


def acquire(
    client: MlflowClient,
    suite: str,
    wait_s: float = 0.0,
    ttl: float | None = None,
    say=print,
    artifact_location: str | None = None,
) -> Lease:
    """Take the lease of ``suite``, waiting up to ``wait_s`` seconds for a live holder; else raise LeaseBusy."""
    ttl = ttl if ttl is not None else ttl_s()
    me = Holder.me(ttl)
    name = lease_name(suite)
    deadline = time.monotonic() + wait_s
    told = False
    while True:
        try:
            tags = {**me.tags(), "mlflow.note.content": f"Lease: {me.describe()} runs suite {suite!r}."}
            experiment_id = client.create_experiment(name, artifact_location=artifact_location, tags=tags)
            return Lease(client, suite, experiment_id, me, ttl)
        except MlflowException as e:
            if "already exists" not in str(e) and e.error_code != "RESOURCE_ALREADY_EXISTS":
                raise StoreError(explain(client.tracking_uri, e)) from None
        current = client.get_experiment_by_name(name)
        if current is None:  # released in between
            time.sleep(0.05)
            continue
        if current.tags.get("holder_token") == me.token:  # a create the HTTP client retried had succeeded
            return Lease(client, suite, current.experiment_id, me, ttl)
        gone = "it was deleted by hand" if current.lifecycle_stage != "active" else why_gone(current.tags, ttl)
        if gone:
            say(f"the lease of {suite!r} is free: {gone}; taking it over")
            _break(client, current.experiment_id, "expired")
            time.sleep(0.05)
            continue
        holder = Holder.of(current.tags)
        if time.monotonic() >= deadline:
            age = heartbeat_age(current.tags)
            hint = "rerun with --wait SECONDS to queue behind it" if wait_s == 0 else "try again later"
            raise LeaseBusy(
                f"suite {suite!r} is being run by {holder.describe()}, last heartbeat {age:.0f} s ago (one writer "
                f"per suite; a holder that stopped frees it {max(ttl, holder.ttl):.0f} s after its last heartbeat); "
                f"wait for it to finish, or {hint}"
            )
        if not told:
            say(f"waiting for {holder.describe()}, which is running suite {suite!r}")
            told = True
        time.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))


def verify(client: MlflowClient, experiment_id: str, suite: str, token: str) -> None:
    """For a worker of the holder (a Ray task of the driver that took the lease): raise LeaseLost unless the
    lease ``experiment_id`` of ``suite`` still stands with the holder's ``token``. A worker reads the store
    instead of holding a heartbeat of its own: the driver's heartbeat keeps the lease."""
    try:
        exp = client.get_experiment(experiment_id)
    except MlflowException as e:
        if e.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise StoreError(explain(client.tracking_uri, e)) from None
        exp = None
    if exp is None or exp.lifecycle_stage != "active" or exp.name != lease_name(suite):
        raise LeaseLost(f"the driver no longer holds suite {suite!r}; this worker stops (rerun to resume)")
    if exp.tags.get("holder_token") != token:
        raise LeaseLost(f"suite {suite!r} is held by another invocation now; this worker stops (rerun to resume)")
    silent, expiry = heartbeat_age(exp.tags), max(ttl_s(), Holder.of(exp.tags).ttl)
    if silent > expiry / 2:  # the holder itself stops at half the expiry; its workers with it
        raise LeaseLost(
            f"the driver of suite {suite!r} has not renewed its lease for {silent:.0f} s; this worker stops "
            "(rerun to resume)"
        )
