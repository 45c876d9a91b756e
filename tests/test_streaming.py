"""A cache that need not fit in memory: written a chunk at a time, memory-mapped when read, and a pretraining pool
that streams from it with the same batches as one kept on the device."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench.config.sections import DatasetConfig, PretrainConfig
from bench.data import cache as cache_module
from bench.data import imagefolder
from bench.data.datasets import load_dataset
from bench.data.pool import Pool, StreamedPool
from bench.data.sources import ARRAYS, _identity
from bench.models.encoders import build_encoder
from bench.tasks import TASKS
from bench.train.loop import pretrain


def _folder(root: Path, per_class: int = 12, unlabeled: int = 10, size: int = 32) -> Path:
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("test", 4)):
        for c in ("cat", "dog", "fox"):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (size, size, 3), np.uint8)).save(root / split / c / f"{i}.png")
    (root / "unlabeled").mkdir()
    for i in range(unlabeled):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), np.uint8)).save(root / "unlabeled" / f"{i}.png")
    return root


def _load(root: Path, **kw):
    return load_dataset(DatasetConfig(name="imagefolder", root=str(root), **kw))


@pytest.fixture
def folder(tmp_path):
    return _folder(tmp_path)


def test_a_cache_written_in_small_chunks_has_the_identity_of_the_whole_arrays(folder, monkeypatch):
    monkeypatch.setattr(imagefolder, "CHUNK", 5)  # 36 train images: 8 chunks, the last one short
    data = _load(folder)
    found = cache_module.read_cache(folder / ".bench-cache" / "imagefolder", imagefolder.scan_folder(folder).manifest)
    classes, arrays, identity, _ = found
    whole = {k: np.array(arrays[k]) for k in ARRAYS}
    assert identity == data.identity == _identity(classes, whole)
    assert whole["train_x"].shape == (36, 3, 32, 32) and whole["unlabeled_x"].shape == (10, 3, 32, 32)
    monkeypatch.setattr(imagefolder, "CHUNK", 2048)
    rebuilt = folder / "again"
    _folder(rebuilt)
    assert _load(rebuilt).identity == data.identity  # the chunk size is not part of the data


def test_loaded_images_are_memory_mapped_and_the_pool_reads_the_files(folder):
    _load(folder)  # builds the cache
    data = _load(folder)  # reads it
    _, arrays, _, _ = cache_module.read_cache(
        folder / ".bench-cache" / "imagefolder", imagefolder.scan_folder(folder).manifest
    )
    assert all(isinstance(arrays[k], np.memmap) for k in ("train_x", "test_x", "unlabeled_x"))
    assert [p.mapped for p in data.pool.parts] == [True, True]
    in_memory = np.concatenate([np.array(arrays["train_x"]), np.array(arrays["unlabeled_x"])])[data.pool.rows]
    positions = np.random.default_rng(1).integers(0, len(data.pool), 50)  # repeats and any order
    assert np.array_equal(data.pool.take(positions).numpy(), in_memory[positions])
    assert np.array_equal(data.pool.resident().numpy(), in_memory)
    assert np.array_equal(data.pool[3:9].numpy(), in_memory[3:9]) and np.array_equal(data.pool[4].numpy(), in_memory[4])


def test_a_slice_of_a_memory_map_is_not_read_as_the_whole_file(folder):
    _load(folder)
    mapped = np.load(folder / ".bench-cache" / "imagefolder" / "train_x.npy", mmap_mode="c")
    pool = Pool([mapped[5:], np.zeros((0, 3, 32, 32), np.uint8)], np.arange(4))
    assert not pool.parts[0].mapped  # a slice keeps the file's name and offset: read through numpy instead
    assert np.array_equal(pool.take([0, 1, 2, 3]).numpy(), np.array(mapped[5:9]))


@pytest.mark.parametrize("name", ["rotation", "simclr"])
def test_a_streamed_pool_trains_to_the_same_weights_as_one_on_the_device(folder, name):
    _load(folder)
    data = _load(folder, pool_size=40)
    cfg = PretrainConfig(epochs=2, batch_size=8, lr=0.05)

    def trained(images):
        torch.manual_seed(0)
        task = TASKS[name](build_encoder("small_cnn", 0), TASKS[name].Config(), 32)
        history = pretrain(task, images, cfg, seed=3)
        return [h.loss for h in history], task.encoder.state_dict()

    cpu = torch.device("cpu")
    streamed = data.pool.on(cpu, "stream")
    resident = data.pool.on(cpu, "resident")
    assert isinstance(streamed, StreamedPool) and isinstance(resident, torch.Tensor)
    (loss_a, weights_a), (loss_b, weights_b) = trained(streamed), trained(resident)
    assert loss_a == loss_b
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)


def test_streamed_batches_are_the_resident_batches_in_order(folder):
    _load(folder)
    data = _load(folder)
    order = torch.randperm(len(data.pool), generator=torch.Generator().manual_seed(0))
    resident = data.pool.resident()
    streamed = list(StreamedPool(data.pool, torch.device("cpu")).batches(order, 7, 5))
    assert len(streamed) == 5
    assert all(torch.equal(b, resident[order[k * 7 : (k + 1) * 7]]) for k, b in enumerate(streamed))


def test_auto_keeps_the_pool_on_the_device_only_when_it_fits(folder, monkeypatch):
    from bench.data import pool as pool_module

    _load(folder)
    data = _load(folder)
    cpu = torch.device("cpu")
    assert isinstance(data.pool.on(cpu, "auto"), torch.Tensor)
    monkeypatch.setattr(pool_module, "free_memory", lambda device: data.pool.nbytes)  # needs half of it free
    assert isinstance(data.pool.on(cpu, "auto"), StreamedPool)
    small = pool_module.on_device_if_it_fits(data.train_x, torch.device("meta"))
    assert small.device.type == "cpu"  # 36 images do not fit in "half" the pool's bytes: kept on the host


def test_the_pool_mode_is_not_part_of_any_cell_key():
    from bench.config.load import load_suite
    from bench.run.plan import build_plan

    from .conftest import SMOKE

    keys = {
        mode: [c.key for c in build_plan(load_suite(SMOKE, [f"execution.pool={mode!r}"]), "data")]
        for mode in ("auto", "stream", "resident")
    }
    assert keys["auto"] == keys["stream"] == keys["resident"]
