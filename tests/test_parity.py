"""The on-device views draw their random parameters like lightly's (torchvision-based) transforms do."""

import numpy as np
import pytest
import torch
import torchvision.transforms as T

from bench.augment import color_jitter, crop_boxes, random_grayscale

N = 4000


def test_crop_area_and_aspect_ratio_follow_torchvision():
    gen = torch.Generator().manual_seed(0)
    w, h, _, _ = crop_boxes(torch.zeros(N, 3, 32, 32), gen, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3))
    ours_area, ours_ratio = (w * h).numpy(), (w / h).numpy()
    torch.manual_seed(0)
    img = torch.zeros(3, 224, 224)  # large enough that torchvision's integer pixels barely matter
    boxes = [T.RandomResizedCrop.get_params(img, scale=[0.08, 1.0], ratio=[3 / 4, 4 / 3]) for _ in range(N)]
    tv_area = np.array([bh * bw / 224**2 for _, _, bh, bw in boxes])
    tv_ratio = np.array([bw / bh for _, _, bh, bw in boxes])
    for q in (0.1, 0.25, 0.5, 0.75, 0.9):
        assert np.quantile(ours_area, q) == pytest.approx(np.quantile(tv_area, q), abs=0.03)
        assert np.quantile(ours_ratio, q) == pytest.approx(np.quantile(tv_ratio, q), abs=0.04)
    assert ours_area.min() >= 0.08 - 1e-6 and ours_area.max() <= 1 + 1e-6


def test_grayscale_rate():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(N, 3, 2, 2)
    out = random_grayscale(x, gen, p=0.2)
    gray = ((out[:, 0] == out[:, 1]) & (out[:, 1] == out[:, 2])).all(-1).all(-1).float().mean().item()
    assert gray == pytest.approx(0.2, abs=3 * (0.2 * 0.8 / N) ** 0.5)


def test_brightness_jitter_range_and_probability():
    gen = torch.Generator().manual_seed(0)
    x = torch.full((N, 3, 1, 1), 0.5)
    out = color_jitter(x, gen, p=0.8, brightness=0.4, contrast=0.0, saturation=0.0, hue=0.0)
    factor = (out[:, 0, 0, 0] / 0.5).numpy()
    changed = np.abs(factor - 1) > 1e-6
    assert changed.mean() == pytest.approx(0.8, abs=0.03)  # applied with probability cj_prob
    assert factor.min() >= 0.6 - 1e-6 and factor.max() <= 1.4 + 1e-6  # torchvision: U(1 - s, 1 + s)
    assert factor[changed].mean() == pytest.approx(1.0, abs=0.02) and factor[changed].std() == pytest.approx(
        0.8 / 12**0.5, abs=0.02
    )
