"""A suite's plan: its cells, each with a deterministic key over everything that decides its result.

A key covers the resolved config, the data's identity (a digest of the decoded images, ``Dataset.identity``)
and the code's identity (``bench.identity``: a digest of the source of every module that can change the
cell's result). A finished cell is reused only under the same key. Each cell also carries a ``config_key``
(the same identity without code and data), so a dry run can say of a cell whose key is new that an earlier
result exists and what changed since: the code (which modules) or the data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from bench.config import SPEED_ONLY, ConfigError, Suite, digest
from bench.identity import code_digest, code_modules
from bench.tasks import TASKS
from bench.tuning import tuned

KEY_VERSION = 3  # the layout of the key itself; code changes are covered by the code digest


@dataclass(frozen=True)
class Cell:
    kind: str  # "pretrain" or "eval"
    task: str
    seed: int
    key: str
    source: str  # key of the encoder the cell starts from (a pretraining cell's own key, or the random init)
    budget: int | str | None = None
    protocol: str | None = None
    config_key: str = ""  # the key without code and data identity: the same experiment under other code or data
    identity: dict = field(default_factory=dict, compare=False)  # {"code": ..., "data": ...} digests

    @property
    def label(self) -> str:
        if self.kind == "pretrain":
            return f"pretrain {self.task} seed={self.seed}"
        return f"{self.task}+{self.protocol} budget={self.budget} seed={self.seed}"

    def tags(self) -> dict[str, str]:
        tags = {"kind": self.kind, "task": self.task, "seed": str(self.seed), "cell_key": self.key}
        tags |= {"source_key": self.source, "config_key": self.config_key}
        tags |= {f"{k}_identity": v for k, v in self.identity.items()}
        tags["code_modules"] = json.dumps(code_modules(TASKS[self.task].__module__), sort_keys=True)
        if self.kind == "eval":
            tags |= {"budget": str(self.budget), "protocol": str(self.protocol)}
        return tags


def data_config(suite: Suite) -> dict:
    """The dataset settings that decide results (where a dataset lives does not)."""
    data = suite.dataset.model_dump()
    data.pop("root")
    if data["name"] != "synthetic":
        data.pop("synthetic")
    return data


def task_protocols(suite: Suite, name: str) -> list[str]:
    cfg, task = suite.selected_tasks()[name], TASKS[name]
    chosen = [p for p in suite.protocols if p in task.protocols and (cfg.protocols is None or p in cfg.protocols)]
    if not chosen:
        raise ConfigError(
            f"task {name!r} supports protocols {list(task.protocols)}, but the suite asks for {suite.protocols}"
            + (f" and tasks.{name}.protocols for {cfg.protocols}" if cfg.protocols else "")
        )
    return chosen


def _keys(content: dict, code: str, data: str) -> tuple[str, str]:
    """(key, config_key) of a cell whose identity without code and data is ``content``."""
    return digest(content | {"code": code, "data_identity": data}), digest(content)


def build_plan(suite: Suite, data_identity: str) -> list[Cell]:
    """Every cell of ``suite`` on data whose identity is ``data_identity`` (``Dataset.identity``)."""
    cells = []
    for name, cfg in suite.selected_tasks().items():
        task = TASKS[name]
        protocols = task_protocols(suite, name)
        code = code_digest(task.__module__)
        identity = {"code": code, "data": data_identity}
        for seed in suite.seeds:
            origin = {"v": KEY_VERSION, "data": data_config(suite), "encoder": suite.encoder.name, "seed": seed}
            if task.pretrains:
                schedule = suite.pretrain.model_dump(exclude=SPEED_ONLY)
                origin |= {"task": name, "task_cfg": cfg.model_dump(exclude={"protocols"}), "pretrain": schedule}
                source, source_config = _keys(origin, code, data_identity)
                cells.append(Cell("pretrain", name, seed, source, source, config_key=source_config, identity=identity))
            else:
                source, source_config = _keys(origin | {"init": True}, code, data_identity)
            for budget in suite.sorted_budgets():
                for protocol in protocols:
                    settings = getattr(suite, protocol).model_dump()
                    if tuned(suite, protocol, budget):
                        settings = {"base": settings, "tuning": suite.tuning.model_dump(exclude={"storage"})}
                    content = {
                        "v": KEY_VERSION,
                        "source": source_config,
                        "task": name,
                        "budget": budget,
                        "protocol": protocol,
                        "settings": settings,
                        "evaluation": suite.evaluation.model_dump(),
                        "seed": seed,
                    }
                    key, _ = _keys(content | {"source_key": source}, code, data_identity)
                    cells.append(Cell("eval", name, seed, key, source, budget, protocol, digest(content), identity))
    return cells
