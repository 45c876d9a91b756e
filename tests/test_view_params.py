"""The joint-embedding tasks' views against lightly's own transform for each method, parameter by parameter.

Every registered ``TwoViewTask`` (new ones included) is compared at 32 and 96 px with lightly's transform class
for its method, built with lightly's defaults for that method. Where bench deliberately differs, DEVIATIONS
says what bench uses and a phrase that the task's module docstring must contain (the input scaling, shared by
every task, is stated in bench/views.py's), so a deviation is never silent and never undocumented.
"""

import inspect
import sys

import pytest
import torch
from lightly import transforms as LT
from PIL import Image

from bench.augment import ops as augment
from bench.augment import views
from bench.models.encoders import build_encoder
from bench.tasks import TASKS
from bench.tasks.joint import TwoViewTask

JOINT = [name for name, cls in TASKS.items() if issubclass(cls, TwoViewTask)]
SIZES = (32, 96)


def local_size(size: int) -> int:
    return round(size * 96 / 224)  # lightly's local crops: 96 px next to 224 px global crops


def byol_views(size: int) -> LT.BYOLTransform:
    return LT.BYOLTransform(LT.BYOLView1Transform(input_size=size), LT.BYOLView2Transform(input_size=size))


# lightly's transform for each method, with lightly's defaults for that method (the image size aside)
LIGHTLY = {
    "simclr": lambda s: LT.SimCLRTransform(input_size=s),
    "moco": lambda s: LT.MoCoV2Transform(input_size=s),
    "byol": byol_views,
    "simsiam": lambda s: LT.SimSiamTransform(input_size=s),
    "barlowtwins": byol_views,  # lightly's Barlow Twins examples use BYOL's transform, as the paper does
    "vicreg": lambda s: LT.VICRegTransform(input_size=s),
    "dino": lambda s: LT.DINOTransform(global_crop_size=s, local_crop_size=local_size(s)),
    "swav": lambda s: LT.SwaVTransform(crop_sizes=(s, local_size(s))),
    "ibot": lambda s: LT.IBOTTransform(global_crop_size=s, local_crop_size=local_size(s)),
}

ANY = None
COLOUR = "strength 0.5"
HOUSE_WIDE = "fixed input scaling"  # stated once, in bench/views.py
# (task or "*", image size or ANY, view index or ANY, parameter) -> (bench's value, phrase its docstring states)
DEVIATIONS = {
    ("*", 32, ANY, "gaussian_blur"): (0.0, "blur off at 32 px"),
    ("*", ANY, ANY, "normalize"): (((0.5,) * 3, (0.25,) * 3), HOUSE_WIDE),
    **{
        (task, ANY, ANY, param): (value, COLOUR)  # SimCLR's colour factors at strength 0.5 instead of 1.0
        for task in ("simclr", "swav")
        for param, value in (("brightness", 0.4), ("contrast", 0.4), ("saturation", 0.4), ("hue", 0.1))
    },
    ("dino", 32, ANY, "views"): (2, "no local crops at 32 px"),
    **{("dino", 96, i, "input_size"): (48, "half the image side") for i in range(2, 8)},
    ("dino", ANY, ANY, "interpolation"): ("bilinear", "bilinear"),
    ("ibot", 32, ANY, "views"): (2, "no local crops at 32 px"),
    **{("ibot", 96, i, "input_size"): (48, "half the image side") for i in range(2, 12)},
    ("ibot", ANY, ANY, "interpolation"): ("bilinear", "bilinear"),
    ("swav", ANY, ANY, "views"): (2, "no multi-crop"),
}


def deviation(task: str, size: int, view: int | None, param: str):
    for key in [(t, s, v, param) for t in (task, "*") for s in (size, ANY) for v in (view, ANY)]:
        if key in DEVIATIONS:
            return DEVIATIONS[key]
    return None


SIGMAS = tuple(inspect.signature(augment.gaussian_blur).parameters["sigma"].default)


def bench_params(cfg: views.ViewConfig, image_size: int, size: int) -> dict:
    """What the on-device view (bench.views.make_view) does with ``cfg``, in lightly's terms."""
    s = cfg.cj_strength
    return {
        "input_size": size,
        "scale": (cfg.min_scale, cfg.max_scale),
        "interpolation": "bilinear",
        "hf_prob": cfg.hf_prob,
        "vf_prob": 0.0,
        "rr_prob": 0.0,
        "cj_prob": cfg.cj_prob,
        "brightness": s * cfg.cj_bright,
        "contrast": s * cfg.cj_contrast,
        "saturation": s * cfg.cj_sat,
        "hue": s * cfg.cj_hue,
        "random_gray_scale": cfg.random_gray_scale,
        "gaussian_blur": views._blur_prob(cfg, image_size),
        "sigmas": SIGMAS,
        "solarization_prob": cfg.solarization_prob,
        "normalize": ((augment.MEAN,) * 3, (augment.STD,) * 3),
    }


def _leaves(t, p=None):
    """The elementary transforms of a lightly view, each with the probability of a RandomApply around it."""
    name = type(t).__name__
    if name == "RandomApply":
        for child in t.transforms:
            yield from _leaves(child, t.p)
    elif name == "Compose":
        for child in t.transforms:
            yield from _leaves(child, p)
    elif "transform" in vars(t):  # lightly's view classes, RandomRotateDegrees (not torchvision v2's method)
        yield from _leaves(t.transform, p)
    else:
        yield t, p


def _jitter(bounds, centre: float) -> float:
    return 0.0 if bounds is None else float(bounds[1]) - centre


def lightly_params(view) -> dict:
    """The same parameters read from a lightly (torchvision) per-image view transform."""
    out = {"vf_prob": 0.0, "rr_prob": 0.0, "solarization_prob": 0.0, "gaussian_blur": 0.0, "sigmas": SIGMAS}
    for t, p in _leaves(view):
        name = type(t).__name__
        if name == "RandomResizedCrop":
            out |= {
                "input_size": t.size[0],
                "scale": tuple(t.scale),
                "interpolation": str(getattr(t.interpolation, "value", t.interpolation)),
            }
        elif name == "RandomHorizontalFlip":
            out["hf_prob"] = t.p
        elif name == "RandomVerticalFlip":
            out["vf_prob"] = t.p
        elif name == "RandomRotate":
            out["rr_prob"] = t.prob
        elif name == "ColorJitter":
            if t.brightness is t.contrast is t.saturation is t.hue is None:
                continue  # SwaV's view adds a ColorJitter() without arguments: the identity
            out |= {"cj_prob": 1.0 if p is None else p, "hue": _jitter(t.hue, 0.0)}
            out |= {k: _jitter(getattr(t, k), 1.0) for k in ("brightness", "contrast", "saturation")}
        elif name == "RandomGrayscale":
            out["random_gray_scale"] = t.p
        elif name == "GaussianBlur":
            out |= {"gaussian_blur": t.prob, "sigmas": tuple(t.sigmas)}
        elif name == "RandomSolarization":
            out["solarization_prob"] = t.prob
        elif name == "Normalize":
            out["normalize"] = (tuple(t.mean), tuple(t.std))
        elif name not in ("ToTensor", "ToImage", "ToDtype"):
            raise AssertionError(f"lightly's view has a transform this test does not know: {name}")
    return out


def make(name: str, size: int) -> TwoViewTask:
    torch.manual_seed(0)
    cls = TASKS[name]
    encoder = "small_cnn" if "cnn" in cls.encoder_kinds else "vit_tiny"
    return cls(build_encoder(encoder, 0), cls.Config(), size)


def _same(a, b) -> bool:
    """Equal strings, equal numbers within rounding, element by element in tuples."""
    if isinstance(a, tuple | list) and isinstance(b, tuple | list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b if isinstance(a, str) or isinstance(b, str) else a == pytest.approx(b)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", JOINT)
def test_views_equal_lightlys_transform_or_a_stated_deviation(name, size):
    assert name in LIGHTLY, f"new joint-embedding task {name!r}: add lightly's transform for it to LIGHTLY"
    task = make(name, size)
    ours = [bench_params(cfg, size, out) for cfg, out in task.view_configs()]
    theirs = [lightly_params(v) for v in LIGHTLY[name](size).transforms]
    doc = sys.modules[type(task).__module__].__doc__.lower()
    wrong, used = [], set()

    def compare(view, param, mine, lightly_value):
        dev = deviation(name, size, view, param)
        expected = lightly_value if dev is None else dev[0]
        if not _same(mine, expected):
            wrong.append(f"view {view} {param}: bench {mine}, expected {expected} (lightly {lightly_value})")
        if dev is not None:
            used.add(dev[1])
            if _same(lightly_value, dev[0]):
                wrong.append(f"view {view} {param}: listed as a deviation but equal to lightly's {lightly_value}")

    compare(None, "views", len(ours), len(theirs))
    for i, (mine, lightly_view) in enumerate(zip(ours, theirs)):
        assert mine.keys() == lightly_view.keys()
        for param in mine:
            compare(i, param, mine[param], lightly_view[param])
    assert not wrong, f"{name} at {size} px:\n" + "\n".join(wrong)
    missing = [p for p in used if p not in (views.__doc__.lower() if p == HOUSE_WIDE else doc)]
    assert not missing, f"{name}'s docstring does not state its deviations: {missing}"


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", JOINT)
def test_reference_views_have_the_parameters_of_the_device_views(name, size):
    """bench's reference path (lightly's transforms made from the same ViewConfig) draws from the same
    parameters as the on-device views."""
    task = make(name, size)
    for cfg, out in task.view_configs():
        reference, device = lightly_params(views.lightly_view(cfg, size, out)), bench_params(cfg, size, out)
        assert reference.keys() == device.keys()
        assert all(_same(reference[k], device[k]) for k in device), (reference, device)


@pytest.mark.parametrize("name", JOINT)
def test_no_flips_in_any_view_when_the_dataset_forbids_them(name):
    task = make(name, 32)
    assert {cfg.hf_prob for cfg, _ in task.view_configs()} == {0.5}
    task.flip = False
    assert {cfg.hf_prob for cfg, _ in task.view_configs()} == {0.0}
    assert all(lightly_params(v)["hf_prob"] == 0.0 for v in task.reference_transform().transforms)


def half_images(b: int, size: int) -> torch.Tensor:
    """uint8 (B, 3, size, size): left half black, right half white. Mirrored, the bright side is on the left."""
    x = torch.zeros(b, 3, size, size, dtype=torch.uint8)
    x[..., size // 2 :] = 255
    return x


def test_simclr_views_of_an_asymmetric_image_are_never_mirrored_without_flips():
    task = make("simclr", 32)
    task.flip = False
    for v in task.views(half_images(64, 32), torch.Generator().manual_seed(0)):
        cols = v.mean((1, 2))  # (B, W)
        left, right = cols[:, :16].mean(1), cols[:, 16:].mean(1)
        assert (left <= right + 1e-4).all() and (left < right - 0.1).sum() > 10
    img = Image.fromarray(half_images(1, 32)[0].permute(1, 2, 0).numpy())
    for _ in range(20):
        for v in task.reference_transform()(img):
            assert v[:, :, :16].mean() <= v[:, :, 16:].mean() + 1e-4
