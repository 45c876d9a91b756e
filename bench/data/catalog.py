"""The datasets bench can load, by name (``bench.registry.DATASETS``): how many classes each has and what it is.

Loading itself is ``bench.data.datasets.load_dataset``: torchvision's datasets, a folder of a user's own
photos, or generated images.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.registry import DATASETS


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    classes: int | None  # None: known only once the data is read (an image folder, generated data)
    summary: str  # one line for `bench list`


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
