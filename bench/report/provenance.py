"""Which code made a report's numbers: the part versions behind each task's rows, and whether they mix."""

from __future__ import annotations

import hashlib
import json

import pandas as pd


def _task_code(identities: pd.Series) -> tuple[str, bool]:
    """(a short name for the code behind one task's rows, whether they mix code versions). A row's identity is
    its run's ``parts`` tag ({part: version}, JSON); runs of older bench recorded a digest of the source
    (``code_identity``). Rows of one task use different parts (tuned cells use tuning), so they mix versions only
    where one part appears with two versions, or where some row's identity is an old digest or unrecorded."""
    merged: dict[str, set] = {}
    old = set()
    for text in identities:
        try:
            parts = json.loads(text) if text else None
        except ValueError:
            parts = None
        if isinstance(parts, dict):
            for name, version in parts.items():
                merged.setdefault(name, set()).add(version)
        else:
            old.add(text)
    mixed = (bool(old) and bool(merged)) or len(old) > 1 or "" in old or any(len(v) > 1 for v in merged.values())
    if not merged:
        return ", ".join(sorted(o or "unrecorded" for o in old)), mixed
    versions = json.dumps({k: sorted(v) for k, v in sorted(merged.items())}, sort_keys=True)
    name = "parts-" + hashlib.sha256(versions.encode()).hexdigest()[:8]
    return ", ".join([name, *sorted(o or "unrecorded" for o in old)]), mixed


def provenance(df: pd.DataFrame) -> str:
    """The code and data behind the numbers. Cells run at different commits are reused only where the versions
    of the code parts that decide them are equal (equal code identity); the note says so whenever commits
    differ."""
    ok = df[df.status == "finished"]
    if ok.empty or "git_commit" not in ok:
        return ""
    commits = sorted({c[:10] for c in ok.git_commit if c and c != "unknown"})
    data = sorted({d for d in ok.data_identity if d})
    code = {task: _task_code(rows.code_identity) for task, rows in ok.groupby("task")}
    text = f"\n\nCode: git commit {', '.join(commits) or 'unknown'}"
    if len(commits) > 1:
        text += (
            f" ({len(commits)} commits: cells are reused across commits only where the versions of the code parts "
            "that decide them are equal, i.e. equal code identity)"
        )
    text += "; code identity per task: " + ", ".join(f"{t} {c or 'unrecorded'}" for t, (c, _) in code.items())
    text += f". Data identity: {', '.join(data) or 'unrecorded'}."
    if any(mixed for _, mixed in code.values()):
        text += " WARNING: some task's numbers come from more than one code version, or from unrecorded code."
    return text
