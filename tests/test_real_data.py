"""A small real-data check on the local CIFAR-10 copy (skipped when BENCH_DATA does not hold it)."""

import pytest
import torch

from bench.config.sections import DatasetConfig
from bench.data.budgets import budget_indices
from bench.data.datasets import load_dataset
from bench.models.encoders import build_encoder
from bench.protocols.features import extract_features
from bench.protocols.linear import LinearConfig, linear_probe

from .conftest import cifar_root

pytestmark = pytest.mark.skipif(
    cifar_root() is None,
    reason="CIFAR-10 copy not found: set BENCH_DATA to a folder holding cifar10/train and cifar10/test",
)


def test_cifar10_subset_loads_and_random_features_beat_chance():
    data = load_dataset(DatasetConfig(name="cifar10", train_size=2000, test_size=1000))
    assert data.classes[:3] == ["airplane", "automobile", "bird"] and data.num_classes == 10
    assert data.train_x.shape == (2000, 3, 32, 32) and data.train_x.dtype == torch.uint8
    assert torch.bincount(data.test_y).tolist() == [100] * 10
    enc = build_encoder("small_cnn", 0)
    feats, test = (
        extract_features(enc, data.train_x, torch.device("cpu")),
        extract_features(enc, data.test_x, torch.device("cpu")),
    )
    idx = torch.as_tensor(budget_indices(data.train_y.numpy(), 1000, seed=0))
    fitted = linear_probe(feats[idx], data.train_y[idx], 10, LinearConfig(), seed=0)
    acc = (fitted.predict(test) == data.test_y).float().mean().item()
    assert 0.18 < acc < 0.6  # chance is 0.10; random conv features on CIFAR-10 give about a quarter
