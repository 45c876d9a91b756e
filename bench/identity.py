"""Code identity of a cell: a digest of the source of every bench module that can change its result.

A cell's key holds this digest, so a result is never reused once the code that decides it has changed; nobody
has to remember to bump a version. The modules are found by following ``bench`` imports (static, from the
source) from the runner and the cell's task module. Modules that only present or store results (reports,
statistics, tracking, the CLI) are not followed: they cannot change a number. ``config`` is not followed
either: its defaults reach a cell only as resolved values, which are in the key already. Every module of the
package must be either reachable or listed in ``PRESENTATION`` (a test checks it), so a new module cannot be
forgotten.
"""

from __future__ import annotations

import ast
import functools
import hashlib
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
# Modules that cannot change a cell's result, with the reason; their imports are not followed.
PRESENTATION = {
    "bench.__init__": "version string only",
    "bench.__main__": "command line",
    "bench.config": "resolved values are in the key; defaults reach a cell only through them",
    "bench.tasks.__init__": "registry: imports every task, each task's own code is hashed for its own cells",
    "bench.report": "tables from finished runs",
    "bench.figures": "report figures from finished runs",
    "bench.palette": "figure colours and markers",
    "bench.summary": "console tables from finished runs",
    "bench.stats": "statistics over finished runs",
    "bench.tracking": "MLflow conventions (where results are stored, not what they are)",
    "bench.publish": "puts the report on disk and on the latest parent run",
    "bench.ui": "MLflow UI addresses",
    "bench.parity": "compares two finished suites",
    "bench.perf": "throughput measurement, no cells",
    "bench.identity": "this module: computes keys, decides no result",
    "bench.staleness": "explains stale cells for the dry run",
    "bench.lease": "decides who may write a suite's runs, not what they hold",
    "bench.store": "opens the tracking store (errors, a safe first creation)",
    "bench.files": "how files are written (whole, inside results/), not what they hold",
    "bench.cluster": "dispatches the runner's own cell code to Ray workers (same keys, same numbers: tested)",
    "bench.server": "starts PostgreSQL and the MLflow server",
    "bench.capacity": "estimates a suite's wall time on N workers from finished runs",
    "bench.health": "label-free measures logged beside pretraining (RankMe, collapse); they train nothing",
    "bench.health_report": "rank correlations of finished runs' health and accuracy",
    "bench.overhead": "measures dispatch and tracking-server costs, no cells of a suite",
}
ROOTS = ("bench.runner",)  # every cell runs through the runner; a task adds its own module


def module_path(module: str) -> Path:
    parts = module.split(".")[1:]
    if parts and parts[-1] == "__init__":
        return PACKAGE.joinpath(*parts[:-1], "__init__.py")
    file = PACKAGE.joinpath(*parts).with_suffix(".py")
    return file if file.exists() else PACKAGE.joinpath(*parts, "__init__.py")


def all_modules() -> list[str]:
    """Every module of the package, as dotted names (``bench.tasks.__init__`` for the sub-package)."""
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        out.append(".".join(rel.parts))
    return out


def _is_module(name: str) -> bool:
    return name.endswith(".__init__") or module_path(name).exists()


@functools.cache
def _imports(module: str) -> tuple[str, ...]:
    """The bench modules ``module`` imports (absolute ``from bench.x import y`` / ``import bench.x``)."""
    tree = ast.parse(module_path(module).read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from bench import data` imports the module bench.data; `from bench.data import x` bench.data
            names = [node.module] + [
                f"{node.module}.{a.name}" for a in node.names if _is_module(f"{node.module}.{a.name}")
            ]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            if name == "bench":
                name = "bench.__init__"
            if name.startswith("bench.") and _is_module(name):
                is_package = module_path(name).name == "__init__.py" and not name.endswith(".__init__")
                found.add(f"{name}.__init__" if is_package else name)
    return tuple(sorted(found))


@functools.cache
def closure(*roots: str) -> tuple[str, ...]:
    """The modules reachable from ``roots`` through bench imports, presentation modules not followed."""
    seen: set[str] = set()
    stack = [r for r in roots if r not in PRESENTATION]
    while stack:
        m = stack.pop()
        if m in seen:
            continue
        seen.add(m)
        stack += [i for i in _imports(m) if i not in PRESENTATION and i not in seen]
    return tuple(sorted(seen))


@functools.cache
def module_digest(module: str) -> str:
    return hashlib.sha256(module_path(module).read_bytes()).hexdigest()[:12]


def code_modules(task_module: str) -> dict[str, str]:
    """module -> digest of its source, for every module that decides the results of a task's cells."""
    return {m: module_digest(m) for m in closure(*ROOTS, task_module)}


def code_digest(task_module: str) -> str:
    text = "\n".join(f"{m} {d}" for m, d in code_modules(task_module).items())
    return hashlib.sha256(text.encode()).hexdigest()[:16]
