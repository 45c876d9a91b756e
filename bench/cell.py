"""A cell: one unit of work (a pretraining, or one evaluation), with the deterministic key of everything that
decides its result (``bench.run.plan`` makes them), and the tags a run of it carries in MLflow."""

from __future__ import annotations

import json
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Cell:
    kind: str  # "pretrain" or "eval"
    task: str
    seed: int
    key: str
    source: str  # key of the encoder the cell starts from (a pretraining cell's own key, or the random init)
    budget: int | str | None = None
    protocol: str | None = None
    config_key: str = ""  # the key without parts, environment and data: the same experiment elsewhere
    # {"parts": {part: version}, "environment": {...}, "data": digest}: what besides the config the key holds
    identity: dict = field(default_factory=dict, compare=False)

    @property
    def label(self) -> str:
        if self.kind == "pretrain":
            return f"pretrain {self.task} seed={self.seed}"
        return f"{self.task}+{self.protocol} budget={self.budget} seed={self.seed}"

    def tags(self) -> dict[str, str]:
        tags = {"kind": self.kind, "task": self.task, "seed": str(self.seed), "cell_key": self.key}
        tags |= {"source_key": self.source, "config_key": self.config_key}
        tags["data_identity"] = self.identity.get("data", "")
        tags["parts"] = json.dumps(self.identity.get("parts", {}), sort_keys=True)
        tags["environment"] = json.dumps(self.identity.get("environment", {}), sort_keys=True)
        if self.kind == "eval":
            tags |= {"budget": str(self.budget), "protocol": str(self.protocol)}
        return tags
