"""The tables of a suite: dataset, encoder, pretraining, evaluation, tuning, execution, and what every task's own
table has (``TaskConfig``). A protocol's table is defined with the protocol (``bench.protocols``)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from bench.config.settings import Budget, ProtocolName, Seed, Settings, Strict, Unique, validate_tables
from bench.plugins import register_named
from bench.registry import DATASETS, ENCODERS, PROTOCOLS

# `class = "module:attribute"`: an entry from the user's own package (bench.plugins). Its source, not its path, is in
# the keys of the cells that use it, so the field is left out of every dump.
PLUGIN = Field(
    None,
    alias="class",
    exclude=True,
    description="a task, encoder or dataset from your own package, as 'module:attribute' (bench.plugins)",
)


class TaskConfig(Settings):
    """Options every task has; a task's own Config adds its hyperparameters with the paper's defaults."""

    protocols: Annotated[list[ProtocolName], Unique] | None = None  # only these of the suite's protocols
    plugin: str | None = PLUGIN


class SyntheticConfig(Strict):
    """Generated class-dependent images (for tests): a per-class colour and stripe pattern over a sky gradient."""

    classes: int = Field(4, ge=2)
    train: int = Field(512, gt=0)
    test: int = Field(256, gt=0)
    size: int = Field(32, ge=8)


class DatasetConfig(Strict):
    name: str = "cifar10"  # a name in bench.registry.DATASETS (`bench list`)
    plugin: str | None = PLUGIN
    root: str | None = None  # else $BENCH_DATA, else ~/.cache/bench
    pool_size: int | None = Field(None, gt=0)  # unlabelled images used for pretraining (seeded subset)
    train_size: int | None = Field(None, gt=0)  # labelled pool, stratified subset (quick experiments only)
    test_size: int | None = Field(None, gt=0)  # test set, stratified subset (quick experiments only)
    # horizontal flips in every task's views and in fine-tuning; false for data whose mirror image is another
    # class (digits, text)
    flip: bool = True
    image_size: int | None = Field(
        None,
        ge=8,
        description="resize every image to this square size when the cache is built: the shorter side to this "
        "many px (bicubic, antialiased), then the centre square; None: use the images as they are (then they must "
        "be square and of one size)",
    )
    synthetic: SyntheticConfig = SyntheticConfig()

    @model_validator(mode="before")
    @classmethod
    def _plugin(cls, data: Any) -> Any:
        return register_named(DATASETS, data, "cifar10")

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        if name not in DATASETS:
            raise ValueError(f"unknown dataset {name!r}; registered: {', '.join(DATASETS.names())}")
        return name

    def classes(self) -> int | None:
        """The number of classes, where it is known before the data is read."""
        return self.synthetic.classes if self.name == "synthetic" else DATASETS[self.name].classes


class EncoderConfig(Strict):
    name: str = Field(
        "resnet18_cifar",
        description="a registered encoder (`bench list`), or a backbone by library: 'torchvision:<model>', "
        "'timm:<model>' (randomly initialised, without its classifier)",
    )
    cifar_stem: bool = Field(
        False,
        description="a backbone by library only: a 3x3 stride-1 stem and no max-pool, for 32-64 px images "
        "(ResNet-style models)",
    )
    plugin: str | None = PLUGIN

    @model_validator(mode="before")
    @classmethod
    def _plugin(cls, data: Any) -> Any:
        return register_named(ENCODERS, data, "resnet18_cifar")

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        if name not in ENCODERS and not ENCODERS.has_factory(name):
            raise ValueError(
                f"unknown encoder {name!r}; registered: {', '.join(ENCODERS.names())}, or by library: "
                "'torchvision:<model>', 'timm:<model>'"
            )
        return name

    @model_validator(mode="after")
    def _backbone(self) -> EncoderConfig:
        if ENCODERS.has_factory(self.name):
            ENCODERS.from_factory(self.name, self.cifar_stem)  # checks the model exists and the stem applies
        elif self.cifar_stem:
            raise ValueError(
                "cifar_stem applies to backbones named by library ('torchvision:resnet18'); "
                "bench's own has resnet18_cifar"
            )
        return self

    def key(self) -> str | dict:
        """What of the encoder table decides numbers: its name, and the stem where it is swapped."""
        return {"name": self.name, "cifar_stem": True} if self.cifar_stem else self.name


class PretrainConfig(Strict):
    """One schedule shared by every task of a suite (same epochs and optimiser: a fair comparison)."""

    epochs: int = Field(200, ge=0)
    # The compute fixed instead of epochs (at most one of the two): total optimiser steps, or total source images
    # seen (steps = ceil(images / batch_size)). The cosine schedule and the tasks' momentum and freeze schedules
    # span those steps; the last epoch is cut short. None: epochs x the steps of one epoch
    steps: int | None = Field(None, gt=0)
    images: int | None = Field(None, gt=0)
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
    # label-free health (bench.train.health: RankMe, collapse signal) every health_every epochs and at the last, on
    # health_images images of the pool; measured from the training loop, published in health.md: in the key.
    # 0 turns it off
    health_every: int = Field(5, ge=0)
    health_images: int = Field(2048, ge=16)

    @model_validator(mode="after")
    def _one_length(self) -> PretrainConfig:
        if self.steps is not None and self.images is not None:
            raise ValueError(
                f"steps = {self.steps} and images = {self.images} are both set; set at most one of them "
                "(optimiser steps or source images seen)"
            )
        return self

    @model_validator(mode="after")
    def _warmup_within_training(self) -> PretrainConfig:
        if self.steps is None and self.images is None and self.warmup_epochs > self.epochs:
            raise ValueError(
                f"warmup_epochs = {self.warmup_epochs:g} is longer than training (epochs = {self.epochs}); "
                f"use at most {self.epochs}"
            )
        return self

    def key_content(self) -> dict:
        """What of the schedule enters a pretraining cell's key: every field but ``SPEED_ONLY``, and those of
        ``LEFT_OUT_UNSET`` only when set (a suite that fixes no compute keeps the keys it had without them)."""
        content = self.model_dump(exclude=SPEED_ONLY)
        return {k: v for k, v in content.items() if not (k in LEFT_OUT_UNSET and v is None)}


# PretrainConfig fields left out of cell keys: they change speed, never what is trained or measured
SPEED_ONLY = {"checkpoint_every_s", "workers"}
# PretrainConfig fields left out of cell keys while None: unset, the run is as long as ``epochs`` says
LEFT_OUT_UNSET = {"steps", "images"}


class EvaluationConfig(Strict):
    """How every protocol receives an encoder, the same for every task and baseline."""

    # Label-free BatchNorm recalibration: before any protocol, each encoder's BN running statistics are
    # recomputed on whole images of the unlabelled pool (its task's evaluation input), for every task and
    # baseline alike. Pretraining on tiles, patches or lightness leaves statistics that do not match whole
    # images. Off by default, the protocol every published linear probe uses; what it changes is measured in the
    # manual (The report: BatchNorm recalibration).
    bn_recalibration: bool = False
    bn_recalibration_images: int = Field(10000, gt=0)  # seeded subset of the pool


class TuningConfig(Strict):
    """Optuna studies, one per (task, protocol, budget, seed), with the same number of trials for every task and
    baseline, on validation labels drawn from inside that seed's budget."""

    enabled: bool = False
    trials: int = Field(8, gt=0)  # finished (complete or pruned) trials per study
    protocols: Annotated[list[ProtocolName], Unique] = Field(["finetune"], min_length=1)  # the others: as set
    budgets: Annotated[list[Budget], Unique] | None = None  # tune only these (None: all); the others as set
    sampler_seed: Seed = 0  # TPE
    storage: str | None = None  # any Optuna storage URL; None: a journal file next to the MLflow store
    val_fraction: float = Field(0.2, gt=0, lt=1)  # of the budget; k-fold when too small to split
    start_from_defaults: bool = True  # trial 0 of every study is the configured values: tuning can only
    # replace them with something that did better on validation
    prune: bool = True  # median pruning of fine-tuning trials from intermediate validation accuracy
    space: dict[str, Any] = Field(
        default_factory=dict,
        description="protocol -> its search space, one [tuning.space.<protocol>] table each (below): bench's own "
        "protocols, the tuned ones and any written here",
    )

    @model_validator(mode="wrap")
    @classmethod
    def _spaces_of_the_protocols(cls, data: Any, handler: Any) -> TuningConfig:
        if not isinstance(data, dict):
            return handler(data)
        data, errors = dict(data), []
        if "label_seed" in data:
            message = "removed: each seed's cells are tuned on that seed's own budget labels; delete the key"
            errors.append(
                {
                    "type": "value_error",
                    "loc": ("label_seed",),
                    "input": data.pop("label_seed"),
                    "ctx": {"error": message},
                }
            )
        written = data.get("space") or {}
        if not isinstance(written, dict):
            return handler(data)
        tuned = data.get("protocols", cls.model_fields["protocols"].default)
        names = set(written) | {n for n in PROTOCOLS.names() if PROTOCOLS.module_of(n).startswith("bench.")}
        names |= {n for n in tuned if isinstance(n, str) and n in PROTOCOLS}
        unknown = sorted(n for n in written if n not in PROTOCOLS)
        for n in unknown:
            message = f"unknown protocol {n!r}; registered: {', '.join(PROTOCOLS.names())}"
            errors.append({"type": "value_error", "loc": ("space", n), "input": written[n], "ctx": {"error": message}})
        spaces = {n: PROTOCOLS[n].Space for n in sorted(names - set(unknown)) if PROTOCOLS[n].Space is not None}
        tables = {n: written.get(n, {}) for n in spaces}
        data["space"], space_errors = validate_tables(tables, spaces, ("space",))
        errors += space_errors
        try:
            model = handler(data)
        except ValidationError as e:
            errors += e.errors()
        if errors:
            raise ValidationError.from_exception_data(cls.__name__, errors)
        return model


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
    pool: Literal["auto", "resident", "stream"] = "auto"  # the pretraining pool on the device, or read a batch at a
    # time from the cache; auto: on the device when it takes at most half its free memory (the same batches either way)

    @field_validator("address")
    @classmethod
    def _known_address(cls, address: str) -> str:
        if address in ("local", "auto") or re.fullmatch(r"(ray://)?[\w.\-]+:\d+", address):
            return address
        raise ValueError("expected 'local' (start Ray here), 'auto' (join the running cluster) or ray://host:port")


class ReportConfig(Strict):
    """How the report reads the comparisons (``bench.report``). Not in any cell key: it changes what the report
    says about finished runs, never what a cell computes."""

    # the equivalence margin m, a difference of test accuracies as a fraction (0.01 = 1 point): a task is
    # "equivalent" to a baseline when two one-sided tests (TOST) show the mean paired difference inside (-m, +m)
    equivalence_margin: float = 0.01

    @field_validator("equivalence_margin")
    @classmethod
    def _a_fraction(cls, margin: float) -> float:
        if not 0 < margin < 1:
            raise ValueError(
                "the equivalence margin is a difference of accuracies as a fraction, above 0 and below 1 "
                "(0.01 = 1 point)"
            )
        return margin
