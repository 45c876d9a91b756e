"""Command line: ``python -m bench {run,list}`` (also installed as ``bench``)."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import tempfile
import traceback
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench.errors import ConfigError

SUITES = Path("suites")


def suite_file(name_or_path: str) -> Path:
    """A suite file, given as a path or as the name of a file in suites/ (``quick`` -> suites/quick.toml)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    named = SUITES / f"{name_or_path}.toml"
    if named.is_file():
        return named
    known = ", ".join(sorted(p.stem for p in SUITES.glob("*.toml"))) or "none"
    raise ConfigError(f"no suite {name_or_path!r}: neither a file nor {named} (suites in {SUITES}/: {known})")


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    from bench.config import load_suite
    from bench.run.runner import Runner

    path = suite_file(args.suite)
    suite = load_suite(path, args.set)
    executor = None  # the runner's default: every cell in this process
    if suite.execution.backend == "ray":
        from bench.cluster.executor import RayExecutor

        executor = RayExecutor()
    outcome = Runner(suite, path, console, executor).run(dry_run=args.dry_run, wait_s=args.wait)
    if outcome.failed:
        console.print(f"[red]finished with {len(outcome.failed)} failed cell(s); rerun to retry them[/]")
        return 1
    return 0


def cmd_report(args: argparse.Namespace, console: Console) -> int:
    from bench.config import load_suite
    from bench.run.runner import Runner

    path = suite_file(args.suite)
    Runner(load_suite(path, args.set), path, console).report()
    return 0


def cmd_parity(args: argparse.Namespace, console: Console) -> int:
    from bench.tools.parity import run_parity

    run_parity(args.suite, args.set, console)
    return 0


def cmd_perf(args: argparse.Namespace, console: Console) -> int:
    from pathlib import Path

    from bench.run.runner import resolve_device
    from bench.tools.perf import run_perf

    device = resolve_device(args.device)
    r = run_perf(
        args.tasks,
        args.encoder,
        args.batch,
        args.steps,
        args.workers,
        device,
        Path(args.out),
        args.compile,
        say=lambda message: console.print(f"[dim]measuring {message}[/]"),
    )
    console.print(f"{r['device']}, {r['encoder']}, batch {r['batch']}, {r['workers']} DataLoader workers")
    for task, m in r["tasks"].items():
        console.print(
            f"  {task:9s} images/s: (a) model step only {m['a_model_step_only']:,.0f}  (b) on-device "
            f"{m['b_on_device']:,.0f}  (c) reference {m['c_reference']:,.0f}  b/c {m['ratio_b_over_c']:.2f}"
            f"  b/a {m['ratio_b_over_a']:.2f}  (CIFAR-10 epoch {m['cifar10_epoch_s']:.1f} s)"
        )
        if "b_on_device_compiled" in m:
            console.print(
                f"  {'':9s} compiled: (b) {m['b_on_device_compiled']:,.0f} images/s, b/a "
                f"{m['ratio_b_compiled_over_a']:.2f}, CIFAR-10 epoch {m['cifar10_epoch_s_compiled']:.1f} s "
                f"(compiling took {m['compile_s']:.0f} s)"
            )
    v = r["view_generation"]
    console.print(
        f"  two SimCLR views: batched {v['batched_images_per_s']:,.0f} images/s, lightly per-image "
        f"{v['lightly_images_per_s']:,.0f} images/s, ratio {v['ratio']:.1f}"
    )
    p = r["probes"]
    console.print(
        f"  feature extraction {p['feature_extract_images_per_s']:,.0f} images/s, linear probe fit "
        f"{p['linear_probe_fit_s']:.2f} s; peak memory {r['peak_memory_mb']:,.0f} MiB"
    )
    console.print(f"  written: {r['path']}")
    return 0


def cmd_server(args: argparse.Namespace, console: Console) -> int:
    import time

    from bench.cluster.server import Services

    services = Services(Path(args.dir), args.host, args.pg_port, args.port, args.workers)
    console.print(f"starting PostgreSQL and the MLflow server in {args.dir} ...", highlight=False)
    with services.running():
        console.print(services.describe(), highlight=False, soft_wrap=True)
        console.print("Ctrl-C stops both", highlight=False)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            console.print("stopping the MLflow server and PostgreSQL", highlight=False)
    return 0


def cmd_list(args: argparse.Namespace, console: Console) -> int:
    from bench.registry import DATASETS, ENCODERS, PROTOCOLS, TASKS

    def supported(task) -> list[str]:
        return [p for p in PROTOCOLS if task.evaluates_with(PROTOCOLS[p])]

    sections = {
        "tasks": {
            n: f"{t.summary} [dim]({t.reference}; protocols: {', '.join(supported(t))}"
            + (f"; images of at least {t.min_image_size} px" if t.min_image_size > 1 else "")
            + ")[/]"
            for n, t in TASKS.items()
        },
        "encoders": {n: e.summary for n, e in ENCODERS.items()},
        "datasets": {n: d.summary for n, d in DATASETS.items()},
        "protocols": {n: p.summary for n, p in PROTOCOLS.items()},
    }
    for title, rows in sections.items():
        table = Table(title=title, title_justify="left", show_header=False, box=None)
        for name, text in rows.items():
            table.add_row(f"[bold]{name}[/]", text)
        console.print(table)
    return 0


def cmd_identity(args: argparse.Namespace, console: Console) -> int:
    from bench.run import golden, identity

    if args.update:
        say = lambda name: console.print(f"  golden {name}", highlight=False)  # noqa: E731
        ok, lines = golden.update(say)
        for line in lines:
            console.print(("" if ok else "[red]refused[/]: ") + line, highlight=False, soft_wrap=True)
        if ok:
            console.print(f"recorded {identity.LOCK.name} and {golden.RECORD.name}", highlight=False)
        return 0 if ok else 1
    problems = identity.check_lock() + [
        f"module {m} is in no part of bench/run/identity.py and not in NOT_NUMERIC: add it to one"
        for m in identity.unclassified()
    ]
    for line in problems:
        console.print(f"[red]{line}[/]", highlight=False, soft_wrap=True)
    if not problems:
        console.print(f"{len(identity.read_lock())} parts; the lock agrees with the code", highlight=False)
    return 1 if problems else 0


def cmd_golden(args: argparse.Namespace, console: Console) -> int:
    from bench.run import golden

    elsewhere = golden.comparable()
    if elsewhere:
        console.print(f"[yellow]{elsewhere}[/]: nothing to compare bitwise on this machine", highlight=False)
        return 0
    only = set(args.case) if args.case else None
    known = set(golden.cases())
    if only and only - known:
        raise ConfigError(f"unknown golden case {sorted(only - known)[0]!r}; cases: {', '.join(sorted(known))}")
    found = golden.run(only, progress=lambda name: console.print(f"  {name}", highlight=False))
    recorded = {k: v for k, v in golden.read().items() if only is None or k in only}
    verdicts = golden.compare(found, recorded)
    for name, verdict in verdicts.items():
        style = "green" if verdict == "same" else "red"
        console.print(f"[{style}]{verdict:>10}[/]  {name}", highlight=False)
    bad = [n for n, v in verdicts.items() if v != "same"]
    if bad:
        console.print(
            f"[red]{len(bad)} of {len(verdicts)} golden cases differ from {golden.RECORD.name}[/]; "
            "`python -m bench identity --update` records them where a version moved, and refuses where none did",
            highlight=False,
        )
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a suite (skips every cell that already has a finished run)")
    run.add_argument("suite", help="suite file (TOML) or the name of one in suites/, e.g. suites/quick.toml, quick")
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a suite key, e.g. --set pretrain.epochs=5 --set 'seeds=[0]'",
    )
    run.add_argument("--dry-run", action="store_true", help="print the plan and what is already done; run nothing")
    run.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="when another invocation is running this suite, wait up to SECONDS for it (default: refuse at once)",
    )
    report = sub.add_parser("report", help="write results/<suite>/: tables, statistics, figures (from MLflow)")
    report.add_argument("suite", help="suite file (TOML) or the name of one in suites/")
    report.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="as for run")
    parity = sub.add_parser("parity", help="the suite on both data paths (device, lightly), compared by seed")
    parity.add_argument("suite", help="suite file (TOML), e.g. suites/parity.toml")
    parity.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="as for run")
    perf = sub.add_parser("perf", help="throughput: on-device data path vs lightly's reference pipeline")
    perf.add_argument(
        "--tasks",
        nargs="+",
        default=["simclr", "rotation"],
        help="tasks with a reference pipeline (default: simclr rotation)",
    )
    perf.add_argument("--encoder", default=None, help="default: resnet18_cifar on CUDA, small_cnn on CPU")
    perf.add_argument("--batch", type=int, default=None, help="default: 512 on CUDA, 64 on CPU")
    perf.add_argument("--steps", type=int, default=None, help="timed steps per path (default: 50 CUDA, 5 CPU)")
    perf.add_argument("--workers", type=int, default=2, help="DataLoader workers of the reference path")
    perf.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    perf.add_argument("--compile", action="store_true", help="also measure (b) with the encoder torch.compiled")
    perf.add_argument("--out", default="results/perf", help="folder for the JSON record")
    server = sub.add_parser("server", help="PostgreSQL and an MLflow server on it, for runs on a cluster")
    server.add_argument("--dir", default="results/server", help="PostgreSQL data, artifacts and logs")
    server.add_argument("--host", default="127.0.0.1", help="address to listen on (the cluster's network)")
    server.add_argument("--port", type=int, default=5000, help="MLflow server port")
    server.add_argument("--pg-port", type=int, default=5433, help="PostgreSQL port (5432 is Debian's own cluster)")
    server.add_argument("--workers", type=int, default=4, help="MLflow server worker processes")
    sub.add_parser("list", help="registered tasks, encoders, datasets and protocols")
    ident = sub.add_parser("identity", help="check that the code parts' digests agree with bench/run/identity.lock")
    ident.add_argument(
        "--update",
        action="store_true",
        help="run the golden check and record new digests and outputs (refused where outputs changed with no "
        "version bumped)",
    )
    gold = sub.add_parser(
        "golden", help="tiny deterministic runs of every part, compared bitwise with bench/run/golden.json"
    )
    gold.add_argument(
        "--case", action="append", default=[], help="run only this case (repeatable), e.g. pretrain/rotation"
    )
    args = parser.parse_args(argv)
    console = Console()
    commands = {"run": cmd_run, "report": cmd_report, "parity": cmd_parity, "perf": cmd_perf, "list": cmd_list}
    commands |= {"server": cmd_server, "identity": cmd_identity, "golden": cmd_golden}
    with interrupt_on_sigterm():
        return run_command(lambda: commands[args.command](args, console), console)


@contextlib.contextmanager
def interrupt_on_sigterm() -> Iterator[None]:
    """SIGTERM (a scheduler's stop, ``kill``) ends a run like Ctrl-C: its runs KILLED, resumable."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_command(command, console: Console) -> int:
    """Run a command; every error a user can meet (``bench.errors.UserError``) ends in one line and its kind's
    exit code: 2 for input to fix (the suite, the data, the store, the results folder), 3 when another
    invocation holds the suite, 1 when it took the suite over; 130 when interrupted. Anything else is a bug: one
    line, and its traceback in a file named there."""
    from bench.errors import UserError
    from bench.files import describe_environmental, is_environmental

    def fail(message: str, code: int) -> int:
        console.print(f"[red]error:[/] {message}", highlight=False, soft_wrap=True)
        return code

    try:
        return command()
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]; rerun to resume (finished cells are kept)", highlight=False)
        return 130
    except UserError as e:
        return fail(str(e), e.exit_code)
    except Exception as e:  # noqa: BLE001 - the last line of defence: no traceback on the console
        if is_environmental(e):
            return fail(describe_environmental(e), 2)
        import mlflow

        from bench.store.client import store_failure

        failure = store_failure(e, mlflow.get_tracking_uri())
        if failure is not None:
            return fail(str(failure), failure.exit_code)
        first = (str(e).strip().splitlines() or [""])[0][:300]
        log = Path(tempfile.gettempdir()) / f"bench-error-{os.getpid()}.txt"
        try:
            log.write_text("".join(traceback.format_exception(e)))
            where = f"the traceback is in {log}"
        except OSError:
            where = "rerun with python -X dev -m bench ... to see where"
        return fail(f"{type(e).__name__}: {first} (unexpected; {where})", 1)


if __name__ == "__main__":
    sys.exit(main())
