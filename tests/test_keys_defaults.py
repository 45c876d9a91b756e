"""A default and the same value written out are one value: for every field of the suite schema, every task's
config included, writing its default into the suite leaves every cell key as it was."""

import sys
from typing import Any

import pytest
from pydantic import BaseModel

from bench.config.load import _model_of, load_suite
from bench.config.sections import TuningConfig
from bench.config.suite import Suite
from bench.registry import ENCODERS, PROTOCOLS
from bench.run.plan import build_plan
from bench.tasks import TASKS

from .conftest import SMOKE

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DATA = "d" * 16


def base_raw(encoder: str | None = None) -> dict:
    """The smoke suite (on ``encoder``, else its own) with every registered task that runs on that encoder
    selected, so every task's config decides some key."""
    raw = tomllib.loads(SMOKE.read_text())
    if encoder is not None:
        raw["encoder"] = {"name": encoder}
    kind = ENCODERS[raw.get("encoder", {}).get("name", "resnet18_cifar")].kind
    raw["tasks"] = {name: raw["tasks"].get(name, {}) for name in TASKS if kind in TASKS[name].encoder_kinds}
    return raw


def as_written(value: Any) -> Any:
    """A default as a user writes it in TOML (a tuple is an array); None has no TOML spelling."""
    if isinstance(value, tuple):
        return [as_written(v) for v in value]
    if isinstance(value, list):
        return [as_written(v) for v in value]
    return value


def leaves(model: type[BaseModel], raw: dict, path: tuple = (), preset=None) -> list[tuple[tuple, Any]]:
    """(path, default as written) of every field the suite ``raw`` leaves out, recursing into nested tables and
    the tables found through the registries (tasks, protocols, search spaces); a nested table's defaults are its
    preset's (``preset``: the parent field's default instance)."""
    out = []
    raw = raw if isinstance(raw, dict) else {}
    for name, field in model.model_fields.items():
        sub = _model_of(field.annotation)
        here = raw.get(name)
        default = getattr(preset, name) if preset is not None else field.get_default(call_default_factory=True)
        if model is Suite and name == "tasks":
            for task, table in (here or {}).items():
                out += leaves(TASKS[task].Config, table, (*path, name, task))
            continue
        if model is TuningConfig and name == "space":
            for protocol, space in default.items():
                out += leaves(type(space), (here or {}).get(protocol, {}), (*path, name, protocol), space)
            continue
        if sub is not None and isinstance(default, BaseModel):
            out += leaves(sub, here if isinstance(here, dict) else {}, (*path, name), default)
            continue
        if here is None and default is not None and not callable(default):
            out.append(((*path, name), as_written(default)))
    if model is Suite:
        for protocol in PROTOCOLS:
            config = PROTOCOLS[protocol].Config
            out += leaves(config, raw.get(protocol, {}), (*path, protocol), config())
    return out


def with_value(raw: dict, path: tuple, value: Any) -> dict:
    import copy

    raw = copy.deepcopy(raw)
    node = raw
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value
    return raw


def keys(raw: dict) -> list[str]:
    return [c.key for c in build_plan(Suite.model_validate(raw), DATA)]


RAW = base_raw()
VIT_RAW = base_raw("vit_tiny")  # for the tasks that run on a ViT only (MAE, I-JEPA)
VIT_ONLY = {n for n, t in TASKS.items() if "cnn" not in t.encoder_kinds}
LEAVES = leaves(Suite, RAW) + [(p, v) for p, v in leaves(Suite, VIT_RAW) if p[:1] == ("tasks",) and p[1] in VIT_ONLY]


def test_the_walk_covers_the_schema():
    paths = {".".join(p) for p, _ in LEAVES}
    assert {"pretrain.warmup_epochs", "tuning.space.knn.k", "tasks.simclr.temperature"} <= paths
    assert len(paths) > 100  # every table, every task's own options


@pytest.mark.parametrize(("path", "value"), LEAVES, ids=[".".join(p) for p, _ in LEAVES])
def test_writing_out_a_default_changes_no_key(path, value):
    raw = VIT_RAW if path[:1] == ("tasks",) and path[1] in VIT_ONLY else RAW
    assert keys(with_value(raw, path, value)) == keys(raw)


def test_set_of_a_default_changes_no_key():
    plain = [c.key for c in build_plan(load_suite(SMOKE), DATA)]
    for item in ("pretrain.warmup_epochs=0", "tuning.space.knn.k=[5, 200]", "pretrain.lr=0.05"):
        assert [c.key for c in build_plan(load_suite(SMOKE, [item]), DATA)] == plain, item


def test_a_table_written_in_part_keeps_its_preset_for_the_rest():
    byol = load_suite(SMOKE, ["tasks.byol.views.min_scale=0.2"]).selected_tasks()["byol"]
    preset = TASKS["byol"].Config().views
    assert byol.views.min_scale == 0.2 and preset.min_scale != 0.2
    assert byol.views.model_dump(exclude={"min_scale"}) == preset.model_dump(exclude={"min_scale"})
    assert byol.views2 == TASKS["byol"].Config().views2


def test_writing_tasks_replaces_the_default_selection():
    assert set(load_suite(SMOKE, []).selected_tasks()) == {"rotation", "scratch", "random"}
    raw = {"name": "x", "tasks": {"simclr": {}}}
    assert set(Suite.model_validate(raw).selected_tasks()) == {"simclr"}
