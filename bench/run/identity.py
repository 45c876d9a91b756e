"""Identity of a cell by component: the versions of the code parts it uses, and the environment it ran in.

Each part of bench that can change a number has a version (``PARTS`` below; a task's is its class attribute
``version``). A cell's key holds the versions of the parts it uses, so an edit renews a cell only when the
version of a part it uses moves; a comment, a docstring, a refactor or a moved function renew nothing.

What keeps this honest is the lock (``bench/run/identity.lock``), which pins each part's normalised digest (its
modules' syntax trees without docstrings, comments and formatting) beside its version. ``check_lock`` fails when
a digest moved while its version stayed, and says what to do: bump the version (behaviour changed: the cells
using that part go stale), or, when the golden check (``bench.run.golden``) shows every output unchanged, record
the new digest with ``python -m bench identity --update`` (a refactor: nothing goes stale).

Which parts a cell uses: the parts it calls directly (``cell_parts``), and every part their modules import,
transitively (static imports of ``bench`` modules; modules in ``NOT_NUMERIC`` are not followed, nor the imports
of ``cells``, which calls every part: which of them a cell uses is what ``cell_parts`` says).
"""

from __future__ import annotations

import ast
import functools
from dataclasses import dataclass

from bench.config.suite import Suite
from bench.run.source import PACKAGE, module_path, plugin_digest, plugin_modules


@dataclass(frozen=True)
class Part:
    name: str
    version: int | str  # a plug-in's: its class version + the digest of its source
    modules: tuple[str, ...]
    what: str


# The parts of bench that decide numbers. Bump a version when its part computes something else.
PARTS = (
    Part(
        "cells", 1, ("bench.run.cells",), "what one cell computes: seeds, encoders given to protocols, the test score"
    ),
    Part(
        "train", 1, ("bench.train.loop", "bench.train.optim"), "the pretraining loop, optimisers, schedules, autocast"
    ),
    Part("reference", 1, ("bench.augment.reference",), "lightly's per-image pipeline in DataLoader workers"),
    Part("augment", 1, ("bench.augment.ops",), "batched on-device image operations (crops, flips, colour, tiles)"),
    Part("views", 1, ("bench.augment.views",), "the joint-embedding tasks' views, lightly's transform parameters"),
    Part(
        "data",
        1,
        (
            "bench.data.budgets",
            "bench.data.cache",
            "bench.data.datasets",
            "bench.data.imagefolder",
            "bench.data.modes",
            "bench.data.pool",
            "bench.data.sources",
        ),
        "decoding, the cache, the pool (resident or streamed), subsets and nested label budgets",
    ),
    Part(
        "encoders",
        1,
        ("bench.models.encoders", "bench.models.vit", "bench.models.hub"),
        "encoder architectures (CNNs, ViTs, backbones by library) and their seeded initialisation",
    ),
    Part("checkpoints", 1, ("bench.store.checkpoints",), "how an encoder is saved and loaded"),
    Part("tasks", 1, ("bench.tasks.base",), "what every task is: evaluation input, hooks of the loop"),
    Part("tasks.joint", 1, ("bench.tasks.joint",), "two-view tasks: views, momentum encoders"),
    Part("tasks.dense", 1, ("bench.tasks.dense",), "the decoder of the dense prediction tasks"),
    Part(
        "protocols",
        1,
        ("bench.protocols.base", "bench.protocols.features", "bench.protocols.validation"),
        "what the protocols share: features, recalibration, in-budget validation folds",
    ),
    Part("protocol.linear", 2, ("bench.protocols.linear",), "the linear probe: its L2 path and how L2 is chosen"),
    Part("protocol.knn", 1, ("bench.protocols.knn",), "the weighted kNN classifier"),
    Part(
        "protocol.finetune",
        2,
        ("bench.protocols.finetune", "bench.protocols.convergence"),
        "fine-tuning until convergence",
    ),
    Part("tuning", 2, ("bench.protocols.tuning",), "Optuna studies, one per seed, on its own budget labels"),
    Part("health", 1, ("bench.train.health",), "RankMe and the collapse signal during pretraining"),
)

# Modules that cannot change a number, with the reason; their imports are not followed. A name ending in ".*"
# covers every module of that sub-package that no part owns.
NOT_NUMERIC = {
    "bench.__init__": "public names and the version string",
    "bench.__main__": "command line",
    "bench.cli": "command line",
    "bench.commands": "what each command does",
    "bench.cell": "what a cell is: its kind, task, seed and key (computed by bench.run.plan)",
    "bench.errors": "the kinds of error and their exit codes",
    "bench.version": "the version string",
    "bench.files": "how files are written, not what they hold",
    "bench.clock": "when progress lines are printed",
    "bench.registry": "finds tasks, protocols, encoders and datasets by name",
    "bench.plugins": "imports a user's task, encoder, dataset or protocol (its own source is in its cells' keys)",
    "bench.api": "the public functions: load a suite, run it, write its report",
    "bench.config.*": "the suite schema: resolved values are in every key",
    "bench.tasks.__init__": "the task registry",
    "bench.augment.__init__": "package",
    "bench.data.__init__": "package",
    "bench.data.catalog": "the datasets' names, class counts and descriptions",
    "bench.data.leaks": "warns of test images among the training images; drops and changes none",
    "bench.models.__init__": "package",
    "bench.train.__init__": "package",
    "bench.protocols.__init__": "the protocol registry",
    "bench.run.*": "plans, keys, identities, orchestration and the golden check: decide which cells run, not what"
    " they compute (bench.run.cells is a part)",
    "bench.store.*": "MLflow conventions, leases, the store client, UI addresses: where results are stored, not "
    "what they are (bench.store.checkpoints is a part)",
    "bench.report.*": "tables, statistics and figures from finished runs",
    "bench.cluster.*": "dispatches cells (bench.run.cells) to Ray workers, starts services, measures their cost; "
    "tuning parallelism is in the keys",
    "bench.tools.*": "throughput and parity measurements, no cells",
}

# Numeric libraries whose results decide cells, at the granularity bench assumes stable (major.minor):
# a patch release is taken not to change numbers.
LIBRARIES = ("torch", "torchvision", "lightly", "numpy", "scikit-learn")
TUNING_LIBRARIES = ("optuna",)


# ---------------------------------------------------------------------------------------------- parts


def task_part(task: type) -> Part:
    if not task.__module__.startswith("bench."):
        return plugin_part(f"task.{task.name}", task.version, task.__module__, task.summary)
    return Part(f"task.{task.name}", task.version, (task.__module__,), task.summary)


def protocol_part(name: str) -> str:
    """The part a protocol's cells use for it: ``protocol.<name>``, one of ``PARTS`` for bench's own, else
    a plug-in's (``plugin_part``)."""
    return f"protocol.{name}"


def encoder_parts(suite: Suite) -> set[str]:
    """The parts the suite's encoder is: bench's encoders, and the plug-in's own source when it is one."""
    from bench.registry import ENCODERS

    return {"encoders"} | ({f"encoder.{suite.encoder.name}"} if ENCODERS.is_plugin(suite.encoder.name) else set())


def plugin_part(name: str, version: int, module: str, what: str) -> Part:
    """A part from a user's package: there is no lock outside bench, so its version is the class's ``version``
    with the digest of its normalised source (``bench.run.lock.normalised``) - any edit that changes the syntax
    tree renews the cells that use it; a comment or a docstring does not."""
    modules = plugin_modules(module)
    return Part(name, f"{version}+{plugin_digest(modules)}", modules, what)


def all_parts() -> dict[str, Part]:
    """Every part: bench's own, every task and protocol, and the plug-ins that are loaded (a plug-in is loaded by
    the suite that uses it; the others are not imported)."""
    from bench.registry import ENCODERS, PROTOCOLS, TASKS

    parts = {p.name: p for p in PARTS}
    parts |= {f"task.{TASKS[n].name}": task_part(TASKS[n]) for n in TASKS.names() if _used(TASKS, n)}
    for name in PROTOCOLS.names():
        if protocol_part(name) not in parts and _used(PROTOCOLS, name):
            cls = PROTOCOLS[name]
            parts[f"protocol.{name}"] = plugin_part(f"protocol.{name}", cls.version, cls.__module__, cls.summary)
    for name in ENCODERS.names():
        if ENCODERS.is_plugin(name) and ENCODERS.loaded(name):
            module, what = ENCODERS.module_of(name), ENCODERS[name].summary
            parts[f"encoder.{name}"] = plugin_part(f"encoder.{name}", 1, module, what)
    return parts


def _used(registry, name: str) -> bool:
    return not registry.is_plugin(name) or registry.loaded(name)


def all_modules() -> list[str]:
    """Every module of the package, as dotted names (``bench.tasks.__init__`` for the sub-package)."""
    return [".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts) for p in sorted(PACKAGE.rglob("*.py"))]


def _is_module(name: str) -> bool:
    return name.endswith(".__init__") or module_path(name).exists()


@functools.cache
def imports(module: str) -> tuple[str, ...]:
    """The bench modules ``module`` imports (absolute imports; ``typing.TYPE_CHECKING`` blocks not counted)."""
    tree = ast.parse(module_path(module).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            node.body = []
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "bench":
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


def owner(module: str, parts: dict[str, Part]) -> str | None:
    return next((p.name for p in parts.values() if module in p.modules), None)


def uses(names: set[str], parts: dict[str, Part] | None = None) -> dict[str, int | str]:
    """part -> version of ``names`` and every part their modules import, transitively."""
    parts = parts or all_parts()
    seen: set[str] = set()
    stack = list(names)
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        if name == "cells":  # it calls every part; which ones a cell uses is what cell_parts says
            continue
        for module in parts[name].modules:
            for imported in imports(module):
                part = owner(imported, parts)
                if part is not None and part not in seen:
                    stack.append(part)
    return {n: parts[n].version for n in sorted(seen)}


def cell_parts(suite: Suite, kind: str, task: type, tuned: bool = False, protocol: str | None = None) -> set[str]:
    """The parts a cell calls directly. A pretraining: the loop, its task, health if measured. An evaluation:
    the protocols (and its own protocol's part, where it comes from outside bench), its task's evaluation input,
    tuning if its hyperparameters come from a study."""
    direct = {"cells", "data", "checkpoints", f"task.{task.name}"} | encoder_parts(suite)
    if kind == "pretrain":
        direct |= {"train"} | ({"health"} if suite.pretrain.health_every else set())
        if suite.pretrain.augment == "lightly":
            direct.add("reference")
    else:
        direct |= {"protocols"} | ({"tuning"} if tuned else set())
        if protocol is not None:
            direct.add(protocol_part(protocol))
    return direct


# ---------------------------------------------------------------------------------------------- environment


def minor(version: str) -> str:
    return ".".join(version.split("+")[0].split(".")[:2])


def library_versions(names: tuple[str, ...]) -> dict[str, str]:
    from importlib.metadata import version

    return {name: minor(version(name)) for name in names}


def plan_environment(suite: Suite, threads: int | None = None) -> dict:
    """What decides numbers about where cells run: device kind and precision (bf16 autocast on CUDA), the CPU
    thread count (CPU reductions depend on it), and the numeric libraries' versions. ``device = "auto"``
    resolves on this machine; "cuda" plans for CUDA even where there is none (a report from a laptop)."""
    import torch

    device = suite.device if suite.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    env: dict = {"device": device, "precision": "bf16-autocast" if device == "cuda" else "fp32"}
    if device == "cpu":
        env["threads"] = threads or torch.get_num_threads()
    from bench.registry import ENCODERS

    extra = ENCODERS[suite.encoder.name].libraries  # timm, for its models
    return env | {"libraries": library_versions(LIBRARIES + tuple(x for x in extra if x not in LIBRARIES))}


def unclassified() -> list[str]:
    """Modules of the package in no part and not declared unable to change a number."""
    owned = {m for p in all_parts().values() for m in p.modules}
    return [m for m in all_modules() if m not in owned and not_numeric(m) is None]


def not_numeric(module: str) -> str | None:
    """Why ``module`` cannot change a number (``NOT_NUMERIC``), or None when it is not declared so."""
    if module in NOT_NUMERIC:
        return NOT_NUMERIC[module]
    package = module.removesuffix(".__init__") if module.endswith(".__init__") else module.rsplit(".", 1)[0]
    return NOT_NUMERIC.get(f"{package}.*")
