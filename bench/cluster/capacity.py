"""How long a suite takes on N workers, from the measured costs of its cells: ``python -m bench.cluster.capacity SUITE
--workers 1 8 64``.

The units are the Ray tasks of ``bench.cluster``: one per pretraining cell, one per evaluation group (every
protocol and budget of a (task, seed), run after its pretraining). A unit's cost is what its runs in the store
measured (``wall_s`` of the pretraining; the evaluations' ``wall_s`` plus one feature extraction); a unit
without a finished run takes the mean cost of its task's measured units of the same kind (seeds cost alike).
The schedule is greedy list scheduling, longest remaining path first, on identical workers, without dispatch
overhead or tuning (measure those separately); its wall time on enough workers is the critical path, the
longest pretraining plus its evaluation group.
"""

from __future__ import annotations

import argparse
import heapq
import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from mlflow.entities import Run

from bench.cell import Cell
from bench.config.load import load_suite


@dataclass(frozen=True)
class Unit:
    name: str
    cost: float
    after: str | None  # the unit that must finish first


def units_from_runs(cells: list[Cell], finished: dict[str, Run]) -> list[Unit]:
    """Units of a plan with their measured costs (``finished``: cell key -> FINISHED run)."""
    pre: dict[tuple, float] = {}
    evals: dict[tuple, float] = defaultdict(float)
    features: dict[tuple, float] = {}
    for c in cells:
        run = finished.get(c.key)
        if run is None:
            continue
        m = run.data.metrics
        if c.kind == "pretrain":
            pre[(c.task, c.seed)] = m.get("wall_s", 0.0)
        else:
            evals[(c.task, c.seed)] += m.get("wall_s", 0.0)
            if "feature_extract_s" in m:
                features[(c.task, c.seed)] = m["feature_extract_s"]
    for group, seconds in features.items():
        evals[group] += seconds

    def mean_of(measured: dict, task: str) -> float | None:
        values = [v for (t, _), v in measured.items() if t == task]
        return sum(values) / len(values) if values else None

    units = []
    for task, seed in dict.fromkeys((c.task, c.seed) for c in cells):
        kinds = {c.kind for c in cells if (c.task, c.seed) == (task, seed)}
        before = None
        if "pretrain" in kinds:
            cost = pre.get((task, seed), mean_of(pre, task))
            if cost is None:
                raise ValueError(f"no measured pretraining of {task} in the store")
            before = f"pretrain {task} s{seed}"
            units.append(Unit(before, cost, None))
        if "eval" in kinds:
            cost = evals.get((task, seed), mean_of(evals, task))
            if cost is None:
                raise ValueError(f"no measured evaluation of {task} in the store")
            units.append(Unit(f"evaluate {task} s{seed}", cost, before))
    return units


def critical_path(units: list[Unit]) -> float:
    by_name = {u.name: u for u in units}
    return max(u.cost + (by_name[u.after].cost if u.after else 0.0) for u in units)


def schedule(units: list[Unit], workers: int) -> float:
    """Wall time of greedy list scheduling on ``workers`` identical workers, longest remaining path first."""
    tail = {u.name: u.cost for u in units}  # the longest path from a unit's start to the end
    for u in units:
        if u.after:
            tail[u.after] = max(tail[u.after], next(x.cost for x in units if x.name == u.after) + u.cost)
    waiting = {u.name: u for u in units if u.after}
    ready = [(-tail[u.name], u.name, u.cost) for u in units if not u.after]
    heapq.heapify(ready)
    running: list[tuple[float, str]] = []
    now, free = 0.0, workers
    while ready or running:
        while free and ready:
            _, name, cost = heapq.heappop(ready)
            heapq.heappush(running, (now + cost, name))
            free -= 1
        now, name = heapq.heappop(running)
        free += 1
        for w in [w for w in waiting.values() if w.after == name]:
            del waiting[w.name]
            heapq.heappush(ready, (-tail[w.name], w.name, w.cost))
    return now


def describe(estimate: dict) -> str:
    """The estimate as a Markdown table (for the README)."""
    work = estimate["work_s"]
    rows = [f"| {n} | {wall:,.0f} s | {work / wall:.1f}x |" for n, wall in estimate["wall_s"].items()]
    return "\n".join(
        [
            f"| workers | wall time ({estimate['suite']}) | speed-up |",
            "|---:|---:|---:|",
            *rows,
            "",
            f"{estimate['units']} Ray tasks, {work:,.0f} s of work, "
            f"critical path {estimate['critical_path_s']:,.0f} s; "
            f"at most {estimate['most_useful_workers']} workers are busy at once (one per task and seed).",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    from bench.run.runner import Runner

    parser = argparse.ArgumentParser(prog="python -m bench.cluster.capacity", description=__doc__.split("\n\n")[0])
    parser.add_argument("suite", help="suite file whose cells to schedule")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="as for bench run")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--json", help="also write the estimate here")
    args = parser.parse_args(argv)
    runner = Runner(load_suite(args.suite, args.set), args.suite)
    units = units_from_runs(runner.cells, runner.tracker.finished())
    total = sum(u.cost for u in units)
    out = {
        "suite": runner.suite.name,
        "units": len(units),
        "work_s": round(total, 1),
        "critical_path_s": round(critical_path(units), 1),
        "most_useful_workers": sum(1 for u in units if not u.after),
        "wall_s": {str(n): round(schedule(units, n), 1) for n in args.workers},
    }
    for n, wall in out["wall_s"].items():
        print(f"{n:>4} workers: {wall:,.0f} s  (speed-up {total / wall:.1f}x)")
    print(f"work {total:,.0f} s in {len(units)} units; critical path {out['critical_path_s']:,.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
        with open(Path(args.json).with_suffix(".md"), "w") as f:
            f.write(describe(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
