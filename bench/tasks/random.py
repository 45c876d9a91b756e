"""A frozen, randomly initialised encoder evaluated like a pretrained one: the floor that shows how much of a
linear probe's accuracy comes from the architecture alone. No pretraining; frozen-feature protocols only."""

from bench.tasks.base import Task


class RandomInit(Task):
    name = "random"
    summary = "baseline: frozen random-init encoder (frozen-feature protocols only)"
    reference = "baseline"
    pretrains = False
    evaluated_by = ("frozen",)
