"""A cell: one unit of work (a pretraining, or one evaluation), with the deterministic key of everything that
decides its result (``bench.run.plan`` makes them), and the tags a run of it carries in MLflow."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field


def plan_digest(cells) -> str:
    """The identity of a plan: a digest of its cells' keys (in no order). A suite run is tagged with it, so a
    report finds the record of the invocation whose cells it reports."""
    return hashlib.sha256(json.dumps(sorted({c.key for c in cells})).encode()).hexdigest()[:16]


def label_draw(seed: int, draw: int | None) -> int:
    """The seed a cell's labels are drawn with: its draw, else its own seed."""
    return seed if draw is None else draw


def eval_seed(seed: int, draw: int | None) -> int:
    """The seed of a protocol's own randomness (initialisation, batch order, its hold-out): the seed without
    draws; with a draw, one of its own for every (seed, draw), so that this noise is the residual of the variance
    components and part of neither the pretraining's nor the draw's."""
    return seed if draw is None else 1_000_003 * (seed + 1) + draw


@dataclass(frozen=True)
class Cell:
    kind: str  # "pretrain" or "eval"
    task: str
    seed: int
    key: str
    source: str  # key of the encoder the cell starts from (a pretraining cell's own key, or the random init)
    budget: int | str | None = None
    protocol: str | None = None
    draw: int | None = None  # the label draw (suite ``draws``); None: the seed's own draw
    config_key: str = ""  # the key without parts, environment and data: the same experiment elsewhere
    # {"parts": {part: version}, "environment": {...}, "data": digest}: what besides the config the key holds
    identity: dict = field(default_factory=dict, compare=False)

    @property
    def label(self) -> str:
        if self.kind == "pretrain":
            return f"pretrain {self.task} seed={self.seed}"
        draw = "" if self.draw is None else f" draw={self.draw}"
        return f"{self.task}+{self.protocol} budget={self.budget} seed={self.seed}{draw}"

    @property
    def label_draw(self) -> int:
        return label_draw(self.seed, self.draw)

    @property
    def eval_seed(self) -> int:
        return eval_seed(self.seed, self.draw)

    def tags(self) -> dict[str, str]:
        tags = {"kind": self.kind, "task": self.task, "seed": str(self.seed), "cell_key": self.key}
        tags |= {"source_key": self.source, "config_key": self.config_key}
        tags["data_identity"] = self.identity.get("data", "")
        tags["parts"] = json.dumps(self.identity.get("parts", {}), sort_keys=True)
        tags["environment"] = json.dumps(self.identity.get("environment", {}), sort_keys=True)
        if self.kind == "eval":
            tags |= {"budget": str(self.budget), "protocol": str(self.protocol)}
            if self.draw is not None:
                tags["draw"] = str(self.draw)
        return tags
