"""Suite schema: validated TOML, ``--set`` overrides, and errors that name the file, the key and the choices.

A suite is data, never code. Every field has a default, so ``name = "x"`` alone is a valid suite (CIFAR-10,
rotation against both baselines, linear probe). Unknown keys and names are errors before any work starts.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import (
    Field,
    PrivateAttr,
    SerializeAsAny,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from bench.config.sections import (
    DatasetConfig,
    EncoderConfig,
    EvaluationConfig,
    ExecutionConfig,
    PretrainConfig,
    ReportConfig,
    TaskConfig,
    TuningConfig,
)
from bench.config.settings import Budget, ProtocolName, Seed, Settings, Strict, unique, validate_tables
from bench.errors import PluginError
from bench.plugins import register_named
from bench.registry import DATASETS, ENCODERS, PROTOCOLS, TASKS

# A suite's name is a folder under results_dir and an MLflow experiment: letters, digits, '.', '_', '-', no path
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
TRACKING_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "http", "https", "databricks")
DEFAULT_TASKS = {"rotation": {}, "scratch": {}, "random": {}}


class Suite(Strict):
    """A validated suite. Besides the fields below, a suite holds one table per registered protocol (``[linear]``,
    ``[finetune]``, ...; ``protocol(name)``), and ``tasks`` maps each selected task to its own validated table:
    both are validated through the registries (``bench.registry``), importing only the tasks and protocols the
    suite names."""

    name: str = "suite"
    dataset: DatasetConfig = DatasetConfig()
    encoder: EncoderConfig = Field(default_factory=EncoderConfig)  # made when used: it imports the encoders
    tasks: dict[str, SerializeAsAny[TaskConfig]] = Field(
        default_factory=lambda: dict(DEFAULT_TASKS),
        description="the selected tasks, one [tasks.<name>] table each (below) with the task's own keys; "
        "default: rotation and both baselines (scratch, random)",
    )
    budgets: list[Budget] = Field([100, 1000, "full"], min_length=1)
    seeds: list[Seed] = Field(
        [0, 1, 2],
        min_length=1,
        description="pretraining seeds; without draws each also draws the labels (seed s: label draw s)",
    )
    draws: list[Seed] | None = Field(
        None,
        min_length=1,
        description="label draws crossed with the seeds: every encoder is evaluated on every draw (nested across "
        "budgets); a budget of every label has one draw, the first",
    )
    protocols: list[ProtocolName] = Field(["linear", "finetune"], min_length=1)
    pretrain: PretrainConfig = PretrainConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    tuning: TuningConfig = Field(default_factory=TuningConfig)  # made when used: it imports the protocols
    execution: ExecutionConfig = ExecutionConfig()
    report: ReportConfig = ReportConfig()  # how the report reads finished runs; in no cell key
    device: Literal["auto", "cpu", "cuda"] = "auto"
    tracking_uri: str | None = None  # else $MLFLOW_TRACKING_URI, else sqlite:///<results_dir>/mlflow.db
    results_dir: str = "results"
    reference_dir: str | None = Field(
        None,
        description="a results folder holding this suite's committed results (<reference_dir>/<name>/runs.csv): "
        "the report of a rerun into another results_dir says how close it came to them, cell by cell",
    )
    _protocol_tables: dict[str, Settings] = PrivateAttr(default_factory=dict)

    @model_validator(mode="wrap")
    @classmethod
    def _registered_tables(cls, data: Any, handler: Any) -> Suite:
        """Tasks and protocol tables validated by the registered classes' own models, their errors located
        like every other key's."""
        if not isinstance(data, dict):
            return handler(data)
        data, errors = dict(data), []
        written = {n: data.pop(n) for n in PROTOCOLS.names() if n in data and n not in cls.model_fields}
        tables, table_errors = validate_tables(written, {n: PROTOCOLS[n].Config for n in written}, ())
        errors += table_errors
        tasks = data.get("tasks", DEFAULT_TASKS)
        if isinstance(tasks, dict):
            broken = set()
            for n, table in tasks.items():
                try:
                    register_named(TASKS, table if not isinstance(table, dict) else {**table, "name": n}, n)
                except PluginError as e:
                    loc = ("tasks", n, "class")
                    errors.append({"type": "value_error", "loc": loc, "input": table, "ctx": {"error": str(e)}})
                    broken.add(n)
            known = {n: t for n, t in tasks.items() if n in TASKS}
            for n in tasks:
                if n not in TASKS and n not in broken:
                    message = f"unknown task {n!r}; registered: {', '.join(TASKS.names())}"
                    errors.append(
                        {"type": "value_error", "loc": ("tasks", n), "input": tasks[n], "ctx": {"error": message}}
                    )
            valid, task_errors = validate_tables(known, {n: TASKS[n].Config for n in known}, ("tasks",))
            # by name, the order cells run and are reported in; a bad table is no missing task
            data["tasks"] = {n: valid.get(n, TaskConfig()) for n in sorted(tasks)}
            errors += task_errors
        try:
            suite = handler(data)
        except ValidationError as e:
            errors += e.errors()
        if errors:
            raise ValidationError.from_exception_data(cls.__name__, errors)
        suite._protocol_tables = tables
        return suite

    def register_entries(self) -> None:
        """Register the suite's own entries (plug-ins named by ``class``, backbones by library) in this process:
        a Ray worker receives the suite pickled, not validated."""
        for name, cfg in self.tasks.items():
            if cfg.plugin:
                register_named(TASKS, {"name": name, "class": cfg.plugin}, name)
        if self.encoder.plugin:
            register_named(ENCODERS, {"name": self.encoder.name, "class": self.encoder.plugin}, self.encoder.name)
        elif ENCODERS.has_factory(self.encoder.name):
            ENCODERS.from_factory(self.encoder.name, self.encoder.cifar_stem)
        if self.dataset.plugin:
            register_named(DATASETS, {"name": self.dataset.name, "class": self.dataset.plugin}, self.dataset.name)

    def protocol(self, name: str) -> Settings:
        """The validated ``[<name>]`` table of a registered protocol (its defaults where the suite has none)."""
        table = self._protocol_tables.get(name)
        return table if table is not None else PROTOCOLS[name].Config()

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
        classes = dataset.classes()
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
        budgets = info.data.get("budgets")
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
    def _some_task(cls, tasks: dict) -> dict:
        if not tasks:
            raise ValueError(f"at least one task is needed; registered: {', '.join(TASKS.names())}")
        return tasks

    @field_validator("tasks")
    @classmethod
    def _tasks_fit_the_encoder(cls, tasks: dict, info: ValidationInfo) -> dict:
        encoder = info.data.get("encoder")
        if encoder is None:
            return tasks
        kind = ENCODERS[encoder.name].kind
        shown = {"cnn": "CNN", "vit": "ViT"}
        misfits = [n for n in tasks if n in TASKS and kind not in TASKS[n].encoder_kinds]
        if misfits:
            needs = {k for n in misfits for k in TASKS[n].encoder_kinds}
            raise ValueError(
                f"{', '.join(misfits)} cannot run on encoder {encoder.name!r} (a {shown.get(kind, kind)}): "
                f"{'it needs' if len(misfits) == 1 else 'they need'} a "
                f"{' or '.join(shown.get(k, k) for k in sorted(needs))} "
                f"encoder; drop {'it' if len(misfits) == 1 else 'them'} or choose another [encoder]"
            )
        return tasks

    @field_validator("seeds", "budgets", "draws", "protocols")
    @classmethod
    def _unique(cls, values: list | None) -> list | None:
        return unique(values)

    @field_validator("pretrain")
    @classmethod
    def _pretraining_has_epochs(cls, pretrain: PretrainConfig, info: ValidationInfo) -> PretrainConfig:
        tasks = info.data.get("tasks")
        pretraining = [n for n in (tasks or {}) if n in TASKS and TASKS[n].pretrains]  # unknown: reported already
        if pretrain.epochs == 0 and pretrain.steps is None and pretrain.images is None and pretraining:
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
        """Task name -> its validated config, by name."""
        return dict(self.tasks)

    def sorted_budgets(self) -> list[Budget]:
        return sorted(self.budgets, key=lambda b: float("inf") if b == "full" else b)

    @property
    def crossed(self) -> bool:
        """Whether label draws are named apart from the pretraining seeds (``draws``)."""
        return self.draws is not None

    def draws_at(self, budget, seed: int) -> list[int | None]:
        """The label draws seed ``seed``'s encoder is evaluated on at ``budget``: [None] (the seed's own draw)
        without ``draws``; else every draw, and only the first where the budget takes every label (all draws
        are the same labels there)."""
        if self.draws is None:
            return [None]
        return self.draws[:1] if budget == "full" else list(self.draws)

    def label_draws(self) -> list[int]:
        """Every label draw a budget is drawn for: the draws, else the seeds."""
        return list(self.draws) if self.draws is not None else list(self.seeds)

    def tuned(self, protocol: str, budget) -> bool:
        """Whether (protocol, budget) takes its hyperparameters from an Optuna study."""
        cfg = self.tuning
        return cfg.enabled and protocol in cfg.protocols and (cfg.budgets is None or budget in cfg.budgets)

    def protocol_settings(self, protocol: str, params: dict) -> Settings:
        """The protocol's configured settings with tuned values put in."""
        return PROTOCOLS[protocol].with_params(self.protocol(protocol), params)


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
