"""Command line: ``python -m bench COMMAND`` (also installed as ``bench``); ``bench --help`` lists the commands."""

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
from rich.markup import escape

from bench.commands import (
    cmd_check_task,
    cmd_curve,
    cmd_export,
    cmd_golden,
    cmd_identity,
    cmd_list,
    cmd_parity,
    cmd_perf,
    cmd_plan,
    cmd_report,
    cmd_run,
    cmd_server,
    cmd_ui,
)


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
    run.add_argument("--verbose", action="store_true", help="with --dry-run: every cell with its key and state")
    run.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="when another invocation is running this suite, wait up to SECONDS for it (default: refuse at once)",
    )
    report = sub.add_parser("report", help="write <results_dir>/<suite>/: tables, statistics, figures (from MLflow)")
    report.add_argument("suite", help="suite file (TOML) or the name of one in suites/")
    report.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="as for run")
    report.add_argument(
        "--from-csv", default=None, metavar="RUNS_CSV", help="lay out a report's runs.csv again, without the store"
    )
    plan = sub.add_parser(
        "plan", help="how many seeds and label draws an effect needs, and their cost, from a pilot's runs"
    )
    plan.add_argument("suite", help="suite file (TOML) or the name of one in suites/: the pilot's runs")
    plan.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="as for run")
    plan.add_argument("--effect", type=float, default=2.0, help="the gain to find, in accuracy points (default 2)")
    plan.add_argument("--protocol", default=None, help="default: finetune when the suite has it")
    plan.add_argument("--power", type=float, default=0.8, help="target probability of finding it (default 0.8)")
    plan.add_argument("--hours", type=float, default=None, help="the most wall hours the design may take")
    plan.add_argument(
        "--pretrain-epochs",
        type=int,
        default=None,
        help="cost pretraining at this many epochs instead of the pilot's (its seconds scale with the steps)",
    )
    plan.add_argument("--seeds", default="3-10", help="pretraining seeds to consider (default 3-10)")
    plan.add_argument("--draws", default="1-8", help="label draws to consider (default 1-8)")
    plan.add_argument(
        "--sd", default=None, metavar="seed=X,draw=Y,residual=Z", help="state the spreads (points) instead"
    )
    curve = sub.add_parser("curve", help="the frozen probe's accuracy against pretraining length, one seed")
    curve.add_argument("suite", help="suite file (TOML) or the name of one in suites/")
    curve.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="as for run")
    curve.add_argument("--epochs", default="1,2,4,8", help="pretraining lengths, comma-separated (default 1,2,4,8)")
    curve.add_argument("--budget", default="1000", help="labels of the probe (default 1000)")
    curve.add_argument("--protocol", default="linear", help="a frozen protocol (default linear)")
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
    ui = sub.add_parser("ui", help="serve the MLflow UI on the store a suite ran into; prints its runs' address")
    ui.add_argument("suite", nargs="?", default=None, help="suite file or name (default: every suite in the store)")
    ui.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="as for run (results_dir=...)")
    ui.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1)")
    ui.add_argument("--port", type=int, default=5000, help="port to serve on (default 5000)")
    sub.add_parser("list", help="registered tasks, encoders, datasets and protocols, your plug-ins included")
    exp = sub.add_parser("export", help="write a finished (task, seed) encoder's weights and how to load them")
    exp.add_argument("suite", help="the suite file (or the name of one in suites/)")
    exp.add_argument("--task", required=True, help="the task whose encoder to export")
    exp.add_argument("--seed", type=int, required=True, help="its pretraining seed")
    exp.add_argument("--out", default=None, help="folder (default <results_dir>/<suite>/export/<task>-s<seed>/)")
    exp.add_argument("--mlflow", action="store_true", help="also log it as an MLflow model and register it")
    exp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a suite key")
    check = sub.add_parser("check-task", help="run the task contract on a task, yours included, in seconds")
    check.add_argument("task", help="a registered task's name, or your class as 'module:Class'")
    check.add_argument(
        "--encoder", default=None, help="the shared encoder to check on (default small_cnn, vit_tiny for ViT tasks)"
    )
    check.add_argument("--size", type=int, default=None, help="image side in px (default 32, or the task's minimum)")
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
    commands |= {
        "server": cmd_server,
        "identity": cmd_identity,
        "golden": cmd_golden,
        "plan": cmd_plan,
        "curve": cmd_curve,
        "check-task": cmd_check_task,
        "export": cmd_export,
        "ui": cmd_ui,
    }
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
        console.print(f"[red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
        return code

    try:
        return command()
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]; rerun to resume (finished cells are kept)", highlight=False)
        return 130
    except UserError as e:
        return fail(str(e), e.exit_code)
    except Exception as e:  # noqa: BLE001 - the last line of defence: no traceback on the console
        import mlflow

        if is_environmental(e):
            return fail(describe_environmental(e, mlflow.get_tracking_uri()), 2)

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
