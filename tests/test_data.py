import numpy as np
import pytest
from PIL import Image

from bench.config.sections import DatasetConfig
from bench.data.budgets import budget_indices
from bench.data.datasets import load_dataset
from bench.errors import DataError
from bench.protocols.validation import split_train_val, validation_folds

LABELS = np.repeat(np.arange(10), 50)  # 500 images, 10 classes


@pytest.mark.parametrize("budget", [10, 100, 123, 499])
def test_budgets_are_class_balanced(budget):
    idx = budget_indices(LABELS, budget, seed=0)
    counts = np.bincount(LABELS[idx], minlength=10)
    assert len(idx) == len(set(idx)) == budget
    assert counts.max() - counts.min() <= 1


def test_budgets_are_nested_within_a_seed_and_deterministic():
    for seed in range(3):
        subsets = [set(budget_indices(LABELS, b, seed)) for b in (10, 25, 100, 101, 250, 499)]
        for small, large in zip(subsets, subsets[1:]):
            assert small < large
        assert set(budget_indices(LABELS, 100, seed)) == subsets[2]
    assert set(budget_indices(LABELS, 100, 0)) != set(budget_indices(LABELS, 100, 1))


def test_full_budget_and_impossible_budgets():
    assert len(budget_indices(LABELS, "full", 0)) == 500
    with pytest.raises(DataError, match="smaller than the number of classes"):
        budget_indices(LABELS, 5, 0)
    with pytest.raises(DataError, match="exceeds"):
        budget_indices(LABELS, 501, 0)


def test_validation_split_comes_from_inside_the_budget():
    idx = budget_indices(LABELS, 100, seed=0)
    train, val = split_train_val(idx, LABELS, 0.2, seed=0)
    assert set(train) | set(val) == set(idx) and not set(train) & set(val)
    assert np.bincount(LABELS[val], minlength=10).min() >= 1
    assert np.bincount(LABELS[train], minlength=10).min() >= 1
    # 10 labels, 10 classes: one per class cannot be split; the split keeps them for training
    train, val = split_train_val(budget_indices(LABELS, 10, 0), LABELS, 0.2, 0)
    assert len(train) == 10 and len(val) == 0


def test_labelled_subset_is_disjoint_from_the_test_set():
    data = load_dataset(DatasetConfig(name="synthetic"))
    idx = budget_indices(data.train_y.numpy(), 64, seed=0)
    test_images = {bytes(x.numpy().tobytes()) for x in data.test_x}
    assert not any(data.train_x[i].numpy().tobytes() in test_images for i in idx)
    assert idx.max() < len(data.train_x)


def test_synthetic_data_shapes():
    data = load_dataset(DatasetConfig(name="synthetic", synthetic={"classes": 3, "train": 30, "test": 12, "size": 16}))
    assert data.train_x.shape == (30, 3, 16, 16) and data.train_x.dtype.is_floating_point is False
    assert data.num_classes == 3 and data.test_x.shape[0] == 12
    assert len(data.pool) == 30


def _write_folder(root, split, classes, n):
    rng = np.random.default_rng(0)
    for c in classes:
        (root / split / c).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(root / split / c / f"{i}.png")


def test_imagefolder_is_decoded_once_and_cached(tmp_path):
    _write_folder(tmp_path, "train", ["cat", "dog"], 5)
    _write_folder(tmp_path, "test", ["cat", "dog"], 2)
    (tmp_path / "unlabeled").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "unlabeled" / "u.png")
    cfg = DatasetConfig(name="imagefolder", root=str(tmp_path))
    first = load_dataset(cfg)
    assert first.classes == ["cat", "dog"] and first.train_x.shape == (10, 3, 8, 8)
    assert len(first.pool) == 11  # train images plus unlabeled/
    assert (tmp_path / ".bench-cache" / "imagefolder" / "train_x.npy").exists()
    second = load_dataset(cfg)
    assert (first.train_x == second.train_x).all() and (first.test_y == second.test_y).all()


def test_missing_data_says_where_it_looked(tmp_path):
    with pytest.raises(DataError) as err:
        load_dataset(DatasetConfig(name="imagefolder", root=str(tmp_path / "nowhere")))
    assert "nowhere" in str(err.value) and "train/<class>" in str(err.value)


def test_failed_download_says_where_it_looked_and_how_to_supply_data(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    calls = []

    class Offline:
        def __init__(self, root, train=True, download=False):
            calls.append(download)
            if download:
                raise OSError("no network")
            raise RuntimeError("Dataset not found or corrupted")

    monkeypatch.setattr(tvd, "CIFAR10", Offline)
    with pytest.raises(DataError) as err:
        load_dataset(DatasetConfig(name="cifar10", root=str(tmp_path)))
    msg = str(err.value)
    assert calls == [False, True]  # looked on disk first, downloaded only then
    assert f"{tmp_path}/cifar10/{{train,test}}" in msg and "BENCH_DATA" in msg and "no network" in msg


def test_validation_folds_split_once_cross_validate_or_give_up():
    one = validation_folds(budget_indices(LABELS, 100, 0), LABELS, 0.2, seed=0)  # 10 per class: one split
    assert len(one) == 1 and len(one[0][1]) == 20
    idx = budget_indices(LABELS, 30, 0)  # 3 per class: too few for a 20% hold-out, so 3-fold CV
    folds = validation_folds(idx, LABELS, 0.2, seed=0)
    assert len(folds) == 3
    vals = [set(v) for _, v in folds]
    assert set().union(*vals) == set(idx) and sum(len(v) for v in vals) == len(idx)  # each image validated once
    for fit, val in folds:
        assert not set(fit) & set(val) and set(fit) | set(val) == set(idx)
        assert np.bincount(LABELS[val], minlength=10).tolist() == [1] * 10  # stratified
    assert validation_folds(budget_indices(LABELS, 10, 0), LABELS, 0.2, seed=0) == []  # 1 per class: no honest choice
