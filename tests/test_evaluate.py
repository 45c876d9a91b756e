import numpy as np
import torch
import torch.nn.functional as F

from bench.config.sections import DatasetConfig
from bench.data.datasets import load_dataset
from bench.models.encoders import build_encoder
from bench.protocols.features import extract_features
from bench.protocols.finetune import FinetuneConfig, finetune
from bench.protocols.linear import LinearConfig, fit_logistic, linear_probe


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


def test_knn_against_a_hand_computed_example():
    from bench.protocols.knn import KNNConfig, knn_classifier

    # Labelled bank on the unit circle: angles 0 and 10 degrees are class 0, 90 degrees is class 1.
    angles = torch.tensor([0.0, 10.0, 90.0]) * torch.pi / 180
    bank = torch.stack([angles.cos(), angles.sin()], 1) * torch.tensor([[1.0], [3.0], [2.0]])  # norms don't matter
    labels = torch.tensor([0, 0, 1])
    query = torch.tensor([[torch.cos(torch.tensor(60 * torch.pi / 180)), torch.sin(torch.tensor(60 * torch.pi / 180))]])
    # k = 3, T = 0.1: votes class 0 = e^(cos60/T) + e^(cos50/T) = e^5 + e^6.43 = 768.5; class 1 = e^(cos30/T) = 5760
    fitted = knn_classifier(bank, labels, 2, KNNConfig(k=3, temperature=0.1))
    assert fitted.predict(query).tolist() == [1]
    # T = 10 flattens the weights: two class-0 neighbours outvote one class-1 neighbour
    assert knn_classifier(bank, labels, 2, KNNConfig(k=3, temperature=10.0)).predict(query).tolist() == [0]
    # k = 1: the nearest neighbour alone (90 degrees is 30 away, 10 degrees is 50 away)
    assert knn_classifier(bank, labels, 2, KNNConfig(k=1)).predict(query).tolist() == [1]
    # k is capped by the number of labelled images, and chunking does not change the answer
    capped = knn_classifier(bank, labels, 2, KNNConfig(k=200, chunk=1))
    assert capped.chosen["k"] == 3 and capped.predict(torch.cat([query, -query])).tolist() == [1, 0]


def test_linear_probe_validates_inside_tiny_budgets_or_says_it_cannot():
    x, y = separable(9, 0)  # 3 per class: 3-fold cross-validation
    fitted = linear_probe(x, y, 3, LinearConfig(l2_grid=[1e-4, 1e-2]), seed=0)
    assert fitted.chosen["validation"] == "3-fold" and fitted.val_acc is not None
    x, y = separable(3, 0)  # 1 per class: no validation possible, the grid's middle is used and recorded
    fitted = linear_probe(x, y, 3, LinearConfig(l2_grid=[1e-4, 1e-3, 1e-2]), seed=0)
    assert fitted.chosen == {"l2": 1e-3, "validation": "none"} and fitted.val_acc is None


def test_knn_votes_match_a_direct_computation_on_random_features():
    from bench.protocols.knn import KNNConfig, knn_classifier

    gen = torch.Generator().manual_seed(0)
    bank, query = torch.randn(300, 16, generator=gen), torch.randn(50, 16, generator=gen)
    labels = torch.randint(0, 5, (300,), generator=gen)
    sim = F.normalize(query, dim=1) @ F.normalize(bank, dim=1).T
    top, idx = sim.topk(20, dim=1)
    votes = np.zeros((50, 5))
    for i in range(50):  # each neighbour votes exp(cos / T) for its class
        for s, j in zip(top[i].tolist(), idx[i].tolist()):
            votes[i, labels[j]] += np.exp(s / 0.1)
    got = knn_classifier(bank, labels, 5, KNNConfig(k=20, temperature=0.1, chunk=16)).predict(query)
    assert got.tolist() == votes.argmax(1).tolist()
