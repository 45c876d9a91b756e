"""Contract tests for every registered task (new tasks are covered without editing this file)."""

import sys

import pytest
import torch

from bench.augment.ops import all_rotations, crop_flip, random_crop, to_input
from bench.config.sections import DatasetConfig
from bench.data.datasets import load_dataset
from bench.models.encoders import ENCODERS, build_encoder
from bench.tasks import TASKS
from bench.tools.contract import check_task

PRETRAINING = [name for name, task in TASKS.items() if task.pretrains]
ON_CNN = [name for name in PRETRAINING if "cnn" in TASKS[name].encoder_kinds]  # the ViT tasks: test_vit.py


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return load_dataset(DatasetConfig(name="synthetic", synthetic={"train": 64, "test": 8})).train_x


def make(name: str, seed: int = 0):
    torch.manual_seed(seed)
    cls = TASKS[name]
    return cls(build_encoder("small_cnn", seed), cls.Config(**cls.contract_overrides), 32)


@pytest.mark.parametrize("name", list(TASKS))
def test_task_is_described(name):
    task = TASKS[name]
    assert task.summary and task.evaluated_by and sys.modules[task.__module__].__doc__
    assert set(task.evaluated_by) <= {"frozen", "trained"}
    if task.pretrains:  # a pretext task names its paper and arXiv id, in the docstring and for `bench list`
        assert "arXiv:" in task.reference and "arXiv:" in sys.modules[task.__module__].__doc__
    else:
        assert task.reference == "baseline"


@pytest.mark.parametrize("name", list(TASKS))
def test_every_task_meets_the_contract(name):
    """bench check-task's checks (bench.tools.contract): finite scalar loss, the same loss from the same seed, 20
    steps on one batch of 8 with the same random draws lower it, the evaluated encoder's weights load into a fresh
    shared encoder, the size check refuses what the task cannot use, the evaluation input fits the encoder."""
    failures = {check: why for check, why in check_task(TASKS[name]).items() if why}
    assert not failures, failures


@pytest.mark.parametrize("name", list(ENCODERS))
def test_encoders_give_out_dim_features(name):
    enc = build_encoder(name, seed=0).eval()
    size = 64 if name == "resnet18" else 32
    assert enc(torch.randn(2, 3, size, size)).shape == (2, enc.out_dim)
    same = build_encoder(name, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(enc.state_dict().values(), same.state_dict().values()))


def test_rotations_and_their_labels():
    x = torch.arange(2 * 1 * 2 * 2, dtype=torch.float32).reshape(2, 1, 2, 2)
    views, labels = all_rotations(x)
    assert views.shape == (8, 1, 2, 2) and labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert torch.equal(views[2], torch.rot90(x[0], 1, dims=(1, 2)))
    assert torch.equal(views[5], torch.rot90(x[1], 2, dims=(1, 2)))


def test_random_crop_with_zero_padding_is_identity_and_crops_differ_per_image():
    x = torch.randn(16, 3, 8, 8)
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(random_crop(x, gen, pad=0), x)
    same = x[:1].expand(16, -1, -1, -1)
    out = crop_flip(same, gen, pad=2)
    assert out.shape == same.shape
    assert len({tuple(o.flatten().tolist()) for o in out}) > 4  # parameters drawn per image


@pytest.mark.parametrize("name", ON_CNN)
def test_works_at_96_px(name):
    """STL-10 size: tiles, patches, holes, local crops and decoders all scale with the image."""
    cls = TASKS[name]
    torch.manual_seed(0)
    task = cls(build_encoder("small_cnn", 0), cls.Config(**cls.contract_overrides), 96)
    images = torch.randint(0, 255, (4, 3, 96, 96), dtype=torch.uint8)
    loss = task.loss(images, torch.Generator().manual_seed(0))
    assert torch.isfinite(loss)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in task.encoder.parameters())


REFERENCED = [name for name in PRETRAINING if TASKS[name].has_reference_path()]


@pytest.mark.parametrize(("name", "overrides"), [(n, {}) for n in REFERENCED] + [("dino", {"local_views": 2})])
def test_reference_views_match_the_device_views(name, overrides):
    """The reference pipeline (lightly's per-image transforms) gives the model step the same arguments as the
    on-device path: as many views, the same shapes, the same pixel statistics within sampling noise."""
    from PIL import Image

    torch.manual_seed(0)
    cls = TASKS[name]
    task = cls(build_encoder("small_cnn", 0), cls.Config(**cls.contract_overrides | overrides), 32)
    transform = task.reference_transform()
    batch = load_dataset(DatasetConfig(name="synthetic", synthetic={"train": 400, "test": 8})).train_x
    per_image = [transform(Image.fromarray(img.permute(1, 2, 0).numpy())) for img in batch]
    per_image = [v if isinstance(v, list | tuple) else [v] for v in per_image]
    reference = [torch.stack(vs) for vs in zip(*per_image)]
    if hasattr(task, "views"):
        device = list(task.views(batch, torch.Generator().manual_seed(0)))
    else:  # rotation: its only view is the cropped and flipped batch
        device = [crop_flip(to_input(batch), torch.Generator().manual_seed(0))]
    assert [v.shape for v in reference] == [v.shape for v in device]
    for ref, dev in zip(reference, device):
        assert ref.mean().item() == pytest.approx(dev.mean().item(), abs=0.1)
        assert ref.std().item() == pytest.approx(dev.std().item(), rel=0.1)
    loss = task.loss_views(*reference)
    assert loss.shape == () and torch.isfinite(loss)


def test_every_view_making_task_has_a_reference_pipeline():
    """Tasks built on two views (lightly's transforms exist for all of them) and rotation can run on the
    reference path; the grid, patch and colour tasks have views only on the device."""
    assert {"simclr", "moco", "byol", "simsiam", "barlowtwins", "vicreg", "dino", "swav", "rotation"} <= set(REFERENCED)


@pytest.mark.parametrize("name", ON_CNN)
def test_loss_runs_under_bf16_autocast(name, images):
    """On CUDA the loop runs in bf16 autocast; the same mixed-precision step on the CPU catches dtype errors
    (a loss or head that mixes bf16 and fp32) without a GPU."""
    task = make(name)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = task.loss(images[:8], torch.Generator().manual_seed(0))
    loss.float().backward()
    assert torch.isfinite(loss.float())
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in task.parameters())
