"""config: config.sections."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from bench.config.settings import Budget, LogRange, Seed, Strict
from bench.tasks.base import Protocol

DATASET_CLASSES = {"cifar10": 10, "cifar100": 100, "stl10": 10, "svhn": 10}


class SyntheticConfig(Strict):
    """Generated class-dependent images (for tests): a per-class colour and stripe pattern over a sky gradient."""

    classes: int = Field(4, ge=2)
    train: int = Field(512, gt=0)
    test: int = Field(256, gt=0)
    size: int = Field(32, ge=8)


class DatasetConfig(Strict):
    name: Literal["cifar10", "cifar100", "stl10", "svhn", "imagefolder", "synthetic"] = "cifar10"
    root: str | None = None  # else $BENCH_DATA, else ~/.cache/bench
    pool_size: int | None = Field(None, gt=0)  # unlabelled images used for pretraining (seeded subset)
    train_size: int | None = Field(None, gt=0)  # labelled pool, stratified subset (quick experiments only)
    test_size: int | None = Field(None, gt=0)  # test set, stratified subset (quick experiments only)
    # horizontal flips in every task's views and in fine-tuning; false for data whose mirror image is another
    # class (digits, text)
    flip: bool = True
    synthetic: SyntheticConfig = SyntheticConfig()


class EncoderConfig(Strict):
    name: str = "resnet18_cifar"

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        from bench.models.encoders import ENCODERS

        if name not in ENCODERS:
            raise ValueError(f"unknown encoder {name!r}; registered: {', '.join(sorted(ENCODERS))}")
        return name


class PretrainConfig(Strict):
    """One schedule shared by every task of a suite (same epochs and optimiser: a fair comparison)."""

    epochs: int = Field(200, ge=0)
    batch_size: int = Field(512, ge=2)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.06, gt=0)  # for batch_size; not rescaled
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    warmup_epochs: float = Field(0, ge=0)  # at most epochs
    # where views are made: "device" (batched tensor operations on the training device) or "lightly" (the
    # reference pipeline: lightly's per-image transforms in DataLoader workers, then the same model step)
    augment: Literal["device", "lightly"] = "device"
    # checkpoint_every_s and workers change speed, not what is computed: they are not in the cell key
    checkpoint_every_s: float = Field(60, ge=0)  # training state saved this often, for resume
    workers: int | None = Field(None, ge=0)  # DataLoader workers for augment = "lightly"; None: up to 8
    compile: bool = False  # torch.compile the encoder for pretraining (fused kernels round otherwise: in the key)
    # label-free health (bench.health: RankMe, collapse signal) every health_every epochs and at the last, on
    # health_images images of the pool; measured from the training loop, published in health.md: in the key.
    # 0 turns it off
    health_every: int = Field(5, ge=0)
    health_images: int = Field(2048, ge=16)

    @model_validator(mode="after")
    def _warmup_within_training(self) -> PretrainConfig:
        if self.warmup_epochs > self.epochs:
            raise ValueError(
                f"warmup_epochs = {self.warmup_epochs:g} is longer than training (epochs = {self.epochs}); "
                f"use at most {self.epochs}"
            )
        return self


# PretrainConfig fields left out of cell keys: they change speed, never what is trained or measured
SPEED_ONLY = {"checkpoint_every_s", "workers"}


class LinearConfig(Strict):
    l2_grid: list[Annotated[float, Field(gt=0)]] = Field([1e-5, 1e-4, 1e-3, 1e-2, 1e-1], min_length=1)
    max_iter: int = Field(100, gt=0)  # L-BFGS iterations per fit
    val_fraction: float = Field(0.2, gt=0, lt=1)  # of the budget, stratified, for choosing L2


class KNNConfig(Strict):
    """Weighted kNN of Wu et al. 2018 (InstDisc, arXiv:1805.01978): cosine similarity, weights exp(s / T)."""

    k: int = Field(200, gt=0)  # capped by the number of labelled images
    temperature: float = Field(0.1, gt=0)
    chunk: int = Field(1024, gt=0)  # test images per similarity block: memory stays O(chunk x labelled)


class FinetuneConfig(Strict):
    epochs: int = Field(30, gt=0)
    min_steps: int = Field(300, ge=0)  # small budgets still get this many optimiser steps
    batch_size: int = Field(128, ge=2)
    lr: float = Field(0.05, gt=0)  # encoder learning rate
    head_lr: float | None = Field(None, gt=0)  # the new linear head's; None: the same as lr
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)


class EvaluationConfig(Strict):
    """How every protocol receives an encoder, the same for every task and baseline."""

    # Label-free BatchNorm recalibration: before any protocol, each encoder's BN running statistics are
    # recomputed on whole images of the unlabelled pool (its task's evaluation input), for every task and
    # baseline alike. Pretraining on tiles, patches or lightness leaves statistics that do not match whole
    # images. Off by default: on suites/quick_all.toml it changed linear-probe accuracy by -0.04 / +0.39 / -0.21
    # points on average at 100 / 1000 / all labels, with no consistent sign for any task, the tile and patch
    # tasks included (README); off keeps the protocol every published linear probe uses.
    bn_recalibration: bool = False
    bn_recalibration_images: int = Field(10000, gt=0)  # seeded subset of the pool


class FinetuneSpace(Strict):
    lr: LogRange = (1e-3, 0.3)
    head_lr: LogRange = (1e-3, 1.0)
    weight_decay: LogRange = (1e-6, 1e-2)


class LinearSpace(Strict):
    l2: LogRange = (1e-6, 1.0)


class KNNSpace(Strict):
    k: LogRange = (5, 200)  # integers
    temperature: LogRange = (0.02, 1.0)


class SearchSpace(Strict):
    finetune: FinetuneSpace = FinetuneSpace()
    linear: LinearSpace = LinearSpace()
    knn: KNNSpace = KNNSpace()


class TuningConfig(Strict):
    """Optuna studies, one per (task, protocol, budget), with the same number of trials for every task and
    baseline, on validation labels drawn from inside the budget."""

    enabled: bool = False
    trials: int = Field(8, gt=0)  # finished (complete or pruned) trials per study
    protocols: list[Protocol] = Field(["finetune"], min_length=1)  # the others keep their configured values
    budgets: list[Budget] | None = None  # tune only these budgets (None: all); the others keep their values
    sampler_seed: Seed = 0  # TPE
    label_seed: Seed | None = None  # whose labelled subset and encoder the study uses; None: the first seed
    storage: str | None = None  # any Optuna storage URL; None: a journal file next to the MLflow store
    val_fraction: float = Field(0.2, gt=0, lt=1)  # of the budget; k-fold when too small to split
    start_from_defaults: bool = True  # trial 0 of every study is the configured values: tuning can only
    # replace them with something that did better on validation
    prune: bool = True  # median pruning of fine-tuning trials from intermediate validation accuracy
    space: SearchSpace = SearchSpace()


class Resources(Strict):
    """What one Ray task asks of a node. ``gpus = None``: one GPU when the cluster has any, else none."""

    gpus: float | None = Field(None, ge=0)
    cpus: float = Field(1, gt=0)


class ExecutionConfig(Strict):
    """Where the cells run (``bench.cluster``): in this process (``local``), or as Ray tasks (``ray``) on a Ray
    instance started here (``address = "local"``), on the running cluster (``"auto"``), or on a cluster reached
    through Ray Client (``"ray://host:10001"``). Results are the same either way; only the dispatch differs."""

    backend: Literal["local", "ray"] = "local"
    address: str = "local"
    pretrain: Resources = Resources()  # per pretraining cell
    evaluate: Resources = Resources()  # per evaluation group: every protocol and budget of one (task, seed)
    tune: Resources = Resources(gpus=0)  # per tuning worker
    tuning_workers: int = Field(2, ge=1)  # workers sharing the trials of one study
    retries: int = Field(2, ge=0)  # a task whose worker died (machine lost, process killed) runs again
    threads: int | None = Field(None, ge=1)  # torch CPU threads per task; None: as many as a local run on that
    # node uses (its cores), so CPU results equal the local backend's (they depend on the thread count)

    @field_validator("address")
    @classmethod
    def _known_address(cls, address: str) -> str:
        if address in ("local", "auto") or re.fullmatch(r"(ray://)?[\w.\-]+:\d+", address):
            return address
        raise ValueError("expected 'local' (start Ray here), 'auto' (join the running cluster) or ray://host:port")
