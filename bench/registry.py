"""One lazy registry type for tasks, protocols, encoders and datasets: names are known without importing anything
heavy, and an entry is imported the first time it is used.

A registry finds its built-in entries in one of two ways:

- ``package``: every module of a package that defines a top-level class with a literal class attribute
  ``name = "..."`` provides that name (read from the source, not imported). ``bench.tasks`` and
  ``bench.protocols`` work this way, so a new task or protocol is one new file.
- ``modules``: modules that call ``register`` when imported (encoders, datasets).

``register(name, target)`` adds an entry by hand: an object, or a ``"module:attribute"`` path imported when the
entry is first looked up (the way a user's own package plugs in).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Generic, TypeVar

from bench.errors import UnknownName

T = TypeVar("T")


def _declared_names(path: Path) -> dict[str, str]:
    """name -> class name for every top-level class of ``path`` whose body assigns ``name = "<literal>"``."""
    found = {}
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if not isinstance(node, ast.ClassDef):
            continue
        for stmt in node.body:
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [getattr(stmt, "target", None)]
            value = getattr(stmt, "value", None)
            if [getattr(t, "id", None) for t in targets] == ["name"] and isinstance(value, ast.Constant):
                if isinstance(value.value, str):
                    found[value.value] = node.name
    return found


class Registry(Mapping[str, T], Generic[T]):
    """Name -> entry (a task class, a protocol class, an encoder or dataset spec), in sorted name order.

    Iterating, ``len`` and ``in`` import nothing; ``registry[name]`` imports the entry's module once. An unknown
    name raises ``bench.errors.UnknownName`` (a ``KeyError`` and a user error) naming the registered ones.
    """

    def __init__(self, kind: str, package: str | None = None, modules: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self.package = package
        self.modules = modules
        self._entries: dict[str, T | str] = {}
        self._found = False

    def _find(self) -> None:
        if self._found:
            return
        self._found = True
        if self.package is not None:
            spec = importlib.util.find_spec(self.package)
            for folder in spec.submodule_search_locations or ():
                for path in sorted(Path(folder).glob("*.py")):
                    if path.stem.startswith("_"):
                        continue
                    for name, attr in _declared_names(path).items():
                        self._entries.setdefault(name, f"{self.package}.{path.stem}:{attr}")
        for module in self.modules:
            importlib.import_module(module)

    def register(self, name: str, target: T | str | None = None) -> Callable[[T], T] | None:
        """Add ``name``: ``register(name, obj)``, ``register(name, "module:attribute")``, or as a decorator
        ``@registry.register(name)``. A name registered again replaces the earlier entry."""
        if target is None:

            def decorate(obj: T) -> T:
                self._entries[name] = obj
                return obj

            return decorate
        self._entries[name] = target
        return None

    def unregister(self, name: str) -> None:
        """Remove ``name`` (tests that register a toy entry take it out again)."""
        self._find()
        self._entries.pop(name, None)

    def names(self) -> list[str]:
        self._find()
        return sorted(self._entries)

    def module_of(self, name: str) -> str:
        """The module that defines ``name``, without importing it when it is not imported yet."""
        entry = self._entry(name)
        return entry.partition(":")[0] if isinstance(entry, str) else entry.__module__

    def _entry(self, name: str) -> T | str:
        self._find()
        if name not in self._entries:
            raise UnknownName(self.kind, name, self.names())
        return self._entries[name]

    def __getitem__(self, name: str) -> T:
        entry = self._entry(name)
        if isinstance(entry, str):
            module, _, attr = entry.partition(":")
            entry = getattr(importlib.import_module(module), attr)
            self._entries[name] = entry
        return entry

    def __contains__(self, name: object) -> bool:
        self._find()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self.names())})"


# The four registries. Built-in entries are found where they are defined; a user's own package adds to them.
TASKS: Registry = Registry("task", package="bench.tasks")
PROTOCOLS: Registry = Registry("protocol", package="bench.protocols")
ENCODERS: Registry = Registry("encoder", modules=("bench.models.encoders",))
DATASETS: Registry = Registry("dataset", modules=("bench.data.catalog",))
