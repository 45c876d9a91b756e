"""The identity lock (``bench/run/identity.lock``): each part's normalised digest (its modules' syntax trees without
docstrings, comments and formatting) beside its version. ``check_lock`` says where code and lock disagree and what
to do: bump the version (behaviour changed) or record the digest (a refactor the golden check confirms)."""

from __future__ import annotations

import json
from pathlib import Path

from bench.run.identity import Part, all_parts
from bench.run.source import PACKAGE, module_path, source_digest

LOCK = Path(__file__).resolve().parent / "identity.lock"


# ---------------------------------------------------------------------------------------------- digests


def part_digest(part: Part) -> str:
    return source_digest(part.modules)


# ---------------------------------------------------------------------------------------------- the lock


def current_lock() -> dict:
    return {
        name: {"version": p.version, "digest": part_digest(p), "modules": list(p.modules)}
        for name, p in sorted(all_parts().items())
        if all(m.startswith("bench.") for m in p.modules)  # a plug-in's source is its own identity
    }


def read_lock(path: Path = LOCK) -> dict:
    return json.loads(path.read_text())["parts"] if path.exists() else {}


def write_lock(path: Path = LOCK) -> dict:
    parts = current_lock()
    text = json.dumps({"parts": parts}, indent=1, sort_keys=True) + "\n"
    path.write_text(text)
    return parts


HOW = (
    "if its outputs changed, bump its version ({where}): the cells using it go stale; if `nox -s golden` shows "
    "every output unchanged (a refactor), record the new digest with `python -m bench identity --update`: "
    "nothing goes stale"
)


def where(name: str) -> str:
    if name.startswith("task."):
        return f"`version` of the task class in {module_path(all_parts()[name].modules[0]).name}"
    return f"Part({name!r}, ...) in bench/run/identity.py"


def check_lock(path: Path = LOCK) -> list[str]:
    """What differs between the code and the lock, one line each, with what to do; empty when they agree."""
    locked, now = read_lock(path), current_lock()
    problems = []
    for name in sorted(set(locked) | set(now)):
        old, new = locked.get(name), now.get(name)
        if old is None:
            problems.append(f"part {name} is new: record it with `python -m bench identity --update`")
        elif new is None:
            problems.append(f"part {name} is gone: `python -m bench identity --update` drops it from the lock")
        elif new["version"] != old["version"]:
            problems.append(
                f"part {name} is version {new['version']}, the lock has {old['version']}: record it with "
                "`python -m bench identity --update` (and the golden outputs it changed)"
            )
        elif new["digest"] != old["digest"] or new["modules"] != old["modules"]:
            modules = ", ".join(str(module_path(m).relative_to(PACKAGE.parent)) for m in new["modules"])
            problems.append(
                f"part {name} ({modules}) changed since the lock but is still version {new['version']}: "
                + HOW.format(where=where(name))
            )
    return problems
