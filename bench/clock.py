"""When long work says how far it got: at most one progress line per ``progress_every_s()`` seconds (30, or
``$BENCH_PROGRESS_EVERY_S``), so a long epoch or tuning trial is never silent and a short one prints nothing extra."""

from __future__ import annotations

import os
import time


def progress_every_s() -> float:
    return float(os.environ.get("BENCH_PROGRESS_EVERY_S", "30"))


class Every:
    """``due()`` is true at most once per ``seconds`` (first after ``seconds`` have passed since creation)."""

    def __init__(self, seconds: float | None = None) -> None:
        self.seconds, self.start = progress_every_s() if seconds is None else seconds, time.perf_counter()
        self.last = self.start

    def due(self) -> bool:
        now = time.perf_counter()
        if now - self.last < self.seconds:
            return False
        self.last = now
        return True

    def elapsed(self) -> float:
        return time.perf_counter() - self.start
