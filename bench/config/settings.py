"""The base of every validated settings table (suite, task, views): unknown keys refused, frozen, and one value
for one setting however it is given.

- Defaults are validated like written values, so an omitted ``warmup_epochs`` and ``warmup_epochs = 0`` are both
  the float ``0.0`` (cell keys digest the values).
- A nested table written in part keeps its preset for the rest: ``[tasks.byol.views] min_scale = 0.2`` changes
  that one field of BYOL's view and leaves BYOL's other view parameters as they were, instead of resetting them
  to the table type's generic defaults. (A selection such as ``[tasks]`` is not a preset: writing it replaces
  the default selection.)
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    @model_validator(mode="before")
    @classmethod
    def _written_over_presets(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        out = dict(data)
        for name, field in cls.model_fields.items():
            if isinstance(field.default, Settings) and isinstance(out.get(name), dict):
                out[name] = {**field.default.model_dump(), **out[name]}
        return out


Budget = Annotated[int, Field(gt=0)] | Literal["full"]


class Strict(Settings):
    # inf and nan pass a ``gt=0`` bound; no setting of a suite means them
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, validate_default=True)


SEED_MAX = 2**32 - 1  # numpy's and torch's generators both accept 0 .. 2^32 - 1 everywhere
Seed = Annotated[int, Field(ge=0, le=SEED_MAX)]


def _log_range(bounds: tuple[float, float]) -> tuple[float, float]:
    low, high = bounds
    if low <= 0:
        raise ValueError(f"a log-scale range starts above 0, got low = {low:g}")
    if low > high:
        raise ValueError(f"low {low:g} is above high {high:g}; write [low, high]")
    return bounds


LogRange = Annotated[tuple[float, float], AfterValidator(_log_range)]  # (low, high), searched on a log scale


def digest(obj: Any, n: int = 16) -> str:
    """Stable short hash of JSON-able data (sorted keys): the identity of a cell."""
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def _registered_protocol(name: str) -> str:
    from bench.registry import PROTOCOLS

    if name not in PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r}; registered: {', '.join(PROTOCOLS.names())}")
    return name


ProtocolName = Annotated[str, AfterValidator(_registered_protocol)]  # a name in bench.registry.PROTOCOLS


def unique(values: list | None) -> list | None:
    """``values`` when no value is listed twice (100 and "100" count as one); a repeat would run a cell twice."""
    if values is not None:
        seen: set[str] = set()
        for v in values:
            if str(v) in seen:
                raise ValueError(f"values must be unique; {v!r} is listed more than once")
            seen.add(str(v))
    return values


Unique = AfterValidator(unique)


def line_errors(error: ValidationError, prefix: tuple) -> list[dict]:
    """``error``'s entries with ``prefix`` put before each location, to raise again as one ValidationError of the
    enclosing model (``ValidationError.from_exception_data``)."""
    out = []
    for e in error.errors():
        entry = {"type": e["type"], "loc": (*prefix, *e["loc"]), "input": e["input"]}
        if "ctx" in e:
            entry["ctx"] = e["ctx"]
        out.append(entry)
    return out


def validate_tables(tables: dict[str, Any], models: dict[str, type[BaseModel]], prefix: tuple) -> tuple[dict, list]:
    """Each ``tables[name]`` (a TOML table, or an already validated model) validated by ``models[name]``; returns
    (name -> model, line errors located under ``prefix + (name,)``)."""
    values, errors = {}, []
    for name, table in tables.items():
        model = models[name]
        if isinstance(table, model):
            values[name] = table
            continue
        try:
            values[name] = model.model_validate({} if table is None else table)
        except ValidationError as e:
            errors += line_errors(e, (*prefix, name))
    return values, errors
