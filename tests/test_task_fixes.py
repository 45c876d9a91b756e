"""Task details that a wrong implementation would get silently wrong: MoCo's queue and shuffle-BN, BYOL's
asymmetric views, DINO's frozen last layer, relative-location gaps, minimum image sizes and flip-free views."""

import pytest
import torch
import torch.nn.functional as F
from lightly.models.modules.memory_bank import MemoryBankModule
from PIL import Image

import bench.tasks.colorization as colorization
import bench.tasks.inpainting as inpainting
from bench.augment.views import _blur_prob
from bench.models.encoders import build_encoder
from bench.tasks import TASKS


def make(name: str, size: int = 32, **overrides):
    torch.manual_seed(0)
    cls = TASKS[name]
    return cls(build_encoder("small_cnn", 0), cls.Config(**overrides), size)


def random_images(b: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (b, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def info_nce(q: torch.Tensor, k: torch.Tensor, negatives: torch.Tensor, temperature: float) -> torch.Tensor:
    """MoCo's InfoNCE by hand: each query against its own key and the negatives (K, D), all unit vectors."""
    logits = torch.cat([(q * k).sum(1, keepdim=True), q @ negatives.T], 1) / temperature
    return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long))


def test_moco_contrasts_both_queries_with_the_queue_before_the_step_and_then_enqueues_both_keys():
    task = make("moco", queue_size=64)
    gen = torch.Generator().manual_seed(0)
    task.loss_views(*task.views(random_images(16, seed=1), gen))  # the queue now holds real keys
    (queue,) = [m for m in task.modules() if isinstance(m, MemoryBankModule) and m.size[0] > 0]
    before, ptr = queue.bank.clone(), int(queue.bank_ptr)
    v1, v2 = task.views(random_images(16, seed=2), gen)
    loss = task.loss_views(v1, v2)
    with torch.no_grad():  # the same embeddings again (BatchNorm in training mode: the same batch statistics)
        q1, q2 = (F.normalize(task.head(task.encoder(v)), dim=1) for v in (v1, v2))
        k1, k2 = (F.normalize(task.key(v), dim=1) for v in (v1, v2))
    t = task.cfg.temperature
    expected = 0.5 * (info_nce(q1, k2, before, t) + info_nce(q2, k1, before, t))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)  # q2 never meets k2 among its negatives
    added = queue.bank[ptr : ptr + 32]
    assert torch.allclose(added, torch.cat([k1, k2]), atol=1e-5) or torch.allclose(
        added, torch.cat([k2, k1]), atol=1e-5
    )


def test_moco_queue_is_part_of_the_training_state():
    """A resumed run restores the task's state_dict: the queue must be in it (lightly's bank is not)."""
    task, fresh = make("moco", queue_size=64), make("moco", queue_size=64)
    task.loss_views(*task.views(random_images(16), torch.Generator().manual_seed(0)))
    fresh.load_state_dict(task.state_dict())
    assert torch.equal(fresh.queue.bank, task.queue.bank) and torch.equal(fresh.queue.bank_ptr, task.queue.bank_ptr)


def _changed_rows(a: torch.Tensor, b: torch.Tensor) -> set[int]:
    return set(torch.nonzero(~torch.isclose(a, b, atol=1e-6).all(1)).flatten().tolist())


def test_moco_shuffle_bn_normalises_each_key_with_other_images_than_its_query():
    """Shuffle-BN on one device: queries in sub-batches of consecutive images, keys in sub-batches of a shuffled
    order, so a query and its key never share their BatchNorm statistics (the MoCo paper's 'cheating')."""
    task = make("moco", queue_size=0, bn_splits=2)
    v = torch.randn(64, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    q, k = task.embed(v)
    nudged = v.clone()
    nudged[1] += 1.0  # changes the BatchNorm statistics of image 1's sub-batches only
    q2, k2 = task.embed(nudged)
    query_group, key_group = _changed_rows(q, q2), _changed_rows(k, k2)
    assert len(query_group) == len(key_group) == 32  # two sub-batches of 32
    assert 1 in query_group and 1 in key_group
    assert len(query_group & key_group) < 24  # different companions: shuffled, not the same split


def test_byol_views_are_asymmetric_as_in_the_paper_and_lightly():
    task = make("byol", 96)
    (c1, _), (c2, _) = task.view_configs()
    assert (_blur_prob(c1, 96), c1.solarization_prob) == (1.0, 0.0)
    assert (_blur_prob(c2, 96), c2.solarization_prob) == (0.1, 0.2)
    (c1, _), (c2, _) = make("byol", 32).view_configs()
    assert (_blur_prob(c1, 32), _blur_prob(c2, 32), c2.solarization_prob) == (0.0, 0.0, 0.2)  # CIFAR-10 setting


def test_dino_freezes_the_last_layer_of_its_head_in_its_first_steps():
    task = make("dino")
    opt = torch.optim.AdamW(task.parameters(), lr=1e-2, weight_decay=0.1)  # decay would move frozen weights too
    images, last = random_images(16), task.head.last_layer

    def step():
        loss = task.loss(images, torch.Generator().manual_seed(0))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    task.before_step(1, 100)  # 1% of 100 steps: step 1 frozen
    frozen = [p.detach().clone() for p in last.parameters()]
    others = [p.detach().clone() for p in task.head.layers.parameters()]
    step()
    assert all(torch.equal(a, b) for a, b in zip(frozen, last.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(others, task.head.layers.parameters()))
    direction = last.weight_v.detach().clone()
    task.before_step(2, 100)
    step()
    assert not torch.equal(direction, last.weight_v)
    assert not last.weight_g.requires_grad  # lightly's normalised last layer keeps its norm fixed throughout


def coordinate_images(b: int, size: int) -> torch.Tensor:
    """uint8 images whose channel 0 holds the row and channel 1 the column of every pixel (size <= 256)."""
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return torch.stack([rows, cols, torch.zeros_like(rows)]).to(torch.uint8)[None].repeat(b, 1, 1, 1)


def test_relative_location_at_96_px_has_the_papers_patch_to_gap_ratio():
    """Doersch et al.: 96 px patches, 48 px gaps, jitter up to 7 px. At 96 px: 32 px cells, 21 px patches,
    gaps of 11 px on average, 7-15 px with a jitter of up to 2 px per patch."""
    task = make("relative_location", 96)
    centre, other, labels, corners = task.pairs(coordinate_images(256, 96), torch.Generator().manual_seed(0))
    t = centre.shape[-1]
    assert t == other.shape[-1] == 21
    d = (corners[:, 1] - corners[:, 0]).float()  # (row, col) offset of the neighbour, px
    apart = d.abs() > 16  # the axes along which the neighbour lies in another cell
    gaps = d.abs()[apart] - t
    assert gaps.min() >= 7 and gaps.max() <= 15
    assert gaps.mean().item() == pytest.approx(11, abs=1) and t / gaps.mean().item() == pytest.approx(2, abs=0.2)
    assert (d.abs()[~apart] <= 4).all()  # jitter along the shared axis: two patches, 2 px each


@pytest.mark.parametrize("name", ["jigsaw", "relative_location", "inpainting"])
def test_patch_tasks_refuse_images_too_small_for_them_before_training(name):
    cls = TASKS[name]
    assert cls.min_image_size > 8
    with pytest.raises(ValueError, match=f"{name}.*{cls.min_image_size} px"):
        cls.check_data(torch.zeros(4, 3, 8, 8, dtype=torch.uint8))
    cls.check_data(torch.zeros(4, 3, 32, 32, dtype=torch.uint8))
    make(name, cls.min_image_size).loss(random_images(4, cls.min_image_size), torch.Generator().manual_seed(0))


def test_rotation_works_on_8_px_images():
    TASKS["rotation"].check_data(torch.zeros(4, 3, 8, 8, dtype=torch.uint8))


def half_images(b: int, size: int = 32) -> torch.Tensor:
    """Left half black, right half white: a mirrored view has its bright side on the left."""
    x = torch.zeros(b, 3, size, size, dtype=torch.uint8)
    x[..., size // 2 :] = 255
    return x


def assert_never_mirrored(x: torch.Tensor) -> None:
    cols = x.float().mean((1, 2))  # (B, W)
    half = x.shape[-1] // 2
    assert (cols[:, :half].mean(1) < cols[:, half:].mean(1)).all()


def test_rotation_views_are_never_mirrored_without_flips(monkeypatch):
    task = make("rotation")
    task.flip = False
    seen = []
    monkeypatch.setattr(task, "loss_views", lambda x: seen.append(x) or x.sum())
    task.loss(half_images(64), torch.Generator().manual_seed(0))
    assert_never_mirrored(seen[0])
    img = Image.fromarray(half_images(1)[0].permute(1, 2, 0).numpy())
    transform = task.reference_transform()
    assert_never_mirrored(torch.stack([transform(img) for _ in range(64)]))


def test_inpainting_targets_are_never_mirrored_without_flips(monkeypatch):
    task = make("inpainting")
    task.flip = False
    seen = []
    monkeypatch.setattr(inpainting, "masked_l2", lambda pred, target, mask: seen.append(target) or pred.sum())
    task.loss(half_images(64), torch.Generator().manual_seed(0))
    assert_never_mirrored(seen[0])


def test_colorization_views_are_never_mirrored_without_flips(monkeypatch):
    task = make("colorization")
    task.flip = False
    seen = []
    real = colorization.rgb_to_lab
    monkeypatch.setattr(colorization, "rgb_to_lab", lambda x: seen.append(x) or real(x))
    task.loss(half_images(64), torch.Generator().manual_seed(0))
    assert_never_mirrored(seen[0])
