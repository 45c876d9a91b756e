import torch

from bench.config import DatasetConfig, FinetuneConfig, LinearConfig
from bench.data import load_dataset
from bench.encoders import build_encoder
from bench.evaluate import extract_features, finetune, fit_logistic, linear_probe


def separable(n: int, seed: int):
    centres = torch.randn(3, 16, generator=torch.Generator().manual_seed(99)) * 4  # the same classes every call
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    return centres[y] + torch.randn(n, 16, generator=gen), y


def test_linear_probe_separates_separable_features():
    x, y = separable(300, 0)
    xt, yt = separable(300, 1)
    fitted = linear_probe(x, y, 3, LinearConfig(l2_grid=[1e-4, 1e-2]), seed=0)
    assert fitted.val_acc > 0.95 and fitted.chosen["l2"] in (1e-4, 1e-2)
    assert (fitted.predict(xt) == yt).float().mean() > 0.97


def test_stronger_l2_shrinks_the_weights():
    x, y = separable(90, 0)
    weak, strong = fit_logistic(x, y, 3, 1e-4, 50), fit_logistic(x, y, 3, 1.0, 50)
    assert strong.weight.norm() < weak.weight.norm()


def test_finetune_learns_the_synthetic_classes_and_never_sees_test_labels():
    data = load_dataset(DatasetConfig(name="synthetic", synthetic={"train": 128, "test": 64}))
    cfg = FinetuneConfig(epochs=1, min_steps=40, batch_size=32, lr=0.05)
    fitted = finetune(build_encoder("small_cnn", 0), data.train_x, data.train_y, 4, cfg, seed=0)
    assert fitted.chosen["steps"] == 40
    pred = fitted.predict(data.test_x)  # images only: the protocol returns predictions, the caller scores
    assert pred.shape == data.test_y.shape
    assert (pred == data.test_y).float().mean() > 0.5


def test_features_are_frozen_and_batched():
    enc = build_encoder("small_cnn", 0)
    images = torch.randint(0, 255, (10, 3, 32, 32), dtype=torch.uint8)
    a = extract_features(enc, images, torch.device("cpu"), batch=3)
    b = extract_features(enc, images, torch.device("cpu"), batch=10)
    assert a.shape == (10, enc.out_dim) and torch.allclose(a, b, atol=1e-5)
