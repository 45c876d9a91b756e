"""Reaching Ray and shared stores: importing Ray with one clear error, which stores every node can reach, the
polling and heartbeat periods, and the environment cells on Ray are planned for."""

from __future__ import annotations

import os

import optuna

from bench.config.suite import Suite
from bench.errors import ConfigError
from bench.run.identity import plan_environment

RUNNING = optuna.trial.TrialState.RUNNING
WAITING = optuna.trial.TrialState.WAITING
POLL_S = 1.0  # how often a tuning worker looks at trials running elsewhere
HEARTBEAT_S = 30  # Optuna's trial heartbeat on a database storage; a trial silent for 4x this has failed


def _ray():
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")  # read at import: every cell's line, even when two say the same
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "execution.backend = 'ray' needs Ray and the PostgreSQL driver: pip install 'pretext-bench[cluster]'"
        ) from None
    return ray


def is_shared(uri: str) -> bool:
    """A store every machine of a cluster can reach (a server or a database server, not a file here)."""
    return not (uri.startswith("sqlite:") or uri.startswith("file:") or "://" not in uri)


class RayPlanning:
    """How cells run on Ray are planned: the local plan's environment, with the thread count every worker will
    use (``execution.threads``, else this machine's), so the workers' numbers equal a local run's and a worker
    whose device or libraries differ refuses to run."""

    def environment(self, suite: Suite) -> dict:
        return plan_environment(suite, suite.execution.threads)
