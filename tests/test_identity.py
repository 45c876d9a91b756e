"""Identity by component: keys hold the versions of the parts a cell uses, the lock pins each part's source,
the golden check decides refactor or change of behaviour, and the environment is in every key."""

import json

import pytest

from bench.config.load import load_suite
from bench.run import golden, identity, lock, source
from bench.run.identity import plan_environment
from bench.run.plan import build_plan
from bench.tasks import TASKS

from .conftest import SMOKE

DATA = "d" * 16
ENV = {"device": "cpu", "precision": "fp32", "threads": 2, "libraries": {"torch": "2.14"}}
JOINT = sorted(n for n, t in TASKS.items() if "views" in identity.uses({f"task.{n}"}))


def keys(suite, data=DATA, env=ENV) -> dict[tuple, str]:
    return {(c.kind, c.task, c.seed, c.budget, c.protocol): c.key for c in build_plan(suite, data, env)}


def changed(before: dict, after: dict) -> set[str]:
    return {k[1] for k in before if before[k] != after[k]}


def test_the_lock_agrees_with_the_code_and_every_module_is_classified():
    assert lock.check_lock() == [], "python -m bench identity says what to do"
    assert identity.unclassified() == []


def test_every_part_is_exercised_by_a_golden_case():
    covered = set()
    for _, parts, _ in golden.cases().values():
        covered |= set(identity.uses(parts))
    assert covered == set(identity.all_parts())


def test_golden_outputs_are_bitwise_the_recorded_ones():
    if golden.comparable():
        pytest.skip(golden.comparable())
    verdicts = golden.compare(golden.run(), golden.read())
    assert {n: v for n, v in verdicts.items() if v != "same"} == {}


SOURCE = '''"""Module docstring."""
X = 4


class Rotation:
    """Class docstring."""

    version = 1

    def loss(self, x):
        """Docstring."""
        return x * X  # a comment
'''


def test_the_normalised_digest_ignores_docstrings_comments_formatting_and_the_version():
    same = SOURCE.replace('"""Docstring."""', '"""Another docstring."""').replace("# a comment", "# other")
    same = same.replace("x * X", "x  *  X").replace("version = 1", "version = 7") + "\n# appended comment\n"
    assert source.normalised(same) == source.normalised(SOURCE)
    assert source.normalised(SOURCE.replace("X = 4", "X = 5")) != source.normalised(SOURCE)
    assert source.normalised(SOURCE.replace("x * X", "x + X")) != source.normalised(SOURCE)


def test_a_moved_digest_with_the_same_version_fails_the_pin_and_says_what_to_do(tmp_path):
    path = tmp_path / "identity.lock"
    parts = lock.current_lock()
    parts["task.rotation"]["digest"] = "0" * 16
    path.write_text(json.dumps({"parts": parts}))
    (problem,) = lock.check_lock(path)
    assert "part task.rotation (bench/tasks/rotation.py) changed since the lock but is still version 1" in problem
    assert "bump its version (`version` of the task class in rotation.py)" in problem
    assert "python -m bench identity --update" in problem and "nothing goes stale" in problem
    parts["task.rotation"] = lock.current_lock()["task.rotation"] | {"version": 0}
    path.write_text(json.dumps({"parts": parts}))
    assert "is version 1, the lock has 0" in lock.check_lock(path)[0]


def test_a_task_version_renews_exactly_that_tasks_cells(monkeypatch):
    suite = load_suite(SMOKE, ["tasks.simclr={}", "tasks.moco={}"])
    before = keys(suite)
    monkeypatch.setattr(TASKS["moco"], "version", TASKS["moco"].version + 1)
    assert changed(before, keys(suite)) == {"moco"}


def bumped(monkeypatch, name: str) -> None:
    parts = tuple(
        p if p.name != name else identity.Part(p.name, p.version + 1, p.modules, p.what) for p in identity.PARTS
    )
    monkeypatch.setattr(identity, "PARTS", parts)


def test_a_part_version_renews_exactly_the_cells_that_use_it(monkeypatch):
    suite = load_suite(SMOKE, ["tasks.simclr={}", "tasks.moco={}"])
    before = keys(suite)
    bumped(monkeypatch, "views")  # the joint-embedding tasks' views only
    assert changed(before, keys(suite)) == {"simclr", "moco"} and {"simclr", "moco"} <= set(JOINT)
    bumped(monkeypatch, "protocols")  # every evaluation, no pretraining
    after = keys(suite)
    assert all((before[k] != after[k]) == (k[0] == "eval" or k[1] in ("simclr", "moco")) for k in before)


def test_tuning_renews_only_tuned_cells_and_health_only_measured_pretrainings(monkeypatch):
    tuned = load_suite(SMOKE, ["tuning.enabled=true", "tuning.budgets=[8]"])
    before = keys(tuned)
    bumped(monkeypatch, "tuning")
    after = keys(tuned)
    assert {k for k in before if before[k] != after[k]} == {k for k in before if k[3] == 8 and k[4] == "finetune"}
    off = load_suite(SMOKE, ["pretrain.health_every=0"])
    monkeypatch.undo()
    before_on, before_off = keys(load_suite(SMOKE)), keys(off)
    bumped(monkeypatch, "health")
    assert changed(before_on, keys(load_suite(SMOKE))) == {"rotation"}  # its pretraining, then its evaluations
    assert changed(before_off, keys(off)) == set()


def test_health_settings_are_part_of_the_pretraining_identity():
    a, b = keys(load_suite(SMOKE)), keys(load_suite(SMOKE, ["pretrain.health_images=64"]))
    assert changed(a, b) == {"rotation"}


def test_device_precision_threads_and_libraries_are_in_every_key():
    suite = load_suite(SMOKE)
    base = keys(suite)
    for other in (
        ENV | {"device": "cuda", "precision": "bf16-autocast"},
        ENV | {"threads": 16},
        ENV | {"libraries": {"torch": "2.15"}},
    ):
        after = keys(suite, env=other)
        assert all(base[k] != after[k] for k in base)


def test_the_tuning_library_and_tuning_parallelism_are_in_tuned_keys_only(monkeypatch):
    tuned = load_suite(SMOKE, ["tuning.enabled=true", "tuning.budgets=[8]"])
    before = keys(tuned)
    real = identity.library_versions
    monkeypatch.setattr(
        "bench.run.plan.library_versions",
        lambda names: {n: "99.0" for n in names} if "optuna" in names else real(names),
    )
    after = keys(tuned)
    assert {k for k in before if before[k] != after[k]} == {k for k in before if k[3] == 8 and k[4] == "finetune"}
    monkeypatch.undo()
    on_ray = keys(load_suite(SMOKE, ["tuning.enabled=true", "tuning.budgets=[8]", "execution.backend=ray"]))
    assert {k for k in before if before[k] != on_ray[k]} == {k for k in before if k[3] == 8 and k[4] == "finetune"}


def test_the_planned_environment():
    env = plan_environment(load_suite(SMOKE))
    assert env["device"] == "cpu" and env["precision"] == "fp32" and env["threads"] >= 1
    assert set(env["libraries"]) == set(identity.LIBRARIES)
    cuda = plan_environment(load_suite(SMOKE, ["device='cuda'"]))  # planned even where there is no GPU
    assert cuda["device"] == "cuda" and cuda["precision"] == "bf16-autocast" and "threads" not in cuda
    assert identity.minor("2.14.1+cu130") == "2.14"


def test_the_data_identity_is_in_every_key():
    suite = load_suite(SMOKE)
    a, b = keys(suite, "a" * 16), keys(suite, "b" * 16)
    assert all(a[k] != b[k] for k in a)
    assert [c.config_key for c in build_plan(suite, "a" * 16)] == [c.config_key for c in build_plan(suite, "b" * 16)]


@pytest.mark.parametrize("name", ["rotation", "simclr"])
def test_the_golden_check_catches_one_constant_changed_in_a_task(monkeypatch, name):
    """A one-constant change of behaviour: rotation's head BatchNorm epsilon, SimCLR's loss temperature."""
    import torch

    if golden.comparable():
        pytest.skip(golden.comparable())
    recorded = golden.read()[f"pretrain/{name}"]["outputs"]
    if name == "rotation":
        real = torch.nn.BatchNorm1d

        def nudged(*args, **kwargs):
            return real(*args, **{**kwargs, "eps": 1e-3})

        monkeypatch.setattr("bench.tasks.rotation.nn.BatchNorm1d", nudged)
    else:
        real = TASKS["simclr"].__init__

        def hotter(self, encoder, cfg, image_size):
            real(self, encoder, cfg, image_size)
            self.criterion.temperature = cfg.temperature * 1.01

        monkeypatch.setattr(TASKS["simclr"], "__init__", hotter)
    found = golden.run({f"pretrain/{name}"})
    assert found[f"pretrain/{name}"]["outputs"]["loss"] != recorded["loss"]
    assert golden.compare(found, {f"pretrain/{name}": golden.read()[f"pretrain/{name}"]}) == {
        f"pretrain/{name}": "changed: no version moved"
    }
