"""Shared parts of the joint-embedding tasks (SimCLR, MoCo, BYOL, ...): two augmented views of every image and
momentum (EMA) copies. Losses, heads, the momentum update and its cosine schedule are lightly's; the schedule's
start scales with the run's length (``Momentum``)."""

from __future__ import annotations

import copy

import torch
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.transforms.multi_view_transform import MultiViewTransform
from lightly.utils.scheduler import cosine_schedule
from pydantic import Field
from torch import nn

from bench.augment.views import ViewConfig, lightly_view, make_view
from bench.tasks.base import Task, TaskConfig


class JointConfig(TaskConfig):
    views: ViewConfig = ViewConfig()  # the first view (both, unless views2 is set)
    views2: ViewConfig | None = None  # the second view where the method's views are asymmetric (BYOL ...)
    hidden_dim: int = Field(512, gt=0)  # projection head width
    out_dim: int = Field(128, gt=0)  # projection output


class TwoViewTask(Task):
    """Base for tasks that compare two views of each image."""

    def view_configs(self) -> list[tuple[ViewConfig, int]]:
        """(parameters, output size) of each view, in the order ``loss_views`` takes them; no horizontal flips
        when ``self.flip`` is False (both data paths make their views from these)."""
        second = self.cfg.views2 or self.cfg.views
        configs = [(self.cfg.views, self.image_size), (second, self.image_size), *self.extra_views()]
        return configs if self.flip else [(c.model_copy(update={"hf_prob": 0.0}), s) for c, s in configs]

    def extra_views(self) -> list[tuple[ViewConfig, int]]:
        """Views after the two main ones (DINO's local crops)."""
        return []

    def views(self, images: torch.Tensor, gen: torch.Generator) -> list[torch.Tensor]:
        return [make_view(images, gen, cfg, size) for cfg, size in self.view_configs()]

    def loss(self, images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return self.loss_views(*self.views(images, gen))

    def loss_views(self, v1: torch.Tensor, v2: torch.Tensor) -> torch.Tensor:
        """The loss of two already augmented, normalised views (B, 3, H, W): the model step alone."""
        raise NotImplementedError

    def reference_transform(self) -> MultiViewTransform:
        return MultiViewTransform([lightly_view(cfg, self.image_size, size) for cfg, size in self.view_configs()])


class Momentum(nn.Module):
    """EMA copies of some modules, updated after every optimiser step with a cosine schedule from a start momentum
    to 1.0 (as in BYOL, DINO and lightly's examples). Never trained by the optimiser.

    The start momentum scales with the run's length, so that the copies renew as much over the run as in the
    reference run the configured ``momentum`` comes from (the total renewal sum_t (1 - m_t) is the same):
    ``1 - start = (1 - momentum) * reference_steps / total_steps``, clipped to [``FLOOR``, ``momentum``] (a run
    longer than the reference keeps ``momentum``; a very short one starts at the floor). ``reference_steps``
    None: ``momentum`` is the start, whatever the run's length. Deviation: the reference runs are taken to follow
    the same cosine to 1.0 (DINO's does; lightly's CIFAR-10 benchmark holds 0.99 constant, which renews twice as
    much as a cosine from 0.99 over the same steps).
    """

    FLOOR = 0.9  # the copies average over at least ~1 / (1 - 0.9) = 10 steps, however short the run

    def __init__(
        self,
        *modules: nn.Module,
        momentum: float,
        reference_steps: int | None,
        copies: list[nn.Module] | None = None,
    ) -> None:
        """``copies``: fresh instances of the modules' classes, for modules that cannot be deep-copied (weight
        norm); they are loaded with the online weights here."""
        super().__init__()
        self.online = list(modules)  # plain list: the online modules are registered by the task itself
        if copies is None:
            copies = [copy.deepcopy(m) for m in modules]
        else:
            for online, fresh in zip(modules, copies):
                fresh.load_state_dict(online.state_dict())
        self.copies = nn.ModuleList(copies)
        for m in self.copies:
            deactivate_requires_grad(m)
        self.momentum, self.reference_steps = momentum, reference_steps
        self.start: float | None = None  # the start momentum this run uses, set at its first update

    def start_for(self, total_steps: int) -> float:
        """The start momentum of a run of ``total_steps`` optimiser steps."""
        if self.reference_steps is None:
            return self.momentum
        renewal = (1 - self.momentum) * self.reference_steps / max(total_steps, 1)
        return min(max(1 - renewal, min(self.FLOOR, self.momentum)), self.momentum)

    def record(self) -> dict[str, float]:
        """The start momentum this run used, for the task's ``records``."""
        return {} if self.start is None else {"momentum_start": self.start}

    def update(self, step: int, total_steps: int) -> None:
        self.start = self.start_for(total_steps)
        m = cosine_schedule(step, max(total_steps, 1), self.start, 1.0)
        for online, ema in zip(self.online, self.copies):
            update_momentum(online, ema, m)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for m in self.copies:
            x = m(x)
        return x


def momentum_field(default: float) -> float:
    return Field(default, ge=0, lt=1)


def momentum_steps_field(default: int) -> int | None:
    """The optimiser steps of the reference run a task's ``momentum`` comes from (``Momentum``); None: use the
    momentum as given, whatever the run's length."""
    return Field(default, gt=0)
