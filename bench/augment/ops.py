"""Batched augmentations on the training device: one call transforms a whole uint8 batch, with random
parameters drawn per image from the given generator (no per-image Python, no DataLoader workers)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# Fixed input scaling: uint8 [0, 255] -> roughly zero-mean, unit-range floats. Every encoder starts with a
# BatchNorm after its first conv, so per-dataset statistics would change nothing of substance.
MEAN, STD = 0.5, 0.25


def to_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, H, W) -> normalised float32 (B, C, H, W)."""
    return normalize(to_unit(images))


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [0, 1]; the colour operations below work in this range."""
    return images.float().mul_(1 / 255)


def normalize(x: torch.Tensor) -> torch.Tensor:
    """float [0, 1] -> the encoders' input scaling."""
    return (x - MEAN) * (1 / STD)


def _uniform(b: int, lo: float, hi: float, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(b, device=x.device, generator=gen)


def _coin(b: int, p: float, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """(B, 1, 1, 1) bool: True with probability p per image."""
    return (torch.rand(b, device=x.device, generator=gen) < p)[:, None, None, None]


def random_resized_crop(
    x: torch.Tensor,
    gen: torch.Generator,
    size: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    flip_p: float = 0.5,
) -> torch.Tensor:
    """torchvision's RandomResizedCrop (and a horizontal flip) for a whole batch, one affine grid per image.

    Area fraction ~ U(scale), log aspect ratio ~ U(log ratio), redrawn (up to 10 draws, as torchvision) until
    the box fits, centre uniform over the valid positions; bilinear resampling to (size, size). Boxes are
    continuous, not rounded to whole pixels.
    """
    b = x.shape[0]
    w, h, cx, cy = crop_boxes(x, gen, scale, ratio)
    flip = torch.where(torch.rand(b, device=x.device, generator=gen) < flip_p, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0], theta[:, 0, 2] = w * flip, cx
    theta[:, 1, 1], theta[:, 1, 2] = h, cy
    grid = F.affine_grid(theta, [b, x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def crop_boxes(x: torch.Tensor, gen: torch.Generator, scale: tuple[float, float], ratio: tuple[float, float]):
    """Per-image crop boxes for ``random_resized_crop``: width and height as fractions of the image side, centre
    in [-1, 1] coordinates. Each (B,)."""
    b, tries = x.shape[0], 10
    area = _uniform(b * tries, *scale, x, gen).view(b, tries)
    log_r = _uniform(b * tries, math.log(ratio[0]), math.log(ratio[1]), x, gen).view(b, tries)
    w, h = torch.sqrt(area * torch.exp(log_r)), torch.sqrt(area / torch.exp(log_r))
    # torchvision keeps the first of 10 draws that fits inside the image (else the whole square image):
    # rejecting, not clipping, is what shapes its area distribution
    fits = (w <= 1) & (h <= 1)
    first = fits.int().argmax(1, keepdim=True)
    any_fit = fits.any(1)
    w = torch.where(any_fit, w.gather(1, first)[:, 0], torch.ones_like(w[:, 0]))
    h = torch.where(any_fit, h.gather(1, first)[:, 0], torch.ones_like(h[:, 0]))
    cx = (torch.rand(b, device=x.device, generator=gen) * 2 - 1) * (1 - w)
    cy = (torch.rand(b, device=x.device, generator=gen) * 2 - 1) * (1 - h)
    return w, h, cx, cy


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """Luma with torchvision's tensor coefficients, replicated to 3 channels: (B, 3, H, W)."""
    gray = (x[:, 0:1] * 0.2989).add_(x[:, 1:2], alpha=0.587).add_(x[:, 2:3], alpha=0.114)
    return gray.expand(-1, 3, -1, -1)


def random_grayscale(x: torch.Tensor, gen: torch.Generator, p: float) -> torch.Tensor:
    return torch.where(_coin(x.shape[0], p, x, gen), grayscale(x), x)


# The four colour operations with one factor per image ((B, 1, 1, 1) tensors), as torchvision.transforms.functional
# defines them on float images: each blends with a reference image and clamps to [0, 1].


def adjust_brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (x * factor).clamp_(0, 1)


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    mean = grayscale(x)[:, :1].mean((2, 3), keepdim=True)
    return torch.lerp(mean, x, factor).clamp_(0, 1)


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return torch.lerp(grayscale(x), x, factor).clamp_(0, 1)


_CHANNEL_OFFSETS = torch.tensor([5.0, 3.0, 1.0])


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the HSV hue by ``shift`` (fraction of the colour wheel, (B, 1, 1, 1)); saturation and value kept.

    The same result as torchvision's RGB -> HSV -> shift -> RGB, computed without materialising HSV:
    value = max, chroma = max - min, hue (in sixths of the wheel) from the largest channel; back to RGB with the
    closed-form HSV -> RGB, out_c = max - chroma * clamp(min(k_c, 4 - k_c), 0, 1), k_c = (n_c + 6 hue) mod 6.
    """
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    maxc = torch.maximum(torch.maximum(r, g), b)  # elementwise: much faster than a reduction over channels
    chroma = maxc - torch.minimum(torch.minimum(r, g), b)
    inv = 1 / chroma.clamp_min(1e-12)  # grey pixels: chroma 0, their hue does not matter
    # hue in sixths of the wheel from the largest channel (ties give the same hue): r, then g, then b
    hue6 = torch.where(r == maxc, (g - b) * inv, torch.where(g == maxc, (b - r) * inv + 2, (r - g) * inv + 4))
    hue6 = hue6[:, None] + 6 * shift
    k = torch.remainder(_CHANNEL_OFFSETS.to(x.device, x.dtype)[None, :, None, None] + hue6, 6)
    return maxc[:, None] - chroma[:, None] * torch.minimum(k, 4 - k).clamp_(0, 1)  # within [min, max]: no clamp


def batch_order(gen: torch.Generator, n: int) -> list[int]:
    """A random permutation of range(n) for the host to branch on, without waiting for the device.

    Reading a permutation drawn on a GPU would synchronise with it on every call and stall the launch queue.
    A CUDA generator's seed and Philox offset are host-side and advance with every random kernel, so the
    permutation is drawn on the host from them: deterministic given the generator's state (and so across a
    resume), different from call to call.
    """
    if gen.device.type == "cuda":
        host = torch.Generator().manual_seed(gen.initial_seed() * 1_000_003 + gen.get_offset())
        return torch.randperm(n, generator=host).tolist()
    return torch.randperm(n, generator=gen).tolist()


def color_jitter(
    x: torch.Tensor, gen: torch.Generator, p: float, brightness: float, contrast: float, saturation: float, hue: float
) -> torch.Tensor:
    """torchvision's ColorJitter with probability p, factors drawn per image: brightness, contrast and
    saturation factors ~ U(1 - s, 1 + s), hue shift ~ U(-hue, hue) (fraction of the colour wheel).

    torchvision applies the four in a random order per call; here the order is drawn once per batch (each
    image's marginal distribution is the same; images of one batch share the order).
    """
    b = x.shape[0]
    out = x
    order = batch_order(gen, 4)
    factors = [
        _uniform(b, max(0.0, 1 - s), 1 + s, x, gen)[:, None, None, None] for s in (brightness, contrast, saturation)
    ]
    shift = _uniform(b, -hue, hue, x, gen)[:, None, None, None]
    for op in order:
        if op == 0 and brightness > 0:
            out = adjust_brightness(out, factors[0])
        elif op == 1 and contrast > 0:
            out = adjust_contrast(out, factors[1])
        elif op == 2 and saturation > 0:
            out = adjust_saturation(out, factors[2])
        elif op == 3 and hue > 0:
            out = adjust_hue(out, shift)
    return torch.where(_coin(b, p, x, gen), out, x)


def gaussian_blur(
    x: torch.Tensor, gen: torch.Generator, p: float, sigma: tuple[float, float] = (0.1, 2.0)
) -> torch.Tensor:
    """Gaussian blur with probability p, sigma ~ U(sigma) in pixels per image, as lightly's GaussianBlur (PIL's
    untruncated Gaussian of that standard deviation); the kernel here spans +-3 sigma_max, within the image."""
    if p <= 0:
        return x
    s = _uniform(x.shape[0], *sigma, x, gen)
    k = min(2 * math.ceil(3 * sigma[1]) + 1, (min(x.shape[-2:]) - 1) // 2 * 2 + 1)
    return torch.where(_coin(x.shape[0], p, x, gen), blur(x, s, k), x)


def blur(x: torch.Tensor, sigma: torch.Tensor, k: int) -> torch.Tensor:
    """Separable Gaussian blur with one sigma per image ((B,) tensor), k x k kernel, reflected borders (as
    torchvision.transforms.functional.gaussian_blur)."""
    b, c = x.shape[:2]
    offsets = torch.arange(k, device=x.device, dtype=x.dtype) - k // 2
    kernel = torch.exp(-(offsets[None] ** 2) / (2 * sigma[:, None] ** 2))
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (B*C, k)
    flat = x.reshape(1, b * c, *x.shape[2:])
    flat = F.conv2d(F.pad(flat, (k // 2, k // 2, 0, 0), mode="reflect"), kernel[:, None, None, :], groups=b * c)
    flat = F.conv2d(F.pad(flat, (0, 0, k // 2, k // 2), mode="reflect"), kernel[:, None, :, None], groups=b * c)
    return flat.reshape(x.shape)


def random_solarize(x: torch.Tensor, gen: torch.Generator, p: float, threshold: float = 0.5) -> torch.Tensor:
    if p <= 0:
        return x
    return torch.where(_coin(x.shape[0], p, x, gen) & (x >= threshold), 1.0 - x, x)


def random_flip(x: torch.Tensor, gen: torch.Generator, p: float = 0.5) -> torch.Tensor:
    """Horizontal flip of each image with probability p."""
    flip = torch.rand(x.shape[0], device=x.device, generator=gen) < p
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def random_crop(x: torch.Tensor, gen: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Reflect-pad by ``pad`` pixels and crop back to (H, W) at a random offset per image."""
    b, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    oy = torch.randint(0, 2 * pad + 1, (b,), device=x.device, generator=gen)
    ox = torch.randint(0, 2 * pad + 1, (b,), device=x.device, generator=gen)
    rows = (oy[:, None] + torch.arange(h, device=x.device))[:, :, None]  # (B, H, 1)
    cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, :]  # (B, 1, W)
    batch = torch.arange(b, device=x.device)[:, None, None]
    return padded[batch, :, rows, cols].permute(0, 3, 1, 2)  # advanced indexing puts C last


def crop_pad(size: int) -> int:
    """Pad of the pad-and-crop augmentation for ``size`` px images: 4 px at 32 px (the CIFAR standard), an
    eighth of the side in general, at least 1."""
    return max(1, round(size / 8))


def crop_flip(x: torch.Tensor, gen: torch.Generator, pad: int | None = None, flip: bool = True) -> torch.Tensor:
    """The standard CIFAR augmentation (pad-and-crop, horizontal flip) on a float batch. ``pad`` defaults to
    ``crop_pad`` of the image side; ``flip=False`` for data whose mirror image is another class (digits, text).
    The flip coins are drawn either way, so the random stream does not depend on the setting."""
    pad = crop_pad(x.shape[-1]) if pad is None else pad
    return random_flip(random_crop(x, gen, pad), gen, 0.5 if flip else 0.0)


def all_rotations(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image at 0, 90, 180 and 270 degrees: (4B, C, H, W) images and (4B,) labels 0..3."""
    views = torch.cat([torch.rot90(x, k, dims=(2, 3)) for k in range(4)])
    labels = torch.arange(4, device=x.device).repeat_interleave(x.shape[0])
    return views, labels


def grid_tiles(
    x: torch.Tensor,
    gen: torch.Generator,
    grid: int = 3,
    tile_fraction: float = 0.85,
    jitter: bool = True,
    max_shift: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut each image into a grid x grid layout of square tiles with gaps and per-tile jitter.

    The image is split into cells of ``H // grid`` pixels (the grid is placed at a random offset when H is not
    a multiple); each tile is ``tile_fraction`` of a cell, at a random position inside its cell (``jitter``) or
    centred. ``max_shift`` (px) keeps a jittered tile within that distance of the centred position (Doersch et
    al.: gaps of half a patch, jitter of a few px); None: anywhere in its cell. Gaps between neighbouring tiles
    vary per tile, so edges cannot be matched across tiles.
    Returns tiles (B, grid*grid, C, t, t) in row-major order and their top-left corners (B, grid*grid, 2).
    """
    b, _, h, _ = x.shape
    cell = h // grid
    t = max(1, int(cell * tile_fraction))
    n = grid * grid
    dev = x.device

    def offsets(high: int, shape: tuple, shift: int | None = None) -> torch.Tensor:
        if not jitter:
            return torch.full(shape, high // 2, device=dev)
        lo, hi = (0, high) if shift is None else (max(0, high // 2 - shift), min(high, high // 2 + shift))
        return torch.randint(lo, hi + 1, shape, device=dev, generator=gen)

    origin = offsets(h - cell * grid, (b, 1, 2))  # where the whole grid starts
    cells = torch.stack(
        torch.meshgrid(torch.arange(grid, device=dev), torch.arange(grid, device=dev), indexing="ij"), -1
    )
    corner = origin + cells.reshape(1, n, 2) * cell + offsets(cell - t, (b, n, 2), max_shift)  # (B, n, 2): row, col
    ar = torch.arange(t, device=dev)
    rows = (corner[..., 0, None] + ar)[:, :, :, None]  # (B, n, t, 1)
    cols = (corner[..., 1, None] + ar)[:, :, None, :]  # (B, n, 1, t)
    batch = torch.arange(b, device=dev)[:, None, None, None]
    tiles = x[batch, :, rows, cols]  # (B, n, t, t, C): advanced indices first, the sliced channel last
    return tiles.permute(0, 1, 4, 2, 3), corner


def standardize_tiles(tiles: torch.Tensor) -> torch.Tensor:
    """Each tile to zero mean and unit variance over its own pixels (Noroozi & Favaro's per-tile normalisation,
    against shortcuts through low-level statistics shared by neighbouring tiles). Works on (..., C, t, t)."""
    mean = tiles.mean((-3, -2, -1), keepdim=True)
    std = tiles.std((-3, -2, -1), keepdim=True).clamp_min(1e-3)
    return (tiles - mean) / std
