"""The datasets bench can load, by name (``bench.registry.DATASETS``): how many classes each has and what it is.

Loading itself is ``bench.data.datasets.load_dataset``: torchvision's datasets, a folder of a user's own
photos, or generated images.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bench.errors import PluginError
from bench.plugins import source_file, summary_of
from bench.registry import DATASETS


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    classes: int | None  # None: known only once the data is read (an image folder, generated data)
    summary: str  # one line for `bench list`
    # a dataset from a user's package: load(cfg) -> (classes, train_x, train_y, test_x, test_y, unlabeled_x | None)
    load: Callable | None = None


for spec in (
    DatasetSpec("cifar10", 10, "CIFAR-10, 32 px, 10 classes (torchvision, or class folders under $BENCH_DATA/cifar10)"),
    DatasetSpec("cifar100", 100, "CIFAR-100, 32 px, 100 classes"),
    DatasetSpec("stl10", 10, "STL-10, 96 px, 10 classes, 100k unlabelled images"),
    DatasetSpec("svhn", 10, "SVHN, 32 px, 10 digit classes (set dataset.flip = false)"),
    DatasetSpec(
        "imagefolder",
        None,
        "your own data: <root>/train/<class>/*, <root>/test/<class>/*, optional <root>/unlabeled/",
    ),
    DatasetSpec("synthetic", None, "generated class-dependent images, for tests"),
):
    DATASETS.register(spec.name, spec)


def as_plugin(name: str, obj: object) -> DatasetSpec:
    """A dataset from a user's package (``bench.plugins``): a ``DatasetSpec`` with a ``load``, or a function
    ``load(cfg: DatasetConfig)`` returning (class names, train images, train labels, test images, test labels,
    unlabelled images or None), the images uint8 arrays (N, 3, H, W) of one size."""
    if isinstance(obj, DatasetSpec):
        if obj.load is None:
            raise PluginError(f"dataset plug-in {name!r} ({source_file(obj)}): its DatasetSpec has no load function")
        return obj
    if not callable(obj):
        raise PluginError(
            f"dataset plug-in {name!r} ({source_file(obj)}): {obj!r} is neither a DatasetSpec nor callable"
        )
    return DatasetSpec(name, None, summary_of(obj, f"{obj.__module__}.{obj.__qualname__}"), load=obj)
