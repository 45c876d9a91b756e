"""Channel permutation: predict which of the six orders of the RGB channels an image is shown in.

A toy pretext task in the spirit of RotNet (Gidaris et al. 2018, arXiv:1803.07728), where the transformation is a
permutation of the colour channels instead of a rotation: to tell the orders apart, the encoder has to learn what
colours objects usually have. It is here to show the parts a task has, not as a method to publish.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from bench.augment.ops import crop_flip, to_input
from bench.tasks.base import Task, TaskConfig

ORDERS = torch.tensor(list(itertools.permutations(range(3))))  # (6, 3)


class ChannelPermutationConfig(TaskConfig):
    head_hidden: int = Field(256, ge=0)  # 0: a linear head


class ChannelPermutation(Task):
    name = "channel_permutation"
    version = 1  # bump when the task computes something else (bench also keys its cells by this file's source)
    summary = "predict which of the 6 orders of the RGB channels each image is shown in"
    reference = "example plug-in after Gidaris et al. 2018, arXiv:1803.07728"
    Config = ChannelPermutationConfig

    def __init__(self, encoder: nn.Module, cfg: ChannelPermutationConfig, image_size: int) -> None:
        super().__init__(encoder, cfg, image_size)
        d, hidden = encoder.out_dim, cfg.head_hidden
        self.head = nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, 6)) if hidden else nn.Linear(d, 6)

    def loss(self, images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Every image in all six channel orders, after the usual pad-and-crop and flip; 6-way cross-entropy."""
        x = crop_flip(to_input(images), gen, flip=self.flip)
        views = x[:, ORDERS.to(x.device)].transpose(0, 1).reshape(-1, *x.shape[1:])  # (6B, 3, H, W)
        labels = torch.arange(6, device=x.device).repeat_interleave(len(x))
        return F.cross_entropy(self.head(self.encoder(views)), labels)
