"""Pretext tasks and baselines, one file each. A module here that defines a ``Task`` subclass with a ``name``
provides that task: ``bench.registry.TASKS`` finds it without importing it, and imports it when it is used."""

from bench.registry import TASKS

__all__ = ["TASKS"]
