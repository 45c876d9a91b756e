"""A results folder moved whole (its SQLite store, artifacts and caches together): MLflow keeps every
experiment's and run's artifact location as an absolute URI, so without this step new checkpoints and report
files would be written under the old path, recreating it. Written here because MLflow has no command that moves a
store's artifact root."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import unquote, urlparse

from bench.store.client import sqlite_path

# (table, column) of every absolute artifact location in an MLflow SQLite store
LOCATIONS = (("experiments", "artifact_location"), ("runs", "artifact_uri"), ("logged_models", "artifact_location"))


def _folder(uri: str) -> Path:
    return Path(unquote(urlparse(uri).path))


def old_roots(con: sqlite3.Connection, root: str) -> set[str]:
    """The artifact roots (``file:///.../mlartifacts``) the store's experiments name that are not ``root`` and no
    longer exist: where the folder was before it moved."""
    found = set()
    for (location,) in con.execute("SELECT artifact_location FROM experiments"):
        if not location or not location.startswith("file://") or "/mlartifacts/" not in location:
            continue
        prefix = location[: location.rindex("/mlartifacts/") + len("/mlartifacts")]
        if prefix != root and not _folder(prefix).exists():
            found.add(prefix)
    return found


def relocate(uri: str, results_dir: Path) -> tuple[list[str], int]:
    """Rewrite the artifact locations of the store at ``uri`` that point into a moved copy of ``results_dir``:
    only a SQLite store inside ``results_dir`` whose ``mlartifacts`` folder is here and whose recorded one is
    gone. Returns the old roots and the number of locations rewritten (all in one transaction)."""
    db, here = sqlite_path(uri), (Path(results_dir).resolve() / "mlartifacts")
    if db is None or not db.is_file() or db.resolve().parent != here.parent or not here.is_dir():
        return [], 0
    root = here.as_uri()
    con = sqlite3.connect(db, timeout=30)
    try:
        with con:  # one transaction: every location moves, or none
            olds = sorted(old_roots(con, root))
            tables = {name for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            changed = 0
            for old in olds:
                for table, column in LOCATIONS:
                    if table in tables:
                        changed += con.execute(
                            f"UPDATE {table} SET {column} = ? || substr({column}, ?) WHERE substr({column}, 1, ?) = ?",
                            (root, len(old) + 1, len(old) + 1, old + "/"),
                        ).rowcount
    finally:
        con.close()
    return olds, changed
