"""RotNet: predict which of four rotations (0, 90, 180, 270 degrees) was applied to an image.

Gidaris, Singh & Komodakis, "Unsupervised Representation Learning by Predicting Image Rotations", ICLR 2018,
arXiv:1803.07728. As in the paper, every image of a batch is shown at all four rotations (their best setting)
and the loss is 4-way cross-entropy.

Deviations: the shared encoder's pooled features feed an MLP head (the paper classifies from the last conv
block of a NIN); images get pad-and-crop (an eighth of the side) and horizontal flips first (flips do not change
the rotation label; none where the dataset forbids them). The same at 32 px and 96 px, and any size works:
rotation needs no tile or patch size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from bench.augment.ops import MEAN, STD, all_rotations, crop_flip, crop_pad, to_input
from bench.tasks.base import Task, TaskConfig


class RotationConfig(TaskConfig):
    head_hidden: int = Field(512, ge=0)  # 0: a linear head
    crop_flip: bool = True


class Rotation(Task):
    name = "rotation"
    summary = "predict the rotation (0/90/180/270) of each image, 4-way classification"
    reference = "Gidaris et al. 2018, arXiv:1803.07728"
    Config = RotationConfig

    def __init__(self, encoder: nn.Module, cfg: RotationConfig, image_size: int) -> None:
        super().__init__(encoder, cfg, image_size)
        d = encoder.out_dim
        if cfg.head_hidden:
            self.head = nn.Sequential(
                nn.Linear(d, cfg.head_hidden),
                nn.BatchNorm1d(cfg.head_hidden),
                nn.ReLU(),
                nn.Linear(cfg.head_hidden, 4),
            )
        else:
            self.head = nn.Linear(d, 4)

    def loss(self, images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        x = to_input(images)
        return self.loss_views(crop_flip(x, gen, flip=self.flip) if self.cfg.crop_flip else x)

    def reference_transform(self):
        """The same views per image with torchvision: reflect-pad, random crop, horizontal flip."""
        import torchvision.transforms as T

        crop = T.RandomCrop(self.image_size, padding=crop_pad(self.image_size), padding_mode="reflect")
        steps = [crop, T.RandomHorizontalFlip(0.5 if self.flip else 0.0)] if self.cfg.crop_flip else []
        return T.Compose([*steps, T.ToTensor(), T.Normalize([MEAN] * 3, [STD] * 3)])

    def loss_views(self, x: torch.Tensor) -> torch.Tensor:
        """The loss of an already augmented, normalised batch (B, 3, H, W): the model step alone."""
        views, labels = all_rotations(x)  # (4B, 3, H, W), (4B,)
        return F.cross_entropy(self.head(self.encoder(views)), labels)
