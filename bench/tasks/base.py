"""What every task is: a validated config, a head, a loss on a batch of uint8 images, and provenance."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch
from torch import nn

from bench.augment.ops import to_input
from bench.config.sections import TaskConfig
from bench.plugins import subclass_named
from bench.registry import TASKS

__all__ = ["Task", "TaskConfig"]


class Task(nn.Module):
    """A pretext task or baseline on the suite's shared encoder.

    Subclasses set the class attributes below and implement ``loss``. Defining a subclass with a ``name``
    registers it, so a new task is one new file in ``bench/tasks/``.
    """

    name: ClassVar[str]
    # Bump when the task computes something else (its cells go stale); bench/run/identity.lock pins its source
    version: ClassVar[int] = 1
    summary: ClassVar[str]  # one line for `bench list`
    reference: ClassVar[str]  # paper and arXiv id, or "baseline"
    Config: ClassVar[type[TaskConfig]] = TaskConfig
    pretrains: ClassVar[bool] = True  # False: the checkpoint is the seeded random initialisation
    # Which protocols evaluate the task: the frozen ones (linear, kNN, ...), those that train the encoder
    # (fine-tuning, ...), or both. A random encoder trained on the labels is scratch; scratch frozen is random.
    evaluated_by: ClassVar[tuple[str, ...]] = ("frozen", "trained")
    # For the registry contract test (20 steps on one batch of 8): config overrides under which that tiny
    # setting is meaningful, and whether the loss is an objective the student alone can lower there.
    contract_overrides: ClassVar[dict] = {}
    monotone_loss: ClassVar[bool] = True
    # The smallest image side (px) the task is meaningful for; smaller data is refused before training.
    min_image_size: ClassVar[int] = 1
    # The kinds of shared encoder the task runs on (``bench.models.encoders.Encoder.kind``): a dense decoder needs
    # a CNN's feature map, masked image modelling a ViT's tokens; a suite pairing it with another is refused.
    encoder_kinds: ClassVar[tuple[str, ...]] = ("cnn", "vit")

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            TASKS.register(cls.name, cls)

    def __init__(self, encoder: nn.Module, cfg: TaskConfig, image_size: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.cfg = cfg
        self.image_size = image_size
        self.flip = True  # horizontal flips in the task's views; the runner sets the dataset's `flip` here

    @staticmethod
    def eval_input(images: torch.Tensor) -> torch.Tensor:
        """uint8 images (B, 3, H, W) -> the float input the encoder expects at evaluation time. Every protocol
        (linear, kNN, fine-tuning) feeds the encoder through this, so a task that pretrains on another input
        (colorization: lightness only) is evaluated on that input."""
        return to_input(images)

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        """Called before every pretraining epoch (1-based ``epoch``), resumed runs included."""

    def loss(self, images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Scalar loss for a batch of uint8 images (B, 3, H, W) on the training device."""
        raise NotImplementedError(f"task {self.name!r} does not pretrain")

    def reference_transform(self) -> Callable | None:
        """The reference data path (``pretrain.augment = "lightly"``): a per-image transform, PIL image in,
        the argument(s) of ``loss_views`` out, made with lightly's or torchvision's transforms. None: the task
        has views only on the device."""
        return None

    def loss_views(self, *views: torch.Tensor) -> torch.Tensor:
        """The loss of views that are already augmented and normalised: the model step alone."""
        raise NotImplementedError(f"task {self.name!r} has no separate model step")

    @classmethod
    def evaluates_with(cls, protocol: type) -> bool:
        """Whether ``protocol`` (a ``bench.protocols.base.Protocol`` subclass) evaluates this task."""
        return ("frozen" if protocol.frozen else "trained") in cls.evaluated_by

    @classmethod
    def has_reference_path(cls) -> bool:
        return cls.reference_transform is not Task.reference_transform

    def before_step(self, step: int, total_steps: int) -> None:
        """Called before every optimiser step's forward pass (1-based ``step`` of ``total_steps``, the run's real
        length), resumed runs included: schedules over steps (a layer frozen for a fraction of training) act here."""

    def after_step(self, step: int, total_steps: int) -> None:
        """Called after every optimiser step (1-based ``step``): momentum encoders update here."""

    def evaluated_encoder(self) -> nn.Module:
        """The encoder the protocols evaluate, saved as the pretraining's checkpoint: the trained one, or for a
        method whose paper evaluates its momentum copy (DINO's teacher), that copy."""
        return self.encoder

    def records(self) -> dict[str, float]:
        """Values the task's schedules took in this run (the start momentum a momentum encoder used, the steps a
        layer stayed frozen), logged with the pretraining run's metrics."""
        return {}

    @classmethod
    def check_data(cls, images: torch.Tensor) -> None:
        """Raise ValueError, before any training, if the task cannot work on these uint8 images. Subclasses that
        add checks call this one first."""
        size = min(images.shape[-2:])
        if size < cls.min_image_size:
            raise ValueError(
                f"task {cls.name!r} needs images of at least {cls.min_image_size} px; the data has {size} px"
            )


def as_plugin(name: str, obj: object) -> type[Task]:
    """A task from a user's package (``bench.plugins``): a ``Task`` subclass whose ``name`` is the one it is used
    by, with a ``summary`` and a ``reference``."""
    return subclass_named("task", name, obj, Task, ("summary", "reference"))
