"""Reading a suite: the TOML file, ``--set`` overrides, and validation errors turned into lines that name the
file, the key, the bad value and the allowed keys or values. Also the tracking URI a suite resolves to."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ValidationError,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib
from bench.config.sections import TuningConfig
from bench.config.suite import Suite, check_tracking_uri
from bench.errors import ConfigError
from bench.registry import PROTOCOLS, TASKS


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


def table_model(loc: tuple) -> type[BaseModel] | None:
    """The model of the table at ``loc`` (a key path), the registered tables included: a protocol's
    ``[<name>]``, a task's ``[tasks.<name>]``, a protocol's ``[tuning.space.<name>]``."""
    model: Any = Suite
    parts = list(loc)
    while parts and model is not None:
        part = parts.pop(0)
        if model is Suite and part not in Suite.model_fields and part in PROTOCOLS:
            model = PROTOCOLS[part].Config
        elif (model is Suite and part == "tasks") or (model is TuningConfig and part == "space"):
            if not parts:
                return None
            name = parts.pop(0)
            registry = TASKS if part == "tasks" else PROTOCOLS
            if name not in registry:
                return None
            model = registry[name].Config if part == "tasks" else registry[name].Space
        else:
            field = model.model_fields.get(part)
            model = _model_of(field.annotation) if field is not None else None
    return model


def _allowed_keys(loc: tuple) -> list[str]:
    """The keys allowed at ``loc`` (a pydantic error location), for 'unknown key' messages."""
    model = table_model(loc)
    if model is None:
        return []
    extra = PROTOCOLS.names() if model is Suite else []
    return sorted(set(model.model_fields) | set(extra))


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


def read_raw(path: Path, overrides: list[str] | None = None) -> dict:
    """A suite file's TOML with its ``--set`` overrides applied, not yet validated."""
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
    return apply_overrides(raw, overrides or [])


def load_suite(path: str | Path, overrides: list[str] | None = None) -> Suite:
    """Read, override and validate a suite file; raise ConfigError with a message naming file and key."""
    path = Path(path)
    raw = read_raw(path, overrides)
    try:
        return Suite(**raw)
    except ValidationError as e:
        raise ConfigError(format_error(e, str(path))) from None


def suite_store(path: str | Path, overrides: list[str] | None = None) -> tuple[str, str, str]:
    """A suite's name, tracking URI and results folder, read without validating the rest (no task is imported):
    what ``bench ui`` needs, where PyTorch need not be installed."""
    path = Path(path)
    raw = read_raw(path, overrides)
    results_dir, uri = raw.get("results_dir", Suite.model_fields["results_dir"].default), raw.get("tracking_uri")
    for key, value in (("results_dir", results_dir), ("tracking_uri", uri)):
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise ConfigError(f"{path}: key {key!r}: expected a non-empty string (got {value!r})")
    try:
        return str(raw["name"]), store_uri(uri and check_tracking_uri(uri), results_dir), results_dir
    except ValueError as e:
        raise ConfigError(f"{path}: key 'tracking_uri': {e}") from None


def tracking_uri(suite: Suite) -> str:
    return store_uri(suite.tracking_uri, suite.results_dir)


def store_uri(configured: str | None, results_dir: str) -> str:
    """The suite's ``tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<results_dir>/mlflow.db``."""
    if configured:
        return configured
    if os.environ.get("MLFLOW_TRACKING_URI"):
        try:
            return check_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
        except ValueError as e:
            raise ConfigError(f"$MLFLOW_TRACKING_URI: {e}") from None
    return f"sqlite:///{Path(results_dir).resolve() / 'mlflow.db'}"
