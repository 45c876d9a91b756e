"""Supervised training from random initialisation on the labelled subset only: the label-scarce baseline
that every pretext task has to beat. No pretraining; the checkpoint is the seeded random initialisation, and
the only protocol is fine-tuning (with the same schedule every task's fine-tuning gets)."""

from bench.tasks.base import Task


class Scratch(Task):
    name = "scratch"
    summary = "baseline: supervised from random init on the labelled subset (fine-tune only)"
    reference = "baseline"
    pretrains = False
    evaluated_by = ("trained",)
