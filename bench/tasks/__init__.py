"""Task registry: every module in this package is imported, and each Task subclass with a name registers."""

import importlib
import pkgutil

from bench.tasks.base import REGISTRY, Task, TaskConfig

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

TASKS: dict[str, type[Task]] = dict(sorted(REGISTRY.items()))

__all__ = ["TASKS", "Task", "TaskConfig"]
