"""bench: which self-supervised pretext task gives the best encoder at each label budget, with evidence.

The public API, imported on first use (``import bench`` stays light):

- ``load_suite``, ``run_suite``, ``write_report``, ``register``, ``load_exported`` (``bench.api``)
- ``Suite`` (``bench.config.suite``), ``Task``, ``TaskConfig`` (``bench.tasks.base``), ``Protocol``
  (``bench.protocols.base``)
- ``TASKS``, ``PROTOCOLS``, ``ENCODERS``, ``DATASETS`` (``bench.registry``)
- ``errors`` (``bench.errors``: ``UserError`` and its kinds)
"""

from __future__ import annotations

import importlib
from typing import Any

from bench.version import version

__version__ = version()

PUBLIC = {
    "load_suite": "bench.api",
    "run_suite": "bench.api",
    "write_report": "bench.api",
    "register": "bench.api",
    "load_exported": "bench.api",
    "Suite": "bench.config.suite",
    "Task": "bench.tasks.base",
    "TaskConfig": "bench.tasks.base",
    "Protocol": "bench.protocols.base",
    "TASKS": "bench.registry",
    "PROTOCOLS": "bench.registry",
    "ENCODERS": "bench.registry",
    "DATASETS": "bench.registry",
}
__all__ = [*PUBLIC, "errors", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "errors":
        return importlib.import_module("bench.errors")
    if name in PUBLIC:
        return getattr(importlib.import_module(PUBLIC[name]), name)
    raise AttributeError(f"module 'bench' has no attribute {name!r}")
