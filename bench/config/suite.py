"""Suite schema: validated TOML, ``--set`` overrides, and errors that name the file, the key and the choices.

A suite is data, never code. Every field has a default, so ``name = "x"`` alone is a valid suite (CIFAR-10,
rotation against both baselines, linear probe). Unknown keys and names are errors before any work starts.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    create_model,
    field_validator,
)

from bench.config.sections import (
    DATASET_CLASSES,
    DatasetConfig,
    EncoderConfig,
    EvaluationConfig,
    ExecutionConfig,
    FinetuneConfig,
    KNNConfig,
    LinearConfig,
    PretrainConfig,
    TuningConfig,
)
from bench.config.settings import Budget, Seed, Strict
from bench.tasks import TASKS
from bench.tasks.base import Protocol

PROTOCOLS: dict[str, str] = {
    "linear": "frozen features, multinomial logistic regression (L-BFGS), L2 chosen on validation labels",
    "knn": "frozen L2-normalised features, similarity-weighted kNN (InstDisc: k=200, T=0.1)",
    "finetune": "whole network trained on the labelled subset with flip and crop augmentation",
}
# A suite's name is a folder under results_dir and an MLflow experiment: letters, digits, '.', '_', '-', no path
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
TRACKING_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "http", "https", "databricks")


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
