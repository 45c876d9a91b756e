"""Backbones by name from torchvision and timm: ``[encoder] name = "torchvision:resnet50"`` or ``"timm:resnet18"``,
randomly initialised (no weights are downloaded), without their classifier, their feature dimension read from the
model.

- torchvision: models with an ``fc`` classifier (ResNet, ResNeXt, Wide ResNet, RegNet) or with ``features`` and
  a ``classifier`` (ConvNeXt, EfficientNet, MobileNet, VGG, DenseNet, ...); both have a feature map.
- timm (the extra ``vit``): any model ``timm.create_model`` knows, built with ``num_classes=0``. A CNN exposes its
  feature map (``forward_features``); a timm VisionTransformer is wrapped like ``bench.models.vit`` (kind "vit",
  at the image size it was defined for); other token models are kind "transformer".

``cifar_stem = true`` swaps a ResNet-style stem (``conv1`` and ``maxpool``) for a 3x3 stride-1 convolution and no
max-pool, as ``resnet18_cifar``; it is refused for a model without that stem.
"""

from __future__ import annotations

import torch
from torch import nn

from bench.errors import ConfigError
from bench.models.encoders import Encoder

LIBRARIES = ("torchvision", "timm")


def split(name: str) -> tuple[str, str] | None:
    """("torchvision" | "timm", model) for a backbone named by library, else None."""
    library, sep, model = name.partition(":")
    return (library, model) if sep and library in LIBRARIES else None


def _cifar_stem(net: nn.Module, name: str) -> None:
    if not (isinstance(getattr(net, "conv1", None), nn.Conv2d) and hasattr(net, "maxpool")):
        raise ConfigError(f"encoder {name!r}: cifar_stem applies to ResNet-style models (conv1 and maxpool) only")
    net.conv1 = nn.Conv2d(3, net.conv1.out_channels, 3, 1, 1, bias=False)
    net.maxpool = nn.Identity()


class TorchvisionBackbone(nn.Module):
    """A torchvision classification model without its classifier: ``feature_map`` and pooled features."""

    def __init__(self, model: str, cifar_stem: bool) -> None:
        import torchvision

        super().__init__()
        net = torchvision.models.get_model(model, weights=None)
        if cifar_stem:
            _cifar_stem(net, f"torchvision:{model}")
        if isinstance(getattr(net, "fc", None), nn.Linear):
            self.out_dim = net.fc.in_features
            net.fc, net.avgpool = nn.Identity(), nn.Identity()
            stem = [getattr(net, k) for k in ("conv1", "bn1", "relu", "maxpool") if hasattr(net, k)]
            names = ("stem", "trunk_output", "layer1", "layer2", "layer3", "layer4")
            body = [getattr(net, k) for k in names if hasattr(net, k)]
            self.body = nn.Sequential(*stem, *body)
        elif hasattr(net, "features") and hasattr(net, "classifier"):
            self.body = net.features
            with torch.no_grad():
                self.out_dim = int(self.body.eval()(torch.zeros(1, 3, 64, 64)).shape[1])
        else:
            raise ConfigError(
                f"encoder 'torchvision:{model}': only models with an fc classifier (ResNet, RegNet, ...) or with "
                "features and a classifier (ConvNeXt, EfficientNet, ...) can be backbones; for a ViT use vit_tiny "
                "or timm:<model>"
            )

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).mean((2, 3))


def _timm(model: str, cifar_stem: bool) -> nn.Module:
    try:
        import timm
    except ImportError:
        raise ConfigError(f"encoder 'timm:{model}' needs timm: pip install 'pretext-bench[vit]'") from None
    net = timm.create_model(model, pretrained=False, num_classes=0)
    if cifar_stem:
        _cifar_stem(net, f"timm:{model}")
    from timm.models.vision_transformer import VisionTransformer

    if isinstance(net, VisionTransformer):
        from bench.models.vit import ViT

        return ViT.wrapping(net)
    return TimmBackbone(net)


class TimmBackbone(nn.Module):
    """A timm model with ``num_classes=0``: its pooled features, and its feature map where it has one."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net, self.out_dim = net, int(net.num_features)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def kind_of(library: str, model: str) -> str:
    """The encoder kind of a backbone named by library (``bench.models.encoders.Encoder.kind``): "vit" for a
    timm VisionTransformer, "cnn" where the model's features are a map, "transformer" otherwise."""
    if library == "torchvision":
        return "cnn"
    import timm
    from timm.models.vision_transformer import VisionTransformer

    probe = timm.create_model(model, pretrained=False, num_classes=0)
    if isinstance(probe, VisionTransformer):
        return "vit"
    try:
        with torch.no_grad():
            return "cnn" if probe.eval().forward_features(torch.zeros(1, 3, 64, 64)).dim() == 4 else "transformer"
    except Exception:  # noqa: BLE001 - a model of a fixed input size: not a feature map at any size
        return "transformer"


def backbone(name: str, cifar_stem: bool) -> Encoder:
    """The ``Encoder`` of ``"torchvision:<model>"`` or ``"timm:<model>"``; a ConfigError naming the model when
    the library does not know it."""
    library, model = split(name)
    if library == "torchvision":
        import torchvision

        known = torchvision.models.list_models(module=torchvision.models)
        if model not in known:
            raise ConfigError(f"encoder {name!r}: torchvision has no classification model {model!r} (e.g. resnet50)")
        TorchvisionBackbone(model, cifar_stem)  # refuses an architecture it cannot take apart, now
        return Encoder(lambda: TorchvisionBackbone(model, cifar_stem), f"torchvision {model}, no weights", "cnn")
    try:
        import timm
    except ImportError:
        raise ConfigError(f"encoder {name!r} needs timm: pip install 'pretext-bench[vit]'") from None
    if not timm.is_model(model):
        raise ConfigError(f"encoder {name!r}: timm has no model {model!r} (timm.list_models() lists them)")
    return Encoder(lambda: _timm(model, cifar_stem), f"timm {model}, no weights", kind_of(library, model), ("timm",))
