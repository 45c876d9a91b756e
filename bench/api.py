"""The public functions: load a suite, run it, write its report, and plug in a task, protocol, encoder or dataset.

Everything here is also reachable as ``bench.<name>`` (``import bench; bench.run_suite("suites/quick.toml")``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

from bench.config.suite import Suite
from bench.errors import ConfigError


def load_suite(path: str | Path, overrides: list[str] | None = None) -> Suite:
    """Read, override and validate a suite file.

    Args:
        path: the suite's TOML file.
        overrides: ``key=value`` strings applied before validation, as ``--set`` takes them
            (e.g. ``["pretrain.epochs=5", "seeds=[0]"]``).

    Returns:
        The validated suite.

    Raises:
        bench.errors.ConfigError: the file is missing or not TOML, or a key or value is not allowed; the message
            names the file and the key.
    """
    from bench.config.load import load_suite as load

    return load(path, overrides)


def _suite_and_path(suite: Suite | str | Path, path: str | Path | None) -> tuple[Suite, Path]:
    if isinstance(suite, Suite):
        if path is None:
            raise ConfigError("a Suite object needs the path of its file (path=...): runs record where it came from")
        return suite, Path(path)
    return load_suite(suite), Path(suite)


def run_suite(
    suite: Suite | str | Path,
    path: str | Path | None = None,
    *,
    dry_run: bool = False,
    report: bool = True,
    wait_s: float = 0.0,
    console: Console | None = None,
) -> Any:
    """Run every cell of a suite that is not done yet (resumable: finished cells are found by key and skipped).

    Args:
        suite: a suite file, or a loaded ``Suite`` (then ``path`` names its file).
        path: the suite's file when ``suite`` is a ``Suite``.
        dry_run: print the plan, what is done and what is stale, and run nothing.
        report: write <results_dir>/<suite>/ when the run ends.
        wait_s: seconds to wait for another invocation that holds the suite (default: refuse at once).
        console: where progress goes (default: standard output).

    Returns:
        ``bench.run.runner.Outcome``: cells planned, already done, run, failed (label -> reason), and the
        summary tables as text.

    Raises:
        bench.errors.UserError: a suite, data, store or results folder to fix, or the suite held by another
            invocation (``LeaseBusy``).
    """
    from bench.run.runner import Runner

    loaded, where = _suite_and_path(suite, path)
    return Runner(loaded, where, console).run(dry_run=dry_run, report=report, wait_s=wait_s)


def write_report(suite: Suite | str | Path, path: str | Path | None = None, console: Console | None = None) -> list:
    """Write <results_dir>/<suite>/ (tables, statistics, figures) from the suite's finished runs in its store.

    Args:
        suite: a suite file, or a loaded ``Suite`` (then ``path`` names its file).
        path: the suite's file when ``suite`` is a ``Suite``.
        console: where messages go.

    Returns:
        The paths written.

    Raises:
        bench.errors.ConfigError: the store holds no finished evaluation of the suite under its current keys.
    """
    from bench.run.runner import Runner

    loaded, where = _suite_and_path(suite, path)
    return Runner(loaded, where, console).report()


def register(kind: str, name: str, target: Any) -> None:
    """Add a task, protocol, encoder or dataset under ``name``.

    Args:
        kind: ``"task"``, ``"protocol"``, ``"encoder"`` or ``"dataset"``.
        name: the name a suite uses.
        target: the entry (a ``Task`` or ``Protocol`` subclass, an ``Encoder`` or ``DatasetSpec``), or a
            ``"module:attribute"`` path imported when the entry is first used.

    A ``Task`` or ``Protocol`` subclass that sets ``name`` registers itself when its module is imported.
    """
    from bench.registry import DATASETS, ENCODERS, PROTOCOLS, TASKS

    registries = {"task": TASKS, "protocol": PROTOCOLS, "encoder": ENCODERS, "dataset": DATASETS}
    if kind not in registries:
        raise ConfigError(f"unknown kind {kind!r}; one of {', '.join(registries)}")
    registries[kind].register(name, target)


def load_exported(folder: str | Path) -> Any:
    """The encoder ``bench export`` wrote to ``folder``: its architecture rebuilt, its weights loaded, in eval mode.

    Args:
        folder: the export folder (``encoder.pt`` and ``export.json``).

    Returns:
        The ``torch.nn.Module``: float images (B, 3, H, W), normalised as ``export.json`` says, to (B, out_dim).
    """
    from bench.tools.export import load_exported as load

    return load(folder)
