"""Source identity: a module's normalised syntax tree (no docstrings, comments, formatting or a class's
``version``) and the digest of a set of modules, for bench's own parts (pinned in the lock, ``bench.run.lock``)
and for a plug-in's source (in its cells' keys, ``bench.run.identity.plugin_part``)."""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]  # bench/


def module_path(module: str) -> Path:
    if module.startswith("bench."):
        parts = module.split(".")[1:]
        if parts[-1] == "__init__":
            return PACKAGE.joinpath(*parts[:-1], "__init__.py")
        file = PACKAGE.joinpath(*parts).with_suffix(".py")
        return file if file.exists() else PACKAGE.joinpath(*parts, "__init__.py")
    found = sys.modules.get(module)
    origin = getattr(found, "__file__", None) or importlib.util.find_spec(module).origin
    return Path(origin)


def plugin_modules(module: str) -> tuple[str, ...]:
    """The source a plug-in's numbers can depend on: its module and the modules of its own top-level package that
    it imports, transitively (static ``import`` and ``from ... import``, relative ones included)."""
    top = module.split(".")[0]
    found, stack = set(), [module]
    while stack:
        name = stack.pop()
        if name in found or importlib.util.find_spec(name) is None:
            continue
        found.add(name)
        path = module_path(name)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + [base]).strip(".")
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            stack += [n for n in names if n.split(".")[0] == top and _exists(n)]
    return tuple(sorted(found))


def _exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a name of a module's attribute (from pkg.mod import function)
        return False


def plugin_digest(modules: tuple[str, ...]) -> str:
    """``source_digest`` of a plug-in's modules, computed once while their files keep their modification times."""
    stamps = tuple(p.stat().st_mtime_ns for p in map(module_path, modules) if p.exists())
    return _cached_digest(modules, stamps)


@functools.lru_cache(maxsize=256)
def _cached_digest(modules: tuple[str, ...], stamps: tuple) -> str:
    return source_digest(modules)


class _Normalise(ast.NodeTransformer):
    """Docstrings out, and a task class's own ``version = N`` (the version is pinned beside the digest)."""

    def _body(self, node):
        self.generic_visit(node)
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
            if isinstance(body[0].value.value, str):
                body = body[1:]
        if isinstance(node, ast.ClassDef):
            body = [s for s in body if not _is_version(s)]
        node.body = body or [ast.Pass()]
        return node

    visit_Module = visit_ClassDef = visit_FunctionDef = visit_AsyncFunctionDef = _body


def _is_version(statement: ast.stmt) -> bool:
    targets = statement.targets if isinstance(statement, ast.Assign) else [getattr(statement, "target", None)]
    return isinstance(statement, (ast.Assign, ast.AnnAssign)) and [getattr(t, "id", "") for t in targets] == ["version"]


def normalised(source: str) -> str:
    """The syntax tree of ``source`` without docstrings, comments, formatting or a class's ``version``."""
    return ast.dump(_Normalise().visit(ast.parse(source)), include_attributes=False)


def source_digest(modules: tuple[str, ...] | list[str]) -> str:
    """16 hex digits of the modules' normalised syntax trees, by module name."""
    text = "\n".join(f"{m}\n{normalised(module_path(m).read_text())}" for m in sorted(modules))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
