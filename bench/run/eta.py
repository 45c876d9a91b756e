"""How long the cells still to run will take, from measured cell times: the finished runs of the suite in the store
(under any key: a cell of an earlier setting or commit costs about what it costs now), then the cells this
invocation finishes. A cell without a measurement of its own kind takes the mean of the nearest coarser group
(another task's cell at the same protocol and budget, then any budget); a tuned cell's time includes its trials."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable

from rich.progress import ProgressColumn, Task
from rich.text import Text

from bench.cell import Cell


def groups(kind: str, task: str, protocol: str | None, budget) -> list[tuple]:
    """A cell's groups, finest first."""
    if kind == "pretrain":
        return [("pretrain", task), ("pretrain",)]
    return [("eval", task, protocol, str(budget)), ("eval", protocol, str(budget)), ("eval", protocol), ("eval",)]


def duration(seconds: float) -> str:
    """'45 s', '12 min', '2.5 h'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class CellTimes:
    def __init__(self) -> None:
        self.seconds: dict[tuple, list[float]] = defaultdict(list)
        self.measured = 0

    @classmethod
    def from_runs(cls, runs: Iterable, trials: Iterable = ()) -> CellTimes:
        """From FINISHED cell runs (tags kind, task, protocol, budget, seed, draw) and tuning trial runs (the same
        tags): a cell's time is its run's span plus its study's trials."""
        studies: dict[tuple, float] = defaultdict(float)
        for r in trials:
            t = r.data.tags
            studies[(t.get("task"), t.get("protocol"), t.get("budget"), t.get("seed"), t.get("draw"))] += span(r)
        times = cls()
        for r in runs:
            t = r.data.tags
            if t.get("kind") not in ("pretrain", "eval") or not r.info.end_time:
                continue
            study = studies.get((t.get("task"), t.get("protocol"), t.get("budget"), t.get("seed"), t.get("draw")), 0)
            tuned = t.get("hp_source") == "tuned"
            times.add(
                t["kind"], t.get("task", ""), t.get("protocol"), t.get("budget"), span(r) + (study if tuned else 0)
            )
        return times

    def add(self, kind: str, task: str, protocol: str | None, budget, seconds: float) -> None:
        for group in groups(kind, task, protocol, budget):
            self.seconds[group].append(seconds)
        self.measured += 1

    def add_cell(self, cell: Cell, seconds: float) -> None:
        self.add(cell.kind, cell.task, cell.protocol, cell.budget, seconds)

    def estimate(self, cell: Cell) -> float | None:
        for group in groups(cell.kind, cell.task, cell.protocol, cell.budget):
            if self.seconds.get(group):
                values = self.seconds[group]
                return sum(values) / len(values)
        return None

    def remaining(self, cells: list[Cell]) -> tuple[float, int]:
        """Seconds the cells need by their estimates, and how many have none."""
        found = [self.estimate(c) for c in cells]
        return sum(f for f in found if f is not None), sum(f is None for f in found)


def span(run) -> float:
    return max(0.0, ((run.info.end_time or run.info.start_time) - run.info.start_time) / 1000)


def estimate_line(times: CellTimes, todo: list[Cell]) -> str:
    """The dry run's line on how long the cells to run will take."""
    if not todo:
        return "nothing to run"
    left, unknown = times.remaining(todo)
    if unknown == len(todo):
        return (
            "no time estimate yet: no cell of these kinds is measured in the store; the run's progress bar "
            "estimates from its first cells"
        )
    untimed = f"; {unknown} of the {len(todo)} cells have no measured kind yet" if unknown else ""
    counted = f"from {times.measured} measured runs{untimed}"
    return f"estimate: about {duration(left)} for the {len(todo)} cells to run, {counted}"


class EtaColumn(ProgressColumn):
    """'about 12 min left' beside the progress bar: the estimates of the cells not yet done (``order``, as they
    run), less the time the current one has taken; each finished cell's time refines the estimates."""

    def __init__(self, times: CellTimes, order: list[Cell]) -> None:
        super().__init__()
        self.times, self.order = times, order
        self.done, self.since = 0, time.monotonic()

    def render(self, task: Task) -> Text:
        now, done = time.monotonic(), int(task.completed)
        if done > self.done:
            if done == self.done + 1 and self.done < len(self.order):  # one cell finished (not a skipped group)
                self.times.add_cell(self.order[self.done], now - self.since)
            self.done, self.since = done, now
        rest = self.order[done:]
        if not rest:
            return Text("")
        left, unknown = self.times.remaining(rest)
        if unknown == len(rest):
            return Text("ETA after the first cell", style="dim")
        current = self.times.estimate(rest[0]) or 0.0
        left -= min(now - self.since, current)
        more = f" + {unknown} untimed" if unknown else ""
        return Text(f"about {duration(left)} left{more}", style="cyan")
