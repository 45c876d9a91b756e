import pytest
import torch

from bench.config import DatasetConfig, PretrainConfig
from bench.data import load_dataset
from bench.encoders import build_encoder
from bench.pretrain import pretrain, warmup_cosine
from bench.tasks import TASKS


def rotation_task():
    torch.manual_seed(0)
    return TASKS["rotation"](build_encoder("small_cnn", 0), TASKS["rotation"].Config(head_hidden=32), 32)


@pytest.fixture(scope="module")
def images():
    return load_dataset(DatasetConfig(name="synthetic", synthetic={"train": 64, "test": 8})).train_x


def test_rotation_pretraining_lowers_the_loss_on_synthetic_data(images):
    cfg = PretrainConfig(epochs=4, batch_size=16, lr=0.05)
    history = pretrain(rotation_task(), images, cfg, seed=0)
    assert [h.epoch for h in history] == [1, 2, 3, 4]
    assert history[-1].loss < history[0].loss and all(h.images_per_s > 0 for h in history)


def test_killed_pretraining_resumes_to_the_same_weights(images, tmp_path):
    cfg = PretrainConfig(epochs=4, batch_size=16, lr=0.05, checkpoint_every_s=0)
    reference = rotation_task()
    pretrain(reference, images, cfg, seed=0)

    def die_after_two(stats):
        if stats.epoch == 2:
            raise KeyboardInterrupt  # stands in for a kill after epoch 2's state was saved

    state = tmp_path / "state.pt"
    with pytest.raises(KeyboardInterrupt):
        pretrain(rotation_task(), images, cfg, seed=0, on_epoch=die_after_two, state_path=state)
    assert state.exists()
    seen = []
    resumed = rotation_task()
    history = pretrain(resumed, images, cfg, seed=0, on_epoch=lambda s: seen.append(s.epoch), state_path=state)
    assert seen == [1, 2, 3, 4] and len(history) == 4  # replayed epochs 1-2, trained 3-4
    for a, b in zip(reference.state_dict().values(), resumed.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-5)


def test_warmup_then_cosine_schedule():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = warmup_cosine(opt, total_steps=10, warmup_steps=2)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.5) and lrs[1] == pytest.approx(1.0)
    assert lrs[2] == pytest.approx(1.0) and lrs[-1] < 0.05 and lrs == sorted(lrs[:2]) + sorted(lrs[2:], reverse=True)
