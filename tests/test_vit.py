"""ViTs, masked image modelling and backbones by name: every task that runs on a ViT meets the task contract on
ViT-Tiny, the ones that cannot are refused in one line before training, MAE's and I-JEPA's masks are the papers',
and torchvision and timm backbones are built by name with their feature dimension and the CIFAR stem."""

import pytest
import torch

from bench.config.load import load_suite
from bench.errors import ConfigError
from bench.models.encoders import build_encoder
from bench.registry import ENCODERS, TASKS
from bench.run.identity import plan_environment
from bench.run.plan import build_plan
from bench.tasks.ijepa import IJEPAConfig, block_masks
from bench.tasks.mae import token_mask
from bench.tools.contract import check_task

ON_VIT = [name for name, task in TASKS.items() if "vit" in task.encoder_kinds]


@pytest.mark.slow
@pytest.mark.parametrize("name", ON_VIT)
def test_every_task_that_runs_on_a_vit_meets_the_contract_on_vit_tiny(name):
    failures = {check: why for check, why in check_task(TASKS[name], "vit_tiny").items() if why}
    assert not failures, failures


def test_mae_and_ijepa_meet_the_contract():
    for task in ("mae", "ijepa"):
        assert not any(check_task(TASKS[task]).values())  # on vit_tiny, their default


def _suite(tmp_path, encoder: str, *tasks: str, extra: str = ""):
    body = "".join(f"[tasks.{t}]\n" for t in tasks)
    (tmp_path / "s.toml").write_text(f'name = "v"\n[dataset]\nname = "synthetic"\n[encoder]\n{encoder}\n{extra}{body}')
    return load_suite(tmp_path / "s.toml")


def test_a_task_that_cannot_run_on_the_encoder_is_refused_in_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"colorization, inpainting cannot run on encoder 'vit_tiny' \(a ViT\)"):
        _suite(tmp_path, 'name = "vit_tiny"', "colorization", "inpainting", "rotation")
    with pytest.raises(ConfigError, match=r"mae cannot run on encoder 'small_cnn' \(a CNN\): it needs a ViT"):
        _suite(tmp_path, 'name = "small_cnn"', "mae")


def test_mae_masks_three_quarters_and_always_keeps_the_class_token():
    keep, masked = token_mask(4, 65, 0.75, torch.Generator().manual_seed(0), "cpu")
    assert keep.shape == (4, 17) and masked.shape == (4, 48) and (keep[:, 0] == 0).all()
    assert all(set(k.tolist()) | set(m.tolist()) == set(range(65)) for k, m in zip(keep, masked))
    again = token_mask(4, 65, 0.75, torch.Generator().manual_seed(0), "cpu")[0]
    assert torch.equal(keep, again)  # from the generator, not torch's global state


def test_ijepa_targets_are_blocks_of_one_size_outside_the_context():
    cfg, side = IJEPAConfig(), 8
    context, targets = block_masks(16, side, cfg, torch.Generator().manual_seed(1))
    assert len(targets) == 4 and len({t.shape for t in targets}) == 1  # one block size per batch
    share = targets[0].shape[1] / side**2
    assert 0.1 <= share <= 0.3  # 15-20% of the patches, rounded to whole rows and columns
    for i in range(16):
        inside = set(context[i].tolist())
        assert all(inside.isdisjoint(t[i].tolist()) for t in targets)
        rows = sorted({p // side for p in targets[0][i].tolist()})
        cols = sorted({p % side for p in targets[0][i].tolist()})
        assert len(rows) * len(cols) == targets[0].shape[1]  # a rectangle
    assert context.shape[0] == 16 and context.shape[1] >= 1


def test_the_ijepa_checkpoint_is_its_target_encoder():
    task = TASKS["ijepa"](build_encoder("vit_tiny", 0), IJEPAConfig(), 32)
    assert task.evaluated_encoder() is task.target.copies[0] and task.evaluated_encoder() is not task.encoder


def test_backbones_by_name_with_their_feature_dimension_and_the_cifar_stem(tmp_path):
    plain = _suite(tmp_path, 'name = "torchvision:resnet18"', "rotation")
    stem = _suite(tmp_path, 'name = "torchvision:resnet18"\ncifar_stem = true', "rotation")
    assert plain.encoder.key() == "torchvision:resnet18" and stem.encoder.key()["cifar_stem"] is True
    net = build_encoder("torchvision:resnet18", 0)  # registered last with the stem
    assert net.out_dim == 512 and net.feature_map(torch.zeros(1, 3, 32, 32)).shape[-1] == 4  # stride 8
    assert {c.key for c in build_plan(plain, "d" * 16)}.isdisjoint(c.key for c in build_plan(stem, "d" * 16))
    effnet = _suite(tmp_path, 'name = "torchvision:efficientnet_b0"', "rotation")
    assert build_encoder(effnet.encoder.name, 0)(torch.zeros(2, 3, 32, 32)).shape == (2, 1280)
    timm = _suite(tmp_path, 'name = "timm:resnet18"', "colorization")  # a CNN: the dense tasks run on it
    assert ENCODERS[timm.encoder.name].kind == "cnn" and build_encoder(timm.encoder.name, 0).out_dim == 512
    assert "timm" in plan_environment(timm)["libraries"] and "timm" not in plan_environment(plain)["libraries"]


@pytest.mark.parametrize(
    "encoder, message",
    [
        ('name = "torchvision:nope"', "torchvision has no classification model 'nope'"),
        ('name = "timm:nope"', "timm has no model 'nope'"),
        ('name = "torchvision:efficientnet_b0"\ncifar_stem = true', "cifar_stem applies to ResNet-style models"),
        ('name = "small_cnn"\ncifar_stem = true', "cifar_stem applies to backbones named by library"),
        ('name = "torchvision:vit_b_16"', "only models with an fc classifier"),
    ],
)
def test_a_backbone_that_cannot_be_built_is_one_line_naming_the_key(tmp_path, encoder, message):
    with pytest.raises(ConfigError, match=message) as err:
        _suite(tmp_path, encoder, "rotation")
    assert "key 'encoder'" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("name", ["mae", "ijepa"])
def test_the_vit_tasks_run_at_96_px_with_16_px_patches_and_under_bf16_autocast(name):
    cls = TASKS[name]
    torch.manual_seed(0)
    task = cls(build_encoder("vit_tiny_p16", 0), cls.Config(), 96)
    loss = task.loss(torch.randint(0, 255, (4, 3, 96, 96), dtype=torch.uint8), torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and any(
        p.grad is not None and p.grad.abs().sum() > 0 for p in task.encoder.parameters()
    )
    small = cls(build_encoder("vit_tiny", 0), cls.Config(), 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = small.loss(torch.randint(0, 255, (4, 3, 32, 32), dtype=torch.uint8), torch.Generator().manual_seed(0))
    assert loss.shape == () and torch.isfinite(loss.float())


def test_ibot_masks_half_the_images_each_with_a_tenth_to_half_of_its_patches():
    from bench.tasks.ibot import IBOTConfig, patch_masks

    masks = patch_masks(400, 64, IBOTConfig(), torch.Generator().manual_seed(0))
    counts = masks.sum(1)
    masked = counts > 0
    assert 0.4 < masked.float().mean() < 0.6
    assert counts[masked].min() >= round(0.1 * 64) and counts.max() <= round(0.5 * 64)


def test_ibot_adds_the_masked_patch_loss_to_dinos():
    from bench.tasks.ibot import IBOTConfig

    images = torch.randint(0, 255, (8, 3, 32, 32), dtype=torch.uint8)
    losses = []
    for weight in (0.0, 1.0):
        torch.manual_seed(0)
        task = TASKS["ibot"](build_encoder("vit_tiny", 0), IBOTConfig(patch_weight=weight, mask_probability=1.0), 32)
        losses.append(task.loss(images, torch.Generator().manual_seed(0)).item())
    assert losses[1] > losses[0] > 0  # the same views and masks; the patch term is a cross-entropy, positive
