"""What the cluster path costs beyond the cells themselves, measured in one invocation:
``python -m bench.cluster.overhead [--out results/cluster/overhead.json]``.

- Dispatch: the smoke suite's cells in this process and as Ray tasks on a local Ray instance, alternately, each
  into a fresh sqlite store, with the same torch threads and one task at a time (so the cells compute the same
  thing at the same speed); the difference per cell is Ray's dispatch, a worker's setup and the worker's own
  store connection. Ray's start is timed apart.
- Tracking server: metric writes per second to an MLflow server on PostgreSQL (``bench.cluster.server``), from 1
  and from 8 client threads, each write one REST call, as a pretraining epoch makes.
- PostgreSQL connections the server and one Optuna client hold while working.
Services run on 127.0.0.1 (run it inside ``unshare -n`` when Ray must not see other interfaces).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import threading
import time
from pathlib import Path

from rich.console import Console

from bench.config.load import load_suite

SMOKE = Path(__file__).resolve().parents[2] / "suites" / "smoke.toml"


def cell_wall(backend: str, folder: Path, threads: int) -> tuple[float, int, int]:
    """Seconds spent running the smoke suite's cells (no report), how many cells ran, and in how many Ray tasks
    (one per pretraining cell, one per evaluation group)."""
    from bench.cluster.executor import RayExecutor
    from bench.run.runner import Runner

    sets = [f"results_dir='{folder}'", f"tracking_uri='sqlite:///{folder}/mlflow.db'", f"execution.threads={threads}"]
    sets += [f"execution.pretrain.cpus={threads}", f"execution.evaluate.cpus={threads}"]
    suite = load_suite(SMOKE, sets)
    runner = Runner(suite, SMOKE, Console(quiet=True), RayExecutor() if backend == "ray" else None)
    start = time.perf_counter()
    outcome = runner.run(report=False)
    wall = time.perf_counter() - start
    assert not outcome.failed, outcome.failed
    groups = {(c.task, c.seed) for c in runner.cells if c.kind == "eval"}
    return wall, outcome.ran, len(groups) + sum(c.kind == "pretrain" for c in runner.cells)


def dispatch(repeats: int, threads: int) -> dict:
    import ray
    import torch

    torch.set_num_threads(threads)
    start = time.perf_counter()
    ray.init(num_cpus=threads, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    ray_start = time.perf_counter() - start
    walls: dict[str, list[float]] = {"local": [], "ray": []}
    cells = tasks = 0
    try:
        for i in range(repeats):
            for backend in ("local", "ray") if i % 2 == 0 else ("ray", "local"):
                with tempfile.TemporaryDirectory() as d:
                    wall, cells, tasks = cell_wall(backend, Path(d), threads)
                walls[backend].append(wall)
                print(f"  {backend}: {cells} cells in {wall:.1f} s")
    finally:
        ray.shutdown()
    local, remote = min(walls["local"]), min(walls["ray"])  # the fastest of each: the least disturbed
    return {
        "suite": "smoke",
        "cells": cells,
        "ray_tasks": tasks,
        "threads": threads,
        "ray_start_s": round(ray_start, 2),
        "local_s": [round(w, 2) for w in walls["local"]],
        "ray_s": [round(w, 2) for w in walls["ray"]],
        "overhead_per_cell_s": round((remote - local) / cells, 3),
        "overhead_per_task_s": round((remote - local) / tasks, 3),
        "median_overhead_per_cell_s": round(
            (statistics.median(walls["ray"]) - statistics.median(walls["local"])) / cells, 3
        ),
        "ratio_ray_over_local": round(remote / local, 3),
    }


def _write(uri: str, run_id: str, counts: list[int], i: int, stop: float) -> None:
    """One client writing one metric at a time until ``stop``; counts its writes in ``counts[i]``."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    while time.monotonic() < stop:
        client.log_metric(run_id, "train_loss", 1.0 / (counts[i] + 1), step=counts[i])
        counts[i] += 1


def server_writes(services, seconds: float = 10.0) -> dict:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(services.tracking_uri)
    experiment = client.create_experiment("overhead")
    out = {}
    for n in (1, 8):
        runs = [client.create_run(experiment).info.run_id for _ in range(n)]
        counts = [0] * n
        stop = time.monotonic() + seconds
        workers = [
            threading.Thread(target=_write, args=(services.tracking_uri, run, counts, i, stop))
            for i, run in enumerate(runs)
        ]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        out[f"{n}_clients_writes_per_s"] = round(sum(counts) / seconds, 1)
        print(f"  {n} client(s): {sum(counts) / seconds:,.0f} metric writes/s")
    return out


def connections(services) -> dict:
    import optuna
    import sqlalchemy

    engine = sqlalchemy.create_engine(services.postgres.url("postgres"), poolclass=sqlalchemy.pool.NullPool)
    study = optuna.create_study(storage=services.optuna_url)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    with engine.connect() as c:
        rows = c.execute(sqlalchemy.text("SELECT datname, count(*) FROM pg_stat_activity GROUP BY datname")).all()
        limit = c.execute(sqlalchemy.text("SHOW max_connections")).scalar()
    held = {str(name): int(n) for name, n in rows if name}
    print(f"  connections held: {held} (max_connections {limit})")
    return {"held": held, "max_connections": int(limit)}


def describe(record: dict) -> str:
    """The record as a short Markdown list (for the README)."""
    d, t, pg = record["dispatch"], record["tracking_server"], record["postgres"]
    return (
        f"- Dispatch, smoke suite ({d['cells']} cells in {d['ray_tasks']} Ray tasks, {d['threads']} threads, one "
        f"task at a time), fastest of {len(d['local_s'])} runs each: local {min(d['local_s']):.1f} s, Ray "
        f"{min(d['ray_s']):.1f} s (all runs: local {', '.join(map(str, d['local_s']))}; Ray "
        f"{', '.join(map(str, d['ray_s']))}). Overhead {d['overhead_per_cell_s']:.2f} s per cell, "
        f"{d['overhead_per_task_s']:.2f} s per Ray task (medians: {d['median_overhead_per_cell_s']:.2f} s per "
        f"cell); starting Ray itself {d['ray_start_s']:.1f} s.\n"
        f"- MLflow server on PostgreSQL, one metric per REST call: {t['1_clients_writes_per_s']:.0f} writes/s "
        f"from 1 client, {t['8_clients_writes_per_s']:.0f} writes/s from 8.\n"
        f"- PostgreSQL connections held: {', '.join(f'{k} {v}' for k, v in pg['held'].items())} "
        f"(max_connections {pg['max_connections']}).\n"
    )


def main(argv: list[str] | None = None) -> int:
    from bench.cluster.server import Services, free_port

    parser = argparse.ArgumentParser(prog="python -m bench.cluster.overhead", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2, help="runs of each backend (the fastest counts)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--out", default="results/cluster/overhead.json")
    args = parser.parse_args(argv)
    record: dict = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"}
    print("dispatch (smoke suite, local vs Ray):")
    record["dispatch"] = dispatch(args.repeats, args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as d:
        services = Services(Path(d), pg_port=free_port(), port=free_port(), workers=4)
        with services.running():
            print("MLflow server on PostgreSQL:")
            record["tracking_server"] = server_writes(services)
            record["postgres"] = connections(services)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    out.with_suffix(".md").write_text(describe(record))
    print(f"written: {out} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
