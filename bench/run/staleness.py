"""Why a planned cell is not done although the store holds a result for the same experiment: what changed.

A result is reused only under the cell's exact key (config, data identity, part versions, environment). A
finished run with the same ``config_key`` but another key is stale; this module names the reason for
``bench run --dry-run``: which parts moved to which version, what in the environment changed, or the data.
"""

from __future__ import annotations

import json

from mlflow.entities import Run

from bench.cell import Cell
from bench.store.tracking import Tracker

IDENTITY_TAGS = ("kind", "task", "seed", "budget", "protocol")


def _changes(old: dict, new: dict) -> list[str]:
    """'name a -> b' for every entry of two flat (or one-level nested) mappings that differs."""

    def flat(d: dict) -> dict:
        out = {}
        for k, v in d.items():
            out |= {f"{k}.{i}": w for i, w in v.items()} if isinstance(v, dict) else {k: v}
        return out

    old, new = flat(old), flat(new)
    return [
        f"{k} {old.get(k, '(none)')} -> {new.get(k, '(none)')}"
        for k in sorted(set(old) | set(new))
        if old.get(k) != new.get(k)
    ]


def explain(run: Run, cell: Cell) -> str:
    tags = run.data.tags
    if "config_key" not in tags:
        return "its result was made by an older bench that recorded no code or data identity"
    if "parts" not in tags:
        return "its result was made by a bench that identified code by source digest, not by part versions"
    reasons = []
    if tags.get("data_identity") != cell.identity.get("data"):
        reasons.append(f"the data changed (identity {tags.get('data_identity')} -> {cell.identity.get('data')})")
    parts = _changes(json.loads(tags["parts"]), cell.identity.get("parts", {}))
    if parts:
        reasons.append("parts changed (" + ", ".join(parts) + ")")
    env = _changes(json.loads(tags.get("environment", "{}")), cell.identity.get("environment", {}))
    if env:
        reasons.append("the environment changed (" + ", ".join(env) + ")")
    if not reasons:
        reasons.append("the encoder it starts from changed")
    return "; ".join(reasons) + f" since run {run.info.run_id[:8]}"


def stale_reasons(tracker: Tracker, todo: list[Cell]) -> dict[str, str]:
    """cell key -> why an earlier finished result of the same experiment is not reused, for cells in ``todo``."""
    runs = tracker.runs("attributes.status = 'FINISHED'")
    by_config: dict[str, list] = {}
    by_tags: dict[tuple, list] = {}
    for r in runs:
        t = r.data.tags
        if "config_key" in t:
            by_config.setdefault(t["config_key"], []).append(r)
        elif "cell_key" in t:
            by_tags.setdefault(tuple(t.get(k, "") for k in IDENTITY_TAGS), []).append(r)
    out = {}
    for c in todo:
        ctags = c.tags()
        found = by_config.get(c.config_key) or by_tags.get(tuple(ctags.get(k, "") for k in IDENTITY_TAGS))
        if found:
            out[c.key] = explain(max(found, key=lambda r: r.info.start_time), c)
    return out
