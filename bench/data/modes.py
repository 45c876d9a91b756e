"""Every image as people have them, made into the uint8 RGB square the cache holds.

``to_rgb`` converts each PIL mode, the way the documentation states it:

- RGB as it is; greyscale (``L``) and bilevel (``1``) with the grey in all three channels; CMYK, YCbCr, LAB and
  HSV by PIL's conversion (no colour profile is read).
- With transparency (``RGBA``, ``LA``, ``PA``, a palette image with a transparent colour): composited over
  white, as a viewer shows it on a white page.
- Palette (``P``): its colours.
- 16-bit integer (``I;16`` and its byte orders, and ``I``, as PIL opens 16-bit PNG and TIFF): rescaled from
  0..65535 to 0..255 (a 32-bit ``I`` image is read as 16-bit, its values clipped to that range).
- 32-bit float (``F``): read as 0..1 and rescaled to 0..255; one with values outside 0..1 is refused
  (``UnreadableMode``), since no range can be assumed for it.

``fit`` resizes the shorter side to the size (bicubic, antialiased) and keeps the centre square: torchvision's
``Resize`` then ``CenterCrop``.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

WHITE = (255, 255, 255, 255)
SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")
AS_PIL_CONVERTS = ("1", "L", "CMYK", "YCbCr", "LAB", "HSV")
WITH_ALPHA = ("RGBA", "RGBa", "LA", "La", "PA")


class UnreadableMode(ValueError):
    """An image whose pixel values cannot be read as colours (the message says why)."""


def to_rgb(im: Image.Image) -> Image.Image:
    """An RGB image of ``im`` (the conversions of the module docstring)."""
    mode = im.mode
    if mode == "RGB":
        return im
    if mode in WITH_ALPHA or (mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, WHITE), rgba).convert("RGB")
    if mode in AS_PIL_CONVERTS or mode == "P":
        return im.convert("RGB")
    if mode in SIXTEEN_BIT:
        values = np.asarray(im, dtype=np.float64)
        grey = np.clip(values, 0, 65535) * (255 / 65535)
        return Image.fromarray(np.rint(grey).astype(np.uint8), "L").convert("RGB")
    if mode == "F":
        values = np.asarray(im, dtype=np.float64)
        low, high = float(np.nanmin(values)), float(np.nanmax(values))
        if not (np.isfinite(values).all() and low >= 0 and high <= 1):
            raise UnreadableMode(
                f"a 32-bit float image with values in [{low:g}, {high:g}]; float images are read as 0..1: "
                "save it as 8-bit, or scale it to 0..1"
            )
        return Image.fromarray(np.rint(values * 255).astype(np.uint8), "L").convert("RGB")
    try:
        return im.convert("RGB")
    except (ValueError, OSError) as e:
        raise UnreadableMode(f"an image of mode {mode!r} that cannot be converted to RGB ({e})") from None


def fit(im: Image.Image, size: int) -> Image.Image:
    """The shorter side resized to ``size`` px (bicubic, antialiased), then the centre ``size`` x ``size`` square."""
    import torchvision.transforms.functional as F
    from torchvision.transforms import InterpolationMode

    if im.size == (size, size):
        return im
    resized = F.resize(im, size, interpolation=InterpolationMode.BICUBIC, antialias=True)
    return F.center_crop(resized, [size, size])


def fit_arrays(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 (N, 3, H, W) images fitted to ``size`` (``fit``), for datasets that arrive as arrays."""
    if images.shape[2:] == (size, size) or not len(images):
        return images if len(images) else np.zeros((0, 3, size, size), np.uint8)
    out = [np.asarray(fit(Image.fromarray(x.transpose(1, 2, 0)), size)) for x in images]
    return np.stack(out).transpose(0, 3, 1, 2).copy()
