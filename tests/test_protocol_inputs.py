"""Every protocol receives an encoder the same way: BN recalibrated on whole images, the task's evaluation input,
flips and pad-and-crop that fit the data; fine-tuning reports how well it fit its labels."""

import pytest
import torch
from torch import nn

from bench.augment.ops import crop_flip, crop_pad, to_input
from bench.config.load import load_suite
from bench.config.sections import DatasetConfig
from bench.config.suite import Suite
from bench.data.datasets import load_dataset
from bench.errors import ConfigError
from bench.models.encoders import build_encoder
from bench.protocols.features import extract_features, recalibrate_bn
from bench.protocols.finetune import FinetuneConfig, finetune
from bench.run.runner import Runner
from bench.tasks import TASKS
from bench.tasks.colorization import rgb_to_lab

from .conftest import SMOKE

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def data():
    return load_dataset(DatasetConfig(name="synthetic", synthetic={"train": 128, "test": 32}))


def first_bn(model: nn.Module) -> nn.BatchNorm2d:
    return next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))


def test_bn_recalibration_gives_the_statistics_of_whole_images(data):
    encoder = build_encoder("small_cnn", 0)
    first_bn(encoder).running_mean.fill_(5.0)  # statistics from other inputs (tiles, patches)
    weights = {k: v.clone() for k, v in encoder.state_dict().items() if "running" not in k and "num_batches" not in k}
    fixed = recalibrate_bn(encoder, data.train_x, CPU, batch=32)
    conv = encoder.features[0][0]
    with torch.no_grad():
        out = conv(to_input(data.train_x))  # (N, 16, H, W): what the first BN normalises
    assert torch.allclose(first_bn(fixed).running_mean, out.mean((0, 2, 3)), atol=1e-4)
    assert torch.allclose(first_bn(fixed).running_var, out.var((0, 2, 3)), rtol=0.05)
    assert first_bn(encoder).running_mean[0] == 5.0  # the original is left alone
    assert all(torch.equal(fixed.state_dict()[k], v) for k, v in weights.items())  # no weight changes
    assert not fixed.training and first_bn(fixed).momentum == 0.1


def test_every_task_and_baseline_gets_the_same_bn_handling(tmp_path, store):
    runner = Runner(load_suite(SMOKE, [*store, "evaluation.bn_recalibration=true"]), SMOKE)
    runner.device = CPU
    random = runner.prepared_encoder("random", 0)
    assert not torch.allclose(first_bn(random).running_var, torch.ones(16))  # recalibrated, not the init's
    off = Runner(load_suite(SMOKE, store), SMOKE)  # the default: the statistics pretraining left
    off.device = CPU
    assert torch.equal(first_bn(off.prepared_encoder("random", 0)).running_var, torch.ones(16))
    assert {c.key for c in runner.cells if c.kind == "eval"}.isdisjoint({c.key for c in off.cells})


def test_colorization_is_evaluated_on_lightness_like_it_was_pretrained(data):
    x = data.test_x[:8]
    inputs = TASKS["colorization"].eval_input(x)
    assert inputs.shape == x.shape
    assert torch.equal(inputs[:, 0], inputs[:, 1]) and torch.equal(inputs[:, 1], inputs[:, 2])
    light = rgb_to_lab(x.float() / 255)[:, 0] / 100
    assert torch.allclose(inputs[:, 0], (light - 0.5) / 0.25, atol=1e-5)
    assert torch.equal(TASKS["rotation"].eval_input(x), to_input(x))  # the default: RGB


def test_protocols_feed_the_encoder_through_the_tasks_evaluation_input(data):
    encoder = build_encoder("small_cnn", 0).eval()
    prepare = TASKS["colorization"].eval_input
    feats = extract_features(encoder, data.test_x, CPU, prepare=prepare)
    with torch.no_grad():
        assert torch.allclose(feats, encoder(prepare(data.test_x)), atol=1e-5)
    seen = []

    def watched(images):
        seen.append(images.shape)
        return prepare(images)

    cfg = FinetuneConfig(epochs=1, min_steps=2, batch_size=32)
    finetune(encoder, data.train_x[:64], data.train_y[:64], 4, cfg, 0, prepare=watched)
    assert len(seen) >= 3  # training batches, then the predictor


def test_finetuning_reports_per_epoch_loss_and_accuracy_and_its_final_training_accuracy(data):
    cfg = FinetuneConfig(epochs=3, min_steps=0, batch_size=32, check_steps=1)  # a check after every pass
    fitted = finetune(build_encoder("small_cnn", 0), data.train_x, data.train_y, 4, cfg, 0)
    assert [h["epoch"] for h in fitted.history] == [1, 2, 3]
    assert all(0 <= h["train_acc"] <= 1 and h["train_loss"] > 0 for h in fitted.history)
    predicted = fitted.predict(data.train_x)
    assert fitted.chosen["train_acc"] == pytest.approx((predicted == data.train_y).float().mean().item())


def test_pad_and_crop_scale_with_the_image_and_flips_can_be_switched_off():
    assert crop_pad(32) == 4 and crop_pad(8) == 1 and crop_pad(96) == 12
    x = torch.zeros(64, 3, 8, 8)
    x[..., 4:] = 1.0  # right half bright: a mirror image has a bright left half
    gen = torch.Generator().manual_seed(0)
    kept = crop_flip(x, gen, pad=0, flip=False)
    assert torch.equal(kept, x)
    flipped = crop_flip(x, gen, pad=0)
    assert (flipped[:, 0, 0, 0] == 1).any()  # some were mirrored by default
    shifted = crop_flip(x, torch.Generator().manual_seed(1), flip=False)
    assert (shifted != x).any() and shifted[:, :, :, 0].max() <= 1.0  # at 8 px a 1 px shift, no mirror
    assert (shifted[:, 0, 0, :2] == 0).all()  # the two left-most columns stay dark: never mirrored


def test_pretraining_tasks_need_epochs():
    with pytest.raises(ConfigError, match="pretrain.epochs = 0, but rotation pretrains"):
        load_suite(SMOKE, ["pretrain.epochs=0"])
    baselines = Suite(tasks={"scratch": {}, "random": {}}, pretrain={"epochs": 0})
    assert baselines.pretrain.epochs == 0  # nothing pretrains: valid


@pytest.mark.slow
def test_protocols_get_the_saved_checkpoint_whether_or_not_pretraining_ran_in_this_invocation(
    tmp_path, store, monkeypatch
):
    """Right after pretraining, the protocols receive the encoder exactly as a later invocation loads it from its
    checkpoint (same values, same contiguous layout, so the same kernels and the same numbers)."""
    import bench.run.cells
    from bench.cli import main
    from bench.store.checkpoints import checkpoint_path

    seen = []
    real = bench.run.cells.extract_features

    def watched(encoder, images, device, **kw):
        seen.append({k: v.clone() for k, v in encoder.state_dict().items()})
        return real(encoder, images, device, **kw)

    monkeypatch.setattr(bench.run.cells, "extract_features", watched)
    args = [*store, "seeds=[0]", "budgets=[8]", "pretrain.epochs=1"]
    assert main(["run", str(SMOKE), *(f"--set={s}" for s in args)]) == 0
    suite = load_suite(SMOKE, args)
    (pre,) = [c for c in Runner(suite, SMOKE).cells if c.kind == "pretrain"]
    saved = torch.load(checkpoint_path(tmp_path / "results" / "cache", pre.key), weights_only=True)
    rotation = [s for s in seen if any(torch.equal(s[k], saved[k]) for k in saved)]
    assert rotation  # the pretrained encoder was probed
    for state in rotation:
        assert all(torch.equal(state[k], saved[k]) and state[k].is_contiguous() for k in saved)
