"""What a pretraining prints as it goes: a line per epoch, and within a long epoch a line every
``bench.clock.progress_every_s()`` seconds with the steps done and the time the epoch still needs."""

from __future__ import annotations

from collections.abc import Callable

from bench.clock import Every
from bench.train.loop import EpochStats


class PretrainProgress:
    def __init__(self, say: Callable[[str], None], who: str, epochs: int) -> None:
        self.say, self.who, self.epochs = say, who, epochs
        self.every: Every | None = None

    def epoch(self, s: EpochStats) -> None:
        self.say(
            f"{self.who} epoch {s.epoch}/{self.epochs}  loss {s.loss:.4f}  {s.images_per_s:,.0f} img/s  "
            f"{s.seconds:.1f} s"
        )
        self.every = None

    def step(self, epoch: int, step: int, steps: int) -> None:
        if self.every is None or step == 1:
            self.every = Every()
        if self.every.due() and step < steps:
            left = self.every.elapsed() / step * (steps - step)
            self.say(
                f"{self.who} epoch {epoch}/{self.epochs}: step {step}/{steps} in {self.every.elapsed():.0f} s, "
                f"about {left:.0f} s left in the epoch"
            )
