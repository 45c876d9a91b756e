import socket
import subprocess
import time

import pytest
import torch

from bench.config.sections import DatasetConfig, PretrainConfig
from bench.data.datasets import load_dataset
from bench.models.encoders import build_encoder
from bench.store.lease import Holder, describe_saver, machine_id, process_start
from bench.tasks import TASKS
from bench.train.loop import pretrain
from bench.train.optim import warmup_cosine


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


def simclr_task():
    torch.manual_seed(0)
    return TASKS["simclr"](build_encoder("small_cnn", 0), TASKS["simclr"].Config(hidden_dim=32, out_dim=16), 32)


@pytest.mark.parametrize("augment", ["device", pytest.param("lightly", marks=pytest.mark.slow)])
def test_killed_pretraining_resumes_to_the_same_weights(images, tmp_path, augment):
    cfg = PretrainConfig(epochs=4, batch_size=16, lr=0.05, checkpoint_every_s=0, augment=augment, workers=0)
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


@pytest.mark.parametrize("workers", [0, pytest.param(2, marks=pytest.mark.slow)])  # 2: DataLoader processes
def test_reference_path_trains_and_is_reproducible(images, workers):
    """lightly's per-image transforms in DataLoader workers: seeded per (seed, epoch), so two runs agree."""
    cfg = PretrainConfig(epochs=3, batch_size=16, lr=0.05, augment="lightly", workers=workers)
    a, b = simclr_task(), simclr_task()
    history = pretrain(a, images, cfg, seed=0)
    pretrain(b, images, cfg, seed=0)
    assert [h.epoch for h in history] == [1, 2, 3] and all(h.loss > 0 for h in history)
    for x, y in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.allclose(x.float(), y.float(), atol=1e-6)
    fresh = simclr_task()
    assert any(not torch.equal(x, y) for x, y in zip(a.encoder.parameters(), fresh.encoder.parameters()))


def test_reference_path_restores_the_callers_random_state(images):
    task, cfg = simclr_task(), PretrainConfig(epochs=1, batch_size=16, augment="lightly", workers=0)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    pretrain(task, images, cfg, seed=0)
    assert torch.equal(torch.rand(3), expected)


def test_a_task_without_a_reference_pipeline_is_refused(images):
    torch.manual_seed(0)
    task = TASKS["jigsaw"](build_encoder("small_cnn", 0), TASKS["jigsaw"].Config(), 32)
    with pytest.raises(ValueError, match="no reference pipeline"):
        pretrain(task, images, PretrainConfig(epochs=1, batch_size=16, augment="lightly"), seed=0)


@pytest.mark.slow
def test_compiled_pretraining_trains_and_leaves_a_plain_encoder(images):
    """torch.compile (inductor, on the CPU here) in place: same parameter names, eager again afterwards."""
    plain, compiled = rotation_task(), rotation_task()
    cfg = PretrainConfig(epochs=2, batch_size=32, lr=0.05)
    expected = pretrain(plain, images, cfg, seed=0)
    history = pretrain(compiled, images, cfg.model_copy(update={"compile": True}), seed=0)
    assert compiled.encoder._compiled_call_impl is None
    assert list(compiled.state_dict()) == list(plain.state_dict())
    assert history[0].loss == pytest.approx(expected[0].loss, rel=1e-3)  # the same computation, fused
    assert all(torch.isfinite(torch.tensor(h.loss)) for h in history)


def test_a_resumed_pretraining_says_whose_state_it_resumes_and_whether_that_process_still_runs(images, tmp_path):
    cfg = PretrainConfig(epochs=3, batch_size=16, lr=0.05, checkpoint_every_s=0, workers=0)
    other = subprocess.Popen(["sleep", "60"])  # the suite that saved the state, still training
    saver = Holder(socket.gethostname(), machine_id(), other.pid, process_start(other.pid), "t", time.time(), 0)
    owner = {"suite": "other", **saver.tags()}

    def die_after_two(stats):
        if stats.epoch == 2:
            raise KeyboardInterrupt

    state = tmp_path / "state.pt"
    with pytest.raises(KeyboardInterrupt):
        pretrain(rotation_task(), images, cfg, 0, die_after_two, state, owner=owner)
    seen = []
    pretrain(rotation_task(), images, cfg, 0, None, state, owner={}, on_resume=lambda *a: seen.append(a))
    assert seen == [(2, owner)]
    assert describe_saver(owner) == f"suite 'other' (still running: {saver.describe()})"
    other.kill()
    other.wait()
    assert describe_saver(owner) == "suite 'other' (interrupted)"
    assert describe_saver(None) == "an earlier run"  # a state saved before owners were recorded


def test_progress_within_an_epoch_is_reported_at_every_step_and_printed_when_due(images, monkeypatch):
    from bench.run.progress import PretrainProgress

    cfg = PretrainConfig(epochs=2, batch_size=16, lr=0.05, workers=0)
    steps = []
    pretrain(rotation_task(), images, cfg, 0, on_step=lambda *a: steps.append(a))
    assert steps == [(e, s, 4) for e in (1, 2) for s in range(1, 5)]  # 64 images, batches of 16
    monkeypatch.setenv("BENCH_PROGRESS_EVERY_S", "0")  # every step due
    said = []
    ticks = PretrainProgress(said.append, "rotation seed=0", 2)
    for epoch, step, n in steps:
        ticks.step(epoch, step, n)
    # steps 1-3 of each epoch (the last step's line is the epoch's own)
    assert [s.split(": ")[1].split(" in ")[0] for s in said] == ["step 1/4", "step 2/4", "step 3/4"] * 2
    assert all(s.startswith("rotation seed=0 epoch ") and s.endswith("left in the epoch") for s in said)
