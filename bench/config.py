"""Suite schema: validated TOML, ``--set`` overrides, and errors that name the file, the key and the choices.

A suite is data, never code. Every field has a default, so ``name = "x"`` alone is a valid suite (CIFAR-10,
rotation against both baselines, linear probe). Unknown keys and names are errors before any work starts.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)

from bench.schema import Settings
from bench.tasks import TASKS
from bench.tasks.base import Protocol

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

Budget = Annotated[int, Field(gt=0)] | Literal["full"]
PROTOCOLS: dict[str, str] = {
    "linear": "frozen features, multinomial logistic regression (L-BFGS), L2 chosen on validation labels",
    "knn": "frozen L2-normalised features, similarity-weighted kNN (InstDisc: k=200, T=0.1)",
    "finetune": "whole network trained on the labelled subset with flip and crop augmentation",
}
DATASET_CLASSES = {"cifar10": 10, "cifar100": 100, "stl10": 10, "svhn": 10}


class ConfigError(ValueError):
    """A suite that cannot run; the message names the file, the key, the bad value and what is allowed."""


class Strict(Settings):
    # inf and nan pass a ``gt=0`` bound; no setting of a suite means them
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, validate_default=True)


SEED_MAX = 2**32 - 1  # numpy's and torch's generators both accept 0 .. 2^32 - 1 everywhere
Seed = Annotated[int, Field(ge=0, le=SEED_MAX)]
# A suite's name is a folder under results_dir and an MLflow experiment: letters, digits, '.', '_', '-', no path
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
TRACKING_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "http", "https", "databricks")


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
        from bench.encoders import ENCODERS

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


def _log_range(bounds: tuple[float, float]) -> tuple[float, float]:
    low, high = bounds
    if low <= 0:
        raise ValueError(f"a log-scale range starts above 0, got low = {low:g}")
    if low > high:
        raise ValueError(f"low {low:g} is above high {high:g}; write [low, high]")
    return bounds


LogRange = Annotated[tuple[float, float], AfterValidator(_log_range)]  # (low, high), searched on a log scale


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


# One optional table per registered task: `[tasks.rotation]` selects rotation with its own validated config.
TasksConfig = create_model(
    "TasksConfig",
    __config__=ConfigDict(extra="forbid", frozen=True, validate_default=True),
    **{name: (task.Config | None, None) for name, task in sorted(TASKS.items())},
)
DEFAULT_TASKS = {"rotation": {}, "scratch": {}, "random": {}}


class Suite(Strict):
    name: str = "suite"
    dataset: DatasetConfig = DatasetConfig()
    encoder: EncoderConfig = EncoderConfig()
    tasks: TasksConfig = TasksConfig(**DEFAULT_TASKS)
    budgets: list[Budget] = Field([100, 1000, "full"], min_length=1)
    seeds: list[Seed] = Field([0, 1, 2], min_length=1)
    protocols: list[Protocol] = Field(["linear", "finetune"], min_length=1)
    pretrain: PretrainConfig = PretrainConfig()
    linear: LinearConfig = LinearConfig()
    knn: KNNConfig = KNNConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    tuning: TuningConfig = TuningConfig()
    execution: ExecutionConfig = ExecutionConfig()
    device: Literal["auto", "cpu", "cuda"] = "auto"
    tracking_uri: str | None = None  # else $MLFLOW_TRACKING_URI, else sqlite:///<results_dir>/mlflow.db
    results_dir: str = "results"

    @field_validator("name")
    @classmethod
    def _safe_name(cls, name: str) -> str:
        if not re.fullmatch(NAME_PATTERN, name):
            raise ValueError(
                "a suite name is a folder under results_dir: 1-64 letters, digits, '.', '_' or '-', starting with "
                "a letter or digit (no '/', no spaces)"
            )
        return name

    @field_validator("tracking_uri")
    @classmethod
    def _known_scheme(cls, uri: str | None) -> str | None:
        if uri is not None:
            check_tracking_uri(uri)
        return uri

    @field_validator("results_dir")
    @classmethod
    def _some_folder(cls, folder: str) -> str:
        if not folder.strip():
            raise ValueError("results_dir is empty; name a folder, e.g. 'results'")
        return folder

    @field_validator("budgets")
    @classmethod
    def _budgets_fit_classes(cls, budgets: list, info: ValidationInfo) -> list:
        dataset = info.data.get("dataset")
        if dataset is None:
            return budgets
        classes = dataset.synthetic.classes if dataset.name == "synthetic" else DATASET_CLASSES.get(dataset.name)
        small = [b for b in budgets if classes and b != "full" and b < classes]
        if small:
            raise ValueError(
                f"budget {small[0]} is smaller than the {classes} classes of {dataset.name}; a class-balanced "
                f"budget needs at least {classes} labels"
            )
        return budgets

    @field_validator("tuning")
    @classmethod
    def _tuning_refers_to_the_suite(cls, tuning: TuningConfig, info: ValidationInfo) -> TuningConfig:
        seeds, budgets = info.data.get("seeds"), info.data.get("budgets")
        if seeds is not None and tuning.label_seed is not None and tuning.label_seed not in seeds:
            raise ValueError(f"tuning.label_seed = {tuning.label_seed} is not one of the suite's seeds {seeds}")
        if budgets is not None and tuning.budgets is not None:
            missing = [b for b in tuning.budgets if b not in budgets]
            if missing:
                raise ValueError(
                    f"tuning.budgets {missing} are not among the suite's budgets {budgets}; nothing would be tuned "
                    "for them"
                )
        return tuning

    @field_validator("tasks")
    @classmethod
    def _some_task(cls, tasks: BaseModel) -> BaseModel:
        if not any(getattr(tasks, n) is not None for n in TASKS):
            raise ValueError(f"at least one task is needed; registered: {', '.join(sorted(TASKS))}")
        return tasks

    @field_validator("seeds", "budgets")
    @classmethod
    def _unique(cls, values: list) -> list:
        if len(set(map(str, values))) != len(values):
            raise ValueError(f"values must be unique, got {values}")
        return values

    @field_validator("pretrain")
    @classmethod
    def _pretraining_has_epochs(cls, pretrain: PretrainConfig, info: ValidationInfo) -> PretrainConfig:
        tasks = info.data.get("tasks")
        pretraining = [n for n, c in (tasks or []) if c is not None and TASKS[n].pretrains]
        if pretrain.epochs == 0 and pretraining:
            raise ValueError(
                f"pretrain.epochs = 0, but {', '.join(pretraining)} pretrain{'s' if len(pretraining) == 1 else ''}; "
                "use at least 1 epoch, or select only the baselines (scratch, random)"
            )
        if pretrain.augment == "lightly":
            missing = [n for n in pretraining if not TASKS[n].has_reference_path()]
            if missing:
                have = sorted(n for n, t in TASKS.items() if t.pretrains and t.has_reference_path())
                raise ValueError(
                    f"pretrain.augment = 'lightly' needs a reference pipeline for every pretraining task; "
                    f"{', '.join(missing)} {'has' if len(missing) == 1 else 'have'} none (available for: "
                    f"{', '.join(have)})"
                )
        return pretrain

    def selected_tasks(self) -> dict[str, Any]:
        """Task name -> its validated config, in file order."""
        return {n: c for n, c in self.tasks if c is not None}

    def sorted_budgets(self) -> list[Budget]:
        return sorted(self.budgets, key=lambda b: float("inf") if b == "full" else b)

    def tuned(self, protocol: str, budget) -> bool:
        """Whether (protocol, budget) takes its hyperparameters from an Optuna study."""
        cfg = self.tuning
        return cfg.enabled and protocol in cfg.protocols and (cfg.budgets is None or budget in cfg.budgets)

    def protocol_settings(self, protocol: str, params: dict) -> BaseModel:
        """The protocol's configured settings with tuned values put in."""
        settings = getattr(self, protocol)
        if protocol == "linear" and "l2" in params:
            return settings.model_copy(update={"l2_grid": [params["l2"]]})
        return settings.model_copy(update=params)


def digest(obj: Any, n: int = 16) -> str:
    """Stable short hash of JSON-able data (sorted keys): the identity of a cell."""
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def parse_value(text: str) -> Any:
    """A ``--set`` value as TOML (numbers, booleans, lists, quoted strings), else the bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. pretrain.epochs=5")
        node = raw
        *parents, leaf = key.strip().split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {p!r} is not a table")
        node[leaf] = parse_value(value.strip())
    return raw


def _model_of(annotation: Any) -> Any:
    """The pydantic model inside an annotation such as ``X | None``."""
    for arg in (annotation, *getattr(annotation, "__args__", ())):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def _allowed_keys(loc: tuple) -> list[str]:
    """The keys allowed at ``loc`` (a pydantic error location), for 'unknown key' messages."""
    model: Any = Suite
    for part in loc:
        field = model.model_fields.get(part) if model else None
        if field is None or _model_of(field.annotation) is None:
            break
        model = _model_of(field.annotation)
    return sorted(model.model_fields) if model else []


def format_error(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith(("function-", "literal["))))
        loc = tuple(p for p in loc if p not in ("int", "constrained-int"))
        key = ".".join(str(p) for p in loc) or "(top level)"
        if e["type"] == "extra_forbidden":
            allowed = _allowed_keys(loc[:-1])
            lines.append(f"key {key!r}: unknown key; allowed keys: {', '.join(allowed)}")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            got = repr(e.get("input"))
            shown = "" if isinstance(e.get("input"), dict) or len(got) > 200 else f" (got {got})"
            lines.append(f"key {key!r}: {msg}{shown}")
    if len(lines) == 1:
        return f"{source}: {lines[0]}"
    return "\n  ".join([f"{source}: {len(lines)} problems", *lines])


def load_suite(path: str | Path, overrides: list[str] | None = None) -> Suite:
    """Read, override and validate a suite file; raise ConfigError with a message naming file and key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: suite file not found")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start}); save the suite file as UTF-8") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the suite file ({e.strerror})") from None
    raw.setdefault("name", path.stem)
    raw = apply_overrides(raw, overrides or [])
    try:
        return Suite(**raw)
    except ValidationError as e:
        raise ConfigError(format_error(e, str(path))) from None


def check_tracking_uri(uri: str) -> str:
    """A tracking URI MLflow can open with a database behind it. MLflow's file store (``file://`` or a plain
    folder) is refused: it cannot create an experiment atomically, which the suite's lease needs."""
    scheme = uri.split("://", 1)[0].split("+", 1)[0].lower() if "://" in uri else ""
    if scheme in ("", "file"):
        raise ValueError(
            f"tracking URI {uri!r} is an MLflow file store, which cannot keep one writer per suite; use a database "
            "store such as sqlite:///results/mlflow.db, or a tracking server (http://...)"
        )
    if scheme not in TRACKING_SCHEMES:
        raise ValueError(
            f"tracking URI {uri!r} has the unknown scheme {scheme!r}; use one of "
            f"{', '.join(s + '://' for s in TRACKING_SCHEMES)} (e.g. sqlite:///results/mlflow.db)"
        )
    return uri


def tracking_uri(suite: Suite) -> str:
    if suite.tracking_uri:
        return suite.tracking_uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        try:
            return check_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
        except ValueError as e:
            raise ConfigError(f"$MLFLOW_TRACKING_URI: {e}") from None
    return f"sqlite:///{Path(suite.results_dir).resolve() / 'mlflow.db'}"
