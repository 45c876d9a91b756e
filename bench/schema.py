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

from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator


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
