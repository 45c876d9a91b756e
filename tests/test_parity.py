"""The on-device views draw their random parameters like lightly's (torchvision-based) transforms do."""

import numpy as np
import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from PIL import ImageFilter
from torchvision.transforms._functional_tensor import _rgb2hsv as _tv_rgb2hsv

from bench.augment import ops as augment
from bench.augment.ops import color_jitter, crop_boxes, random_grayscale


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    return torch.stack([_tv_rgb2hsv(img) for img in x])


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


def _natural_images(n: int = 16, size: int = 16) -> torch.Tensor:
    """Smooth random colour images in [0, 1] (B, 3, size, size), with some pure greys and saturated pixels."""
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(n, 3, size // 4, size // 4, generator=gen)
    x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)
    x[0] = 0.5  # grey: hue undefined
    x[1, :, :4, :4] = torch.tensor([1.0, 1.0, 0.0])[:, None, None]  # tie between the two largest channels
    return (x * 255).round() / 255  # representable as uint8, for the PIL comparison


OPS = {
    "brightness": (augment.adjust_brightness, TF.adjust_brightness, (0.6, 1.4)),
    "contrast": (augment.adjust_contrast, TF.adjust_contrast, (0.6, 1.4)),
    "saturation": (augment.adjust_saturation, TF.adjust_saturation, (0.6, 1.4)),
    "hue": (augment.adjust_hue, TF.adjust_hue, (-0.5, 0.5)),
}


@pytest.mark.parametrize("op", OPS)
def test_colour_ops_equal_torchvision_on_tensors(op):
    ours, theirs, (lo, hi) = OPS[op]
    x = _natural_images()
    factors = torch.linspace(lo, hi, len(x))
    out = ours(x, factors[:, None, None, None])
    ref = torch.stack([theirs(img, f.item()) for img, f in zip(x, factors)])
    assert (out - ref).abs().max().item() < 1e-5


@pytest.mark.parametrize("op", OPS)
def test_colour_ops_match_lightlys_pil_images(op):
    """lightly's transforms run torchvision's ops on PIL images (uint8 arithmetic): within rounding of ours."""
    ours, theirs, (lo, hi) = OPS[op]
    x = _natural_images()
    factors = torch.linspace(lo, hi, len(x))
    out = ours(x, factors[:, None, None, None])
    ref = torch.stack([TF.to_tensor(theirs(TF.to_pil_image(img), f.item())) for img, f in zip(x, factors)])
    err = (out - ref).abs() * 255
    # PIL rounds to integers at every step; hue goes through 8-bit H, S, V channels and a shift truncated to
    # 1/255 of the wheel, up to 6/255 of the chroma per rounding step on saturated pixels
    assert err.mean().item() < 1.0 and err.max().item() <= (12 if op == "hue" else 2)


def _applied(out: torch.Tensor, x: torch.Tensor) -> np.ndarray:
    return ((out - x).abs().flatten(1).amax(1) > 1e-6).numpy()


def test_contrast_and_saturation_factor_ranges():
    gen = torch.Generator().manual_seed(0)
    x = torch.zeros(N, 3, 2, 2)
    x[:, :, 0], x[:, :, 1] = 0.3, 0.7  # grey image with two levels: contrast scales their difference
    out = color_jitter(x, gen, p=0.8, brightness=0.0, contrast=0.4, saturation=0.0, hue=0.0)
    factor = ((out[:, 0, 1, 0] - out[:, 0, 0, 0]) / 0.4).numpy()
    _check_uniform(factor, _applied(out, x), 0.6, 1.4, p=0.8)

    x = torch.tensor([0.6, 0.4, 0.5])[None, :, None, None].expand(N, 3, 2, 2).clone()
    out = color_jitter(x, gen, p=0.8, brightness=0.0, contrast=0.0, saturation=0.4, hue=0.0)
    gray = augment.grayscale(x)
    factor = ((out - gray)[:, 0, 0, 0] / (x - gray)[:, 0, 0, 0]).numpy()
    _check_uniform(factor, _applied(out, x), 0.6, 1.4, p=0.8)


def test_hue_shift_range():
    gen = torch.Generator().manual_seed(0)
    x = torch.tensor([0.9, 0.3, 0.1])[None, :, None, None].expand(N, 3, 1, 1).clone()
    out = color_jitter(x, gen, p=0.8, brightness=0.0, contrast=0.0, saturation=0.0, hue=0.1)
    hue_in = float(rgb_to_hsv(x[:1])[0, 0])
    shift = ((rgb_to_hsv(out)[:, 0, 0, 0] - hue_in + 0.5) % 1.0 - 0.5).numpy()
    _check_uniform(shift, _applied(out, x), -0.1, 0.1, p=0.8)


def _check_uniform(values: np.ndarray, applied: np.ndarray, lo: float, hi: float, p: float) -> None:
    assert applied.mean() == pytest.approx(p, abs=0.03)
    v = values[applied]
    assert v.min() >= lo - 1e-4 and v.max() <= hi + 1e-4
    assert v.mean() == pytest.approx((lo + hi) / 2, abs=0.02 * (hi - lo))
    assert v.std() == pytest.approx((hi - lo) / 12**0.5, abs=0.03 * (hi - lo))


def test_blur_equals_torchvision_and_matches_pil():
    x = _natural_images(4, 32)
    for sigma in (0.1, 0.7, 2.0):
        out = augment.blur(x, torch.full((len(x),), sigma), 13)
        ref = torch.stack([TF.gaussian_blur(img, 13, sigma) for img in x])
        assert (out - ref).abs().max().item() < 1e-5
        pil = torch.stack(
            [TF.to_tensor(TF.to_pil_image(img).filter(ImageFilter.GaussianBlur(radius=sigma))) for img in x]
        )
        assert ((out - pil).abs().mean() * 255).item() < 1.5  # lightly blurs with PIL (edge-extended borders)


def test_blur_and_solarize_rates():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(N, 3, 8, 8, generator=gen)
    assert _applied(augment.gaussian_blur(x, gen, p=0.5), x).mean() == pytest.approx(0.5, abs=0.03)
    out = augment.random_solarize(x, gen, p=0.2)
    applied = _applied(out, x)
    assert applied.mean() == pytest.approx(0.2, abs=0.02)
    ref = torch.stack([TF.solarize(img, 0.5) for img in x[applied]])
    assert torch.equal(out[applied], ref)  # lightly: PIL's solarize at 128 of 255, i.e. pixels >= 0.5 inverted


class _CudaLikeGenerator:
    """What ``batch_order`` reads from a CUDA generator: its seed and its host-side Philox offset."""

    device = torch.device("cuda")

    def __init__(self, seed: int) -> None:
        self.seed, self.offset = seed, 0

    def initial_seed(self) -> int:
        return self.seed

    def get_offset(self) -> int:
        return self.offset


def test_jitter_order_on_cuda_is_drawn_on_the_host_and_follows_the_generator():
    gen = _CudaLikeGenerator(7)
    orders = []
    for step in range(240):
        gen.offset = 4 * step  # every random kernel advances the offset
        orders.append(tuple(augment.batch_order(gen, 4)))
    assert all(sorted(o) == [0, 1, 2, 3] for o in orders)
    counts = np.bincount([o[0] for o in orders], minlength=4)
    assert len(set(orders)) == 24 and counts.min() > 30  # all 24 orders, each op first about a quarter of the time
    same = _CudaLikeGenerator(7)
    same.offset = 4 * 239
    assert tuple(augment.batch_order(same, 4)) == orders[-1]  # the same generator state, the same order
