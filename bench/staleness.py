"""Why a planned cell is not done although the store holds a result for the same experiment: what changed.

A result is reused only under the cell's exact key (config, data identity, code identity). A finished run with
the same ``config_key`` but another key is stale; this module names the reason for ``bench run --dry-run``:
which code modules changed, or that the data changed, or that the run predates recorded identities.
"""

from __future__ import annotations

import json

from bench.plan import Cell

IDENTITY_TAGS = ("kind", "task", "seed", "budget", "protocol")


def _changed_modules(old: dict, new: dict) -> list[str]:
    names = sorted(set(old) | set(new))
    return [m.removeprefix("bench.").replace(".", "/") + ".py" for m in names if old.get(m) != new.get(m)]


def explain(run, cell: Cell) -> str:
    tags = run.data.tags
    if "config_key" not in tags:
        return "its result was made by an older bench that recorded no code or data identity"
    reasons = []
    if tags.get("data_identity") != cell.identity.get("data"):
        reasons.append(f"the data changed (identity {tags.get('data_identity')} -> {cell.identity.get('data')})")
    if tags.get("code_identity") != cell.identity.get("code"):
        old, new = json.loads(tags.get("code_modules", "{}")), json.loads(cell.tags()["code_modules"])
        changed = _changed_modules(old, new)
        reasons.append("the code changed (" + (", ".join(changed) if changed else "modules unknown") + ")")
    if not reasons:
        reasons.append("the encoder it starts from changed")
    return "; ".join(reasons) + f" since run {run.info.run_id[:8]}"


def stale_reasons(tracker, todo: list[Cell]) -> dict[str, str]:
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
