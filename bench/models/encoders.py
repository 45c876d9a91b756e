"""The shared encoder architectures. Every task of a suite trains the same one. Each maps (B, 3, H, W) float
images to (B, out_dim) pooled features, carries ``out_dim``, and exposes ``feature_map`` (before pooling) for
tasks with a dense decoder (colorization, inpainting)."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torchvision
from torch import nn

from bench.errors import PluginError
from bench.plugins import source_file, summary_of
from bench.registry import ENCODERS


class ResNet18(nn.Module):
    """torchvision's ResNet-18 without its classifier; ``cifar_stem`` swaps in a 3x3 stride-1 stem and drops the
    max-pool, which keeps the spatial detail of 32 px images (feature map stride 8 instead of 32)."""

    out_dim = 512

    def __init__(self, cifar_stem: bool) -> None:
        super().__init__()
        net = torchvision.models.resnet18(weights=None)
        if cifar_stem:
            net.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
            net.maxpool = nn.Identity()
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layers = nn.Sequential(net.layer1, net.layer2, net.layer3, net.layer4)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, 512, H/s, W/s), s = 8 (CIFAR stem) or 32."""
        return self.layers(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature_map(x).mean((2, 3))


def _conv_bn(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SmallCNN(nn.Module):
    """Four 3x3 conv-BN-ReLU blocks (16-32-64-128 channels, the last three stride 2), global average pool:
    128-d features, ~97 k parameters; about 3.5k training views/s at 32 px on 2 CPU cores (channels_last)."""

    out_dim = 128

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _conv_bn(3, 16, 1), _conv_bn(16, 32, 2), _conv_bn(32, 64, 2), _conv_bn(64, 128, 2)
        )

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, 128, H/8, W/8)."""
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean((2, 3))


class Encoder(NamedTuple):
    build: Callable[[], nn.Module]  # a fresh, randomly initialised encoder with an ``out_dim`` attribute
    summary: str  # one line for `bench list`
    # "cnn": has ``feature_map`` (B, C, h, w) for the dense tasks; "vit": tokens, for the masked image modelling
    # tasks (``bench.models.vit``); a task says which kinds it runs on (``Task.encoder_kinds``)
    kind: str = "cnn"
    libraries: tuple[str, ...] = ()  # libraries beyond bench's own whose versions decide its numbers (timm)


ENCODERS.register(
    "resnet18_cifar", Encoder(lambda: ResNet18(cifar_stem=True), "ResNet-18, 3x3 stem, no max-pool, 512-d (32-64 px)")
)
ENCODERS.register(
    "resnet18", Encoder(lambda: ResNet18(cifar_stem=False), "ResNet-18, ImageNet stem, 512-d (96 px and larger)")
)
ENCODERS.register("small_cnn", Encoder(SmallCNN, "4-block conv-BN-ReLU CNN, 128-d; for CPU suites"))


def build_encoder(name: str, seed: int) -> nn.Module:
    """A freshly initialised encoder; the same seed gives the same weights on every machine."""
    build = ENCODERS[name].build  # an unknown name: UnknownName, listing the registered ones
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def as_plugin(name: str, obj: object) -> Encoder:
    """An encoder from a user's package (``bench.plugins``): an ``Encoder``, or a class or function that takes no
    argument and returns a fresh ``nn.Module`` mapping (B, 3, H, W) images to (B, out_dim) features."""
    if isinstance(obj, Encoder):
        return obj
    if not callable(obj):
        raise PluginError(f"encoder plug-in {name!r} ({source_file(obj)}): {obj!r} is neither an Encoder nor callable")
    return Encoder(obj, summary_of(obj, f"{obj.__module__}.{getattr(obj, '__qualname__', name)}"))
