from pathlib import Path

import pytest

from bench.config.load import load_suite
from bench.config.suite import Suite
from bench.errors import ConfigError
from bench.run.plan import build_plan

from .conftest import SMOKE

DATA = "d" * 16  # a data identity (Dataset.identity); keys depend on it, tested in test_identity.py


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "suite.toml"
    path.write_text(text)
    return path


def test_smoke_suite_is_valid():
    suite = load_suite(SMOKE)
    assert suite.name == "smoke"
    assert set(suite.selected_tasks()) == {"rotation", "scratch", "random"}


def test_defaults_make_a_short_suite_valid(tmp_path):
    suite = load_suite(write(tmp_path, ""))
    assert suite.name == "suite"  # from the file name
    assert suite.encoder.name == "resnet18_cifar" and suite.budgets == [100, 1000, "full"]


def test_unknown_key_names_file_key_and_allowed_keys(tmp_path):
    path = write(tmp_path, "[pretrain]\nepochz = 3\n")
    with pytest.raises(ConfigError) as err:
        load_suite(path)
    msg = str(err.value)
    assert str(path) in msg and "pretrain.epochz" in msg
    assert "allowed keys" in msg and "epochs" in msg and "batch_size" in msg


def test_unknown_task_lists_registered_tasks(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_suite(write(tmp_path, "[tasks.rotaton]\n"))
    msg = str(err.value)
    assert "tasks.rotaton" in msg and "rotation" in msg and "scratch" in msg and "random" in msg


def test_unknown_task_option_lists_that_tasks_options(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_suite(write(tmp_path, "[tasks.rotation]\nhead_size = 3\n"))
    assert "tasks.rotation.head_size" in str(err.value) and "head_hidden" in str(err.value)


@pytest.mark.parametrize(
    ("budgets", "needle"),
    [
        ("[5, 100]", "smaller than the 10 classes"),
        ('["all"]', "full"),
        ("[0]", "greater than 0"),
        ("[100, 100]", "unique"),
    ],
)
def test_bad_budget(tmp_path, budgets, needle):
    with pytest.raises(ConfigError) as err:
        load_suite(write(tmp_path, f"budgets = {budgets}\n"))
    assert "budgets" in str(err.value) and needle in str(err.value)


def test_bad_literal_lists_allowed_values(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_suite(write(tmp_path, 'device = "tpu"\n'))
    assert "'device'" in str(err.value) and "'cuda'" in str(err.value)


def test_unknown_encoder_lists_registered(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_suite(write(tmp_path, '[encoder]\nname = "vit"\n'))
    assert "small_cnn" in str(err.value) and "resnet18_cifar" in str(err.value)


def test_set_overrides_values_and_reports_bad_ones():
    suite = load_suite(SMOKE, ["pretrain.epochs=7", "seeds=[3]", "tasks.rotation.head_hidden=0"])
    assert suite.pretrain.epochs == 7 and suite.seeds == [3]
    assert suite.selected_tasks()["rotation"].head_hidden == 0
    with pytest.raises(ConfigError, match="pretrain.epochs"):
        load_suite(SMOKE, ["pretrain.epochs=-1"])
    with pytest.raises(ConfigError, match="key=value"):
        load_suite(SMOKE, ["pretrain.epochs"])


def test_task_without_a_usable_protocol_is_an_error():
    suite = Suite(tasks={"scratch": {}}, protocols=["linear"])
    with pytest.raises(ConfigError, match="scratch.*finetune"):
        build_plan(suite, DATA)


def test_plan_keys_are_stable_and_distinct():
    suite = load_suite(SMOKE)
    keys = [c.key for c in build_plan(suite, DATA)]
    assert len(keys) == len(set(keys))
    assert keys == [c.key for c in build_plan(load_suite(SMOKE), DATA)]
    changed = [c.key for c in build_plan(load_suite(SMOKE, ["pretrain.epochs=3"]), DATA)]
    # Only the pretraining cells (and the evaluations that depend on them) change.
    assert set(keys) != set(changed)
    scratch = {c.key for c in build_plan(suite, DATA) if c.task == "scratch"}
    assert scratch <= set(changed)


def test_cuda_requested_without_cuda_is_a_clear_error(monkeypatch):
    import torch

    from bench.run.runner import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="no CUDA device"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"


def test_tuning_label_seed_is_refused_each_seed_tunes_on_its_own_labels(tmp_path):
    with pytest.raises(ConfigError, match="tuning.label_seed': removed: each seed's cells are tuned"):
        load_suite(write(tmp_path, "seeds = [0, 1]\n[tuning]\nenabled = true\nlabel_seed = 5\n"))
    with pytest.raises(ConfigError, match="tuning.protocols"):
        load_suite(write(tmp_path, '[tuning]\nprotocols = ["svm"]\n'))


def test_speed_settings_leave_the_keys_alone_and_the_reference_path_and_compiling_change_them():
    keys = [c.key for c in build_plan(load_suite(SMOKE), DATA) if c.kind == "pretrain"]
    fast = load_suite(SMOKE, ["pretrain.workers=3", "pretrain.checkpoint_every_s=5"])
    assert [c.key for c in build_plan(fast, DATA) if c.kind == "pretrain"] == keys
    compiled = build_plan(load_suite(SMOKE, ["pretrain.compile=true"]), DATA)  # fused kernels round otherwise
    assert not {c.key for c in compiled if c.kind == "pretrain"} & set(keys)
    reference = build_plan(load_suite(SMOKE, ["pretrain.augment='lightly'"]), DATA)
    assert not {c.key for c in reference if c.kind == "pretrain"} & set(keys)


def test_reference_path_needs_lightly_transforms_for_every_task(tmp_path):
    path = write(tmp_path, 'name = "x"\n[pretrain]\naugment = "lightly"\n[tasks.jigsaw]\n[tasks.simclr]\n')
    with pytest.raises(ConfigError) as err:
        load_suite(path)
    assert "jigsaw has none" in str(err.value) and "simclr" in str(err.value) and "pretrain.augment" in str(err.value)
    with pytest.raises(ConfigError, match="pretrain.augment.*'device' or 'lightly'"):
        load_suite(SMOKE, ["pretrain.augment='pil'"])


@pytest.mark.parametrize("path", sorted((SMOKE.parent).glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_suite_is_valid_and_plans_cells(path):
    suite = load_suite(path)
    assert suite.name == path.stem and build_plan(suite, DATA)
