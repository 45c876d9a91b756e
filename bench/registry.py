"""One lazy registry type for tasks, protocols, encoders and datasets: names are known without importing anything
heavy, and an entry is imported the first time it is used.

A registry finds its built-in entries in one of two ways:

- ``package``: every module of a package that defines a top-level class with a literal class attribute
  ``name = "..."`` provides that name (read from the source, not imported). ``bench.tasks`` and
  ``bench.protocols`` work this way, so a new task or protocol is one new file.
- ``modules``: modules that call ``register`` when imported (encoders, datasets).

``register(name, target)`` adds an entry by hand: an object, or a ``"module:attribute"`` path imported when the
entry is first looked up. A user's own package plugs in that way (``bench.plugins``): named in a suite
(``class = "module:attribute"``), or by its entry points in the group ``bench.<kind>s``. An entry from outside
bench is checked and adapted when first imported (``adapt``), and a broken one is a ``PluginError``.
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

    def __init__(
        self,
        kind: str,
        package: str | None = None,
        modules: tuple[str, ...] = (),
        adapt: str | None = None,
        factories: dict[str, str] | None = None,
    ) -> None:
        """``adapt``: a ``"module:function"`` path of ``function(name, obj) -> entry`` that checks an entry from
        outside bench when it is first imported (a task must be a ``Task`` subclass of that name, ...).
        ``factories``: prefix -> ``"module:function"`` path of ``function(name, *options) -> entry`` for names of
        the form ``prefix:rest`` (``torchvision:resnet50``), made when a suite names one (``from_factory``)."""
        self.factories = factories or {}
        self.kind = kind
        self.package = package
        self.modules = modules
        self.adapt = adapt
        self._entries: dict[str, T | str] = {}
        self._origin: dict[str, str] = {}  # name -> the module a "module:attribute" entry came from
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
        from bench.plugins import entry_points

        for name, target in entry_points(self.kind).items():
            if name not in self._entries:  # a built-in keeps its name
                self._entries[name] = target
                self._origin[name] = target.partition(":")[0]

    def register(self, name: str, target: T | str | None = None) -> Callable[[T], T] | None:
        """Add ``name``: ``register(name, obj)``, ``register(name, "module:attribute")``, or as a decorator
        ``@registry.register(name)``. A name registered again replaces the earlier entry."""
        if target is None:

            def decorate(obj: T) -> T:
                self._entries[name] = obj
                return obj

            return decorate
        self._entries[name] = target
        if isinstance(target, str):
            self._origin[name] = target.partition(":")[0]
        else:
            self._origin.pop(name, None)
        return None

    def unregister(self, name: str) -> None:
        """Remove ``name`` (tests that register a toy entry take it out again)."""
        self._find()
        self._entries.pop(name, None)
        self._origin.pop(name, None)

    def names(self) -> list[str]:
        self._find()
        return sorted(self._entries)

    def module_of(self, name: str) -> str:
        """The module that defines ``name``, without importing it when it is not imported yet."""
        entry = self._entry(name)
        if name in self._origin:
            return self._origin[name]
        return entry.partition(":")[0] if isinstance(entry, str) else entry.__module__

    def has_factory(self, name: str) -> bool:
        """Whether ``name`` is of the form ``prefix:rest`` for one of the factories' prefixes."""
        prefix, sep, _ = name.partition(":")
        return bool(sep) and prefix in self.factories

    def from_factory(self, name: str, *options) -> T:
        """Make ``name``'s entry with its prefix's factory (errors are the factory's) and register it."""
        module, _, attr = self.factories[name.partition(":")[0]].partition(":")
        entry = getattr(importlib.import_module(module), attr)(name, *options)
        self.register(name, entry)
        return entry

    def loaded(self, name: str) -> bool:
        """Whether ``name``'s entry is imported already."""
        return not isinstance(self._entry(name), str)

    def is_plugin(self, name: str) -> bool:
        """Whether ``name`` comes from outside bench (a user's package)."""
        return not self.module_of(name).startswith("bench.")

    def _entry(self, name: str) -> T | str:
        self._find()
        if name not in self._entries:
            raise UnknownName(self.kind, name, self.names())
        return self._entries[name]

    def __getitem__(self, name: str) -> T:
        entry = self._entry(name)
        if isinstance(entry, str):
            if entry.startswith("bench."):
                module, _, attr = entry.partition(":")
                entry = getattr(importlib.import_module(module), attr)
            else:
                from bench.plugins import import_target

                entry = import_target(self.kind, entry)
                if self.adapt is not None:
                    module, _, attr = self.adapt.partition(":")
                    entry = getattr(importlib.import_module(module), attr)(name, entry)
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
TASKS: Registry = Registry("task", package="bench.tasks", adapt="bench.tasks.base:as_plugin")
PROTOCOLS: Registry = Registry("protocol", package="bench.protocols", adapt="bench.protocols.base:as_plugin")
ENCODERS: Registry = Registry(
    "encoder",
    modules=("bench.models.encoders", "bench.models.vit"),
    adapt="bench.models.encoders:as_plugin",
    factories={"torchvision": "bench.models.hub:backbone", "timm": "bench.models.hub:backbone"},
)
DATASETS: Registry = Registry("dataset", modules=("bench.data.catalog",), adapt="bench.data.catalog:as_plugin")
