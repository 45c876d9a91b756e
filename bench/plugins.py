"""A user's own task, encoder, dataset or protocol, from the user's own package.

Two ways in, both ending in ``bench.registry``: a suite names the object by ``class = "module:attribute"`` in the
entry's table (``[tasks.<name>]``, ``[encoder]``, ``[dataset]``), or an installed package declares entry points
in the groups ``bench.tasks``, ``bench.encoders``, ``bench.datasets`` and ``bench.protocols`` (name = the
``module:attribute`` path). Either is imported only when first used, and a broken one is refused in one line
that names the path, the file and the problem.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import traceback
from typing import Any

from bench.errors import PluginError

GROUP = "bench.{kind}s"  # the entry-point group of a registry's kind: bench.tasks, bench.encoders, ...
IMPORT_MACHINERY = ("<frozen importlib", "importlib/__init__.py")


def entry_points(kind: str) -> dict[str, str]:
    """name -> ``module:attribute`` for every entry point of the installed packages in ``kind``'s group."""
    found = importlib.metadata.entry_points(group=GROUP.format(kind=kind))
    return {ep.name: ep.value for ep in sorted(found, key=lambda ep: ep.name)}


def _where(error: BaseException) -> str:
    """The file and line of the user's code where ``error`` was raised (the last frame outside the import
    machinery)."""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if not f.filename.startswith(IMPORT_MACHINERY)]
    frames = [f for f in frames if not any(m in f.filename for m in IMPORT_MACHINERY)]
    return f"{frames[-1].filename} line {frames[-1].lineno}" if frames else "its module"


def import_target(kind: str, target: str) -> Any:
    """The object ``target`` (``"module:attribute"``, the attribute may be dotted) names; a ``PluginError`` that
    names the file and the problem when it cannot be had."""
    module, sep, attr = target.partition(":")
    what = f"{kind} plug-in {target!r}"
    if not sep or not module or not attr:
        raise PluginError(f"{what}: write it as 'module:attribute', e.g. 'my_pkg.tasks:MyTask'")
    try:
        loaded = importlib.import_module(module)
    except SyntaxError as e:
        raise PluginError(f"{what}: {e.filename} line {e.lineno}: syntax error: {e.msg}") from None
    except ModuleNotFoundError as e:
        if e.name and (module == e.name or module.startswith(e.name + ".")):
            raise PluginError(
                f"{what}: no module named {e.name!r} (install the package that has it, or put its folder on PYTHONPATH)"
            ) from None
        raise PluginError(f"{what}: {_where(e)}: {type(e).__name__}: {e}") from None
    except Exception as e:
        raise PluginError(f"{what}: importing {module} failed at {_where(e)}: {type(e).__name__}: {e}") from None
    obj: Any = loaded
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise PluginError(f"{what}: {getattr(loaded, '__file__', module)} defines no {attr!r}")
        obj = getattr(obj, part)
    return obj


def source_file(obj: Any) -> str:
    import inspect

    try:
        return inspect.getsourcefile(obj) or obj.__module__
    except TypeError:
        return getattr(obj, "__module__", "?")


def subclass_named(kind: str, name: str, obj: Any, base: type, required: tuple[str, ...]) -> type:
    """``obj`` if it is a ``base`` subclass whose own ``name`` is ``name`` and that sets each ``required`` text
    attribute; else a ``PluginError`` naming its file."""
    where = f"{kind} plug-in {name!r} ({source_file(obj)})"
    if not (isinstance(obj, type) and issubclass(obj, base)):
        raise PluginError(f"{where}: {obj!r} is not a subclass of {base.__module__}.{base.__name__}")
    declared = obj.__dict__.get("name")
    if declared != name:
        raise PluginError(
            f"{where}: the class sets name = {declared!r}; a {kind} is used by its own name, so write "
            f"name = {name!r} in the class (or use {declared!r} in the suite)"
        )
    missing = [a for a in required if not isinstance(getattr(obj, a, None), str)]
    if missing:
        raise PluginError(f"{where}: the class sets no {' or '.join(missing)} (one line each, for `bench list`)")
    return obj


def summary_of(obj: Any, fallback: str) -> str:
    """The first line of ``obj``'s docstring, else ``fallback`` (a plug-in's line in `bench list`)."""
    doc = (getattr(obj, "__doc__", None) or "").strip()
    return doc.splitlines()[0] if doc else fallback


def register_named(registry: Any, table: Any, default: str) -> Any:
    """A suite table (``[encoder]``, ``[dataset]``, ``[tasks.<name>]`` with its name as ``name``) that says
    ``class = "module:attribute"``: its entry is registered under the table's name and imported at once, so a
    broken plug-in is refused while the suite is validated. Returns the table unchanged."""
    if not isinstance(table, dict) or table.get("class") is None:
        return table
    name, target = table.get("name", default), table["class"]
    if not isinstance(target, str):
        raise PluginError(f"class must be a 'module:attribute' string, got {target!r}")
    if name in registry and not registry.is_plugin(name):
        raise PluginError(f"{registry.kind} {name!r} is built into bench; give your {registry.kind} another name")
    registry.register(name, target)
    try:
        registry[name]
    except PluginError:
        registry.unregister(name)
        raise
    return table
