"""What each ``bench`` command does (``bench.cli`` parses the command line and reports errors). Each imports what
it needs when it runs, so ``bench --help`` stays light."""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

from rich.console import Console
from rich.markup import escape
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


def shell_word(text: str) -> str:
    """``text`` quoted for a shell, readably: ``"results_dir='/x'"`` rather than shlex's ``'results_dir='"'"'...``."""
    return f'"{text}"' if "'" in text and not re.search(r'["$`\\!]', text) else shlex.quote(text)


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    from bench.config import load_suite
    from bench.run.runner import Runner

    path = suite_file(args.suite)
    suite = load_suite(path, args.set)
    executor = None  # the runner's default: every cell in this process
    if suite.execution.backend == "ray":
        from bench.cluster.executor import RayExecutor

        executor = RayExecutor()
    runner = Runner(suite, path, console, executor)
    where = [s for s in args.set if s.partition("=")[0].strip() in ("results_dir", "tracking_uri")]
    runner.ui_command += "".join(f" --set {shell_word(s)}" for s in where)  # the store this run used
    outcome = runner.run(dry_run=args.dry_run, wait_s=args.wait, verbose=args.verbose)
    if outcome.failed:
        console.print(f"[red]finished with {len(outcome.failed)} failed cell(s); rerun to retry them[/]")
        return 1
    return 0


def cmd_report(args: argparse.Namespace, console: Console) -> int:
    from bench.config import load_suite
    from bench.run.runner import Runner

    path = suite_file(args.suite)
    if args.from_csv:
        from bench.report.publish import from_runs_csv

        from_runs_csv(Path(args.from_csv), load_suite(path, args.set), console)
        return 0
    Runner(load_suite(path, args.set), path, console).report()
    return 0


def cmd_parity(args: argparse.Namespace, console: Console) -> int:
    from bench.tools.parity import run_parity

    run_parity(args.suite, args.set, console)
    return 0


def cmd_perf(args: argparse.Namespace, console: Console) -> int:
    from pathlib import Path

    from bench.run.runner import resolve_device
    from bench.tools.perf import run_perf, summary

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
    for line in summary(r):
        console.print(line)
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


def cmd_ui(args: argparse.Namespace, console: Console) -> int:
    from bench.config.load import store_uri, suite_store
    from bench.tools.serve import open_ui

    found = suite_store(suite_file(args.suite), args.set) if args.suite else (None, store_uri(None, "results"), "")
    return open_ui(*found, args.host, args.port, say=lambda text: console.print(text, highlight=False, soft_wrap=True))


def cmd_list(args: argparse.Namespace, console: Console) -> int:
    from bench.errors import PluginError
    from bench.registry import DATASETS, ENCODERS, PROTOCOLS, TASKS

    def task_line(t) -> str:
        protocols = ", ".join(p for p in PROTOCOLS if t.evaluates_with(PROTOCOLS[p]))
        size = f"; images of at least {t.min_image_size} px" if t.min_image_size > 1 else ""
        size += "" if {"cnn", "vit"} <= set(t.encoder_kinds) else f"; {' or '.join(t.encoder_kinds)} encoders only"
        return f"{escape(t.summary)} [dim]({escape(t.reference)}; protocols: {protocols}{size})[/]"

    describe = {
        "tasks": (TASKS, task_line),
        "encoders": (ENCODERS, lambda e: escape(e.summary)),
        "datasets": (DATASETS, lambda d: escape(d.summary)),
        "protocols": (PROTOCOLS, lambda p: escape(p.summary)),
    }
    for title, (registry, line) in describe.items():
        table = Table(title=title, title_justify="left", show_header=False, box=None)
        for name in registry.names():
            origin = f" [cyan](plug-in: {registry.module_of(name)})[/]" if registry.is_plugin(name) else ""
            try:
                text = line(registry[name]) + origin
            except PluginError as e:  # a broken plug-in is listed with its problem; the others still are
                text = f"[red]cannot be loaded:[/] {escape(str(e))}"
            table.add_row(f"[bold]{escape(name)}[/]", text)
        console.print(table)
    return 0


def cmd_check_task(args: argparse.Namespace, console: Console) -> int:
    from bench.tools.contract import report_contract

    return report_contract(args.task, args.encoder, args.size, console)


def cmd_export(args: argparse.Namespace, console: Console) -> int:
    from bench.tools.export import export

    export(suite_file(args.suite), args.set, args.task, args.seed, args.out and Path(args.out), args.mlflow, console)
    return 0


def cmd_identity(args: argparse.Namespace, console: Console) -> int:
    from bench.run import golden, identity, lock

    if args.update:
        say = lambda name: console.print(f"  golden {name}", highlight=False)  # noqa: E731
        ok, lines = golden.update(say)
        for line in lines:
            console.print(("" if ok else "[red]refused[/]: ") + line, highlight=False, soft_wrap=True)
        if ok:
            console.print(f"recorded {lock.LOCK.name} and {golden.RECORD.name}", highlight=False)
        return 0 if ok else 1
    problems = lock.check_lock() + [
        f"module {m} is in no part of bench/run/identity.py and not in NOT_NUMERIC: add it to one"
        for m in identity.unclassified()
    ]
    for line in problems:
        console.print(f"[red]{line}[/]", highlight=False, soft_wrap=True)
    if not problems:
        console.print(f"{len(lock.read_lock())} parts; the lock agrees with the code", highlight=False)
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


def _span(text: str, key: str) -> range:
    """'3-10' (or '5') as a range; a ConfigError naming the option otherwise."""
    m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", text)
    if not m or int(m.group(2) or m.group(1)) < int(m.group(1)):
        raise ConfigError(f"--{key} {text!r}: give a count or a span such as 3-10")
    return range(int(m.group(1)), int(m.group(2) or m.group(1)) + 1)


def cmd_plan(args: argparse.Namespace, console: Console) -> int:
    from bench.config import load_suite
    from bench.registry import TASKS
    from bench.report import planning
    from bench.report.tidy import by_seed, tidy
    from bench.run.plan import task_protocols
    from bench.run.runner import Runner

    path = suite_file(args.suite)
    suite = load_suite(path, args.set)
    protocol = args.protocol or ("finetune" if "finetune" in suite.protocols else suite.protocols[0])
    if protocol not in suite.protocols:
        raise ConfigError(f"--protocol {protocol!r}: the suite's protocols are {', '.join(suite.protocols)}")
    family = sum(1 for t in suite.selected_tasks() if TASKS[t].pretrains and protocol in task_protocols(suite, t))
    seeds, draws = _span(args.seeds, "seeds"), _span(args.draws, "draws")
    runner = Runner(suite, path, console)
    df = tidy(runner.tracker, runner.cells)
    costs = None
    if args.sd:
        given = dict(part.split("=", 1) for part in args.sd.split(","))
        unknown = set(given) - {"seed", "draw", "residual"}
        if unknown:
            raise ConfigError(f"--sd: unknown component {sorted(unknown)[0]!r}; give seed=, draw= and residual=")
        spread = planning.Spread(*(float(given.get(n, 0)) / 100 for n in ("seed", "draw", "residual")))
        spreads, source = {str(b): spread for b in suite.budgets}, "as stated"
    else:
        if df.empty or (df.status == "finished").sum() == 0:
            raise ConfigError(
                f"suite {suite.name!r} has no finished runs to plan from in {runner.tracker.uri}; run a pilot "
                "(e.g. --set 'seeds=[0, 1]' --set 'draws=[0, 1]') or state the spreads with --sd"
            )
        spreads, source = planning.difference_spreads(df, protocol), f"from the pilot's {len(by_seed(df))} cells"
        if not spreads:
            raise ConfigError(f"the pilot has no {protocol} task with its baseline at 2 seeds or more; run more")
    estimated: list[str] = []
    if not df.empty and (df.status == "finished").any():
        kinds = {(r.task, r.protocol, str(r.budget)) for r in df.itertuples()}
        pretrainers = {t for t in suite.selected_tasks() if TASKS[t].pretrains}
        pretrain, evals, estimated = planning.suite_costs(kinds, pretrainers, planning.cell_seconds(runner.tracker, df))
        if args.pretrain_epochs and (suite.pretrain.steps or suite.pretrain.images or not suite.pretrain.epochs):
            raise ConfigError("--pretrain-epochs: the pilot's pretraining is not set by pretrain.epochs")
        if args.pretrain_epochs:
            scale = args.pretrain_epochs / suite.pretrain.epochs
            pretrain = {t: s * scale for t, s in pretrain.items()}
            estimated.append(
                f"pretraining at {args.pretrain_epochs} epochs: the pilot's {suite.pretrain.epochs} x {scale:g}"
            )
        costs = (pretrain, evals)
    table = planning.plan_table(spreads, args.effect / 100, family, 0.05, costs, seeds, draws, args.power)
    table = planning.compact(table)
    chosen = planning.choose(table, args.hours)
    context = {"suite": suite.name, "protocol": protocol, "delta": args.effect / 100, "alpha": 0.05}
    context |= {"family": family, "target": args.power, "source": source, "hours": args.hours}
    context["estimated"] = estimated
    text = planning.plan_markdown(table, spreads, context, chosen)
    console.print(text, markup=False, highlight=False)
    out = Path(suite.results_dir) / suite.name / "plan.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    console.print(f"plan: {out}")
    return 0


def cmd_curve(args: argparse.Namespace, console: Console) -> int:
    from bench.tools.curve import run_curve

    epochs = [int(e) for e in args.epochs.split(",") if e.strip()]
    if not epochs or min(epochs) < 1:
        raise ConfigError(f"--epochs {args.epochs!r}: give pretraining lengths such as 1,2,4,8")
    budget = "full" if args.budget == "full" else int(args.budget)
    run_curve(suite_file(args.suite), args.set, epochs, budget, args.protocol, console)
    return 0
