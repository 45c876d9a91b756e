"""What every protocol is: its settings table, its search space, whether it keeps the encoder frozen, and how it
fits a classifier on a budget's labels and scores settings on validation labels drawn from inside the budget.

A protocol is one file in ``bench/protocols/`` with a subclass of ``Protocol`` that sets ``name``: the suite's
``protocols`` list and its ``[<name>]`` table find it through ``bench.registry.PROTOCOLS``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from bench.config.settings import Settings
from bench.plugins import subclass_named
from bench.protocols.features import Fitted, Prepare
from bench.registry import PROTOCOLS


@dataclass
class Labelled:
    """A protocol's training data: labelled images and what the encoder makes of them.

    A frozen protocol gets ``features``, the frozen encoder's (N, D) float32 features of the labelled images, and
    no ``images``; a protocol that trains the encoder gets the uint8 ``images`` (N, 3, H, W) and no features.
    ``labels``: (N,) int64; ``prepare``: the task's evaluation input (``Task.eval_input``); ``flip``: whether
    horizontal flips preserve the classes.
    """

    encoder: nn.Module
    images: torch.Tensor | None
    features: torch.Tensor | None
    labels: torch.Tensor
    classes: int
    seed: int
    prepare: Prepare
    flip: bool = True


@dataclass
class Watch:
    """What a tuning trial may do while a protocol scores one setting: ``report(progress, accuracy)`` (progress
    in [0, 1] of the schedule; it raises ``optuna.TrialPruned`` to stop a poor trial), and ``record``, the
    trial's record (``bench.protocols.tuning.TrialRecord``: ``metric``, ``history``, ``tag``)."""

    report: Callable[[float, float], None] | None
    record: Any
    device: torch.device


class Protocol:
    """How an encoder becomes a classifier with a budget's labels, the same for every task and baseline.

    Subclasses set ``name``, ``summary``, ``Config`` (the suite's ``[<name>]`` table), ``Space`` (the suite's
    ``[tuning.space.<name>]`` table; None: not tunable) and ``frozen``, and implement ``fit``, ``score``,
    ``suggest`` and ``configured``.
    """

    name: ClassVar[str]
    summary: ClassVar[str]  # one line for `bench list`
    # A protocol defined outside bench is a part of its cells' identity with this version (bump it when the
    # protocol computes something else); bench's own protocols are the `protocols` part of bench.run.identity.
    version: ClassVar[int] = 1
    Config: ClassVar[type[Settings]]
    Space: ClassVar[type[Settings] | None] = None
    frozen: ClassVar[bool] = True  # True: fits on cached features of the frozen encoder; False: trains it

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            PROTOCOLS.register(cls.name, cls)

    @classmethod
    def fit(cls, settings: Settings, data: Labelled) -> Fitted:
        """The classifier of one evaluation cell from its budget's labels (``data``), with ``settings``."""
        raise NotImplementedError

    @classmethod
    def score(cls, settings: Settings, data: Labelled, folds: list, watch: Watch) -> float:
        """Validation accuracy of ``settings`` on ``folds`` (pairs of index arrays into ``data``: fit on the
        first, score on the second), averaged over folds: the objective of a tuning trial."""
        raise NotImplementedError

    @classmethod
    def suggest(cls, trial, space: Settings) -> dict:
        """One trial's hyperparameters drawn from ``space`` by an Optuna ``trial``."""
        raise NotImplementedError

    @classmethod
    def configured(cls, settings: Settings) -> dict:
        """The configured settings as a point of the search space (trial 0 of every study)."""
        raise NotImplementedError

    @classmethod
    def with_params(cls, settings: Settings, params: dict) -> Settings:
        """``settings`` with tuned hyperparameters put in."""
        return settings.model_copy(update=params)

    @classmethod
    def test_inputs(cls, features: torch.Tensor | None, images: torch.Tensor) -> torch.Tensor:
        """What the fitted classifier predicts from: the test images' frozen features, or the images."""
        return features if cls.frozen else images


def as_plugin(name: str, obj: object) -> type[Protocol]:
    """A protocol from a user's package (``bench.plugins``): a ``Protocol`` subclass whose ``name`` is the one it
    is used by, with a ``summary``."""
    return subclass_named("protocol", name, obj, Protocol, ("summary",))
