"""A suite's plan: its cells, each with a deterministic key over everything that decides its result.

A key covers the resolved config, the data's identity (a digest of the decoded images, ``Dataset.identity``),
the versions of the code parts the cell uses (``bench.run.identity``) and the environment that decides numbers
(device, precision, threads, numeric library versions). A finished cell is reused only under the same key. Each
cell also carries a ``config_key`` (the same identity without parts, environment and data), so a dry run can
say of a cell whose key is new that an earlier result exists and what changed since.
"""

from __future__ import annotations

from bench.cell import Cell
from bench.config.settings import digest
from bench.config.suite import Suite
from bench.errors import ConfigError
from bench.registry import PROTOCOLS, TASKS
from bench.run.identity import TUNING_LIBRARIES, all_parts, cell_parts, encoder_parts, library_versions, uses

KEY_VERSION = 4  # the layout of the key itself; code changes are covered by the parts' versions


def data_config(suite: Suite) -> dict:
    """The dataset settings that decide results (where a dataset lives does not)."""
    data = suite.dataset.model_dump()
    data.pop("root")
    if data["image_size"] is None:  # as the files are: keys of suites that do not resize stay as they were
        data.pop("image_size")
    if data["name"] != "synthetic":
        data.pop("synthetic")
    return data


def task_protocols(suite: Suite, name: str) -> list[str]:
    cfg, task = suite.selected_tasks()[name], TASKS[name]
    supported = [p for p in PROTOCOLS if task.evaluates_with(PROTOCOLS[p])]
    chosen = [p for p in suite.protocols if p in supported and (cfg.protocols is None or p in cfg.protocols)]
    if not chosen:
        raise ConfigError(
            f"task {name!r} supports protocols {supported}, but the suite asks for {suite.protocols}"
            + (f" and tasks.{name}.protocols for {cfg.protocols}" if cfg.protocols else "")
        )
    return chosen


def tuning_settings(suite: Suite) -> dict:
    """What decides a tuned cell's study: the tuning settings, and its parallelism (trials on several Ray
    workers at once depend on the order they finish in; one worker matches the serial study)."""
    out = suite.tuning.model_dump(exclude={"storage"})
    ex = suite.execution
    if ex.backend == "ray" and ex.tuning_workers > 1:
        out["parallel_workers"] = ex.tuning_workers
    return out


def build_plan(suite: Suite, data_identity: str, environment: dict | None = None) -> list[Cell]:
    """Every cell of ``suite`` on data whose identity is ``data_identity`` (``Dataset.identity``), to run where
    ``environment`` says (``bench.run.identity.plan_environment``; None: an empty one, for tests of the plan)."""
    environment = environment or {}
    tuned_environment = environment | {"tuning_libraries": library_versions(TUNING_LIBRARIES)}
    cells = []
    every = all_parts()

    def keys(content: dict, parts: dict, env: dict) -> tuple[str, str, dict]:
        identity = {"parts": parts, "environment": env, "data": data_identity}
        full = content | {"parts": parts, "environment": env, "data_identity": data_identity}
        return digest(full), digest(content), identity

    for name, cfg in suite.selected_tasks().items():
        task = TASKS[name]
        protocols = task_protocols(suite, name)
        for seed in suite.seeds:
            origin = {"v": KEY_VERSION, "data": data_config(suite), "encoder": suite.encoder.key(), "seed": seed}
            if task.pretrains:
                schedule = suite.pretrain.key_content()
                origin |= {"task": name, "task_cfg": cfg.model_dump(exclude={"protocols"}), "pretrain": schedule}
                parts = uses(cell_parts(suite, "pretrain", task), every)
                source, source_config, identity = keys(origin, parts, environment)
                cells.append(Cell("pretrain", name, seed, source, source, config_key=source_config, identity=identity))
            else:
                source, source_config, _ = keys(origin | {"init": True}, uses(encoder_parts(suite), every), environment)
            for budget in suite.sorted_budgets():
                for draw, protocol in ((d, p) for d in suite.draws_at(budget, seed) for p in protocols):
                    settings = suite.protocol(protocol).model_dump()
                    is_tuned = suite.tuned(protocol, budget)
                    if is_tuned:
                        settings = {"base": settings, "tuning": tuning_settings(suite)}
                    content = {
                        "v": KEY_VERSION,
                        "source": source_config,
                        "task": name,
                        "budget": budget,
                        "protocol": protocol,
                        "settings": settings,
                        "evaluation": suite.evaluation.model_dump(),
                        "seed": seed,
                    } | ({} if draw is None else {"draw": draw})
                    parts = uses(cell_parts(suite, "eval", task, is_tuned, protocol), every)
                    env = tuned_environment if is_tuned else environment
                    key, _, identity = keys(content | {"source_key": source}, parts, env)
                    config_key = digest(content)
                    cells.append(Cell("eval", name, seed, key, source, budget, protocol, draw, config_key, identity))
    return cells
