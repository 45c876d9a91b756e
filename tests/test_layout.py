"""The package's layout: sub-packages whose imports run one way (down the flow), no circles, no private names taken
across packages, no module over 300 lines, and a command line that starts without torch's models or lightly."""

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "bench"
MAX_LINES = 300

# A package may import only packages of a lower layer (and itself): the flow of a suite, read bottom up.
LAYERS = [
    {"errors", "version", "clock"},
    {"plugins"},
    {"registry", "files", "cell"},
    {"config"},
    {"models", "data", "augment"},
    {"tasks"},
    {"train"},
    {"protocols", "store"},
    {"report"},
    {"run"},
    {"cluster", "tools"},
    {"api", "commands"},
    {"cli"},
    {"__main__", "__init__"},
]
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}


def modules() -> dict[str, Path]:
    return {".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts): p for p in sorted(PACKAGE.rglob("*.py"))}


def package(module: str) -> str:
    """The sub-package (or top-level module) of a dotted name: bench.run.cells -> run, bench -> __init__."""
    parts = module.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


def imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names) of every ``from bench... import`` and ``import bench...`` in a file, anywhere in it."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "bench":
            out.append((node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names if a.name.split(".")[0] == "bench"]
    return out


def test_every_package_has_a_layer():
    assert {package(m) for m in modules()} <= set(LAYER), "add the new sub-package to LAYERS"


def test_imports_run_down_the_layers():
    upward = [
        f"{module} -> {target}"
        for module, path in modules().items()
        for target, _ in imports(path)
        if package(target) != package(module) and LAYER[package(target)] >= LAYER[package(module)]
    ]
    assert not upward, "\n".join(upward)


def test_no_circles_between_modules():
    known = modules()
    graph = defaultdict(set)
    for module, path in known.items():
        for target, names in imports(path):
            for name in [target, *(f"{target}.{n}" for n in names)]:
                name = name if name in known else f"{name}.__init__"
                if name in known and name != module:
                    graph[module].add(name)
    state, cycles = {}, []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(trail[trail.index(nxt) :] + [node, nxt]))
            elif nxt not in state:
                visit(nxt, [*trail, node] if nxt not in trail else trail)
        state[node] = "done"

    for module in known:
        if module not in state:
            visit(module, [])
    assert not cycles, "\n".join(cycles)


def test_no_private_names_across_packages():
    private = [
        f"{module}: {target}.{name}"
        for module, path in modules().items()
        for target, names in imports(path)
        for name in names
        if name.startswith("_") and package(target) != package(module)
    ]
    assert not private, "\n".join(private)


def test_no_module_over_300_lines():
    long = {m: n for m, p in modules().items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long


@pytest.mark.parametrize(
    "code",
    [
        "import bench",
        "import bench.cli\ntry:\n    bench.cli.main(['--help'])\nexcept SystemExit:\n    pass",
        "import bench.config",
    ],
    ids=["import bench", "bench --help", "import bench.config"],
)
def test_starting_imports_neither_models_nor_lightly(code):
    probe = code + "\nimport sys\nprint(sorted(m for m in ('torch', 'torchvision', 'lightly') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout
