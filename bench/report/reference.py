"""How close a rerun came to a suite's committed results: the new ``runs.csv`` beside the reference's, cell by
cell (task, protocol, budget, seed, draw), in one line."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

CELL = ["task", "protocol", "budget", "seed", "draw"]
SAME = 5e-5  # the tables print four decimals: a difference below this reads as the same number


def _read(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path, dtype={"budget": str})
    df["draw"] = df.get("draw", pd.Series(index=df.index, dtype=float)).fillna(-1).astype(int)
    return df[df["test_acc"].notna()]


def against_reference(runs_csv: Path, reference_dir: str | Path, suite: str) -> str | None:
    """One line comparing the test accuracies of ``runs_csv`` with ``<reference_dir>/<suite>/runs.csv``; None
    when there is no reference, or it is this very file."""
    reference = Path(reference_dir) / suite / "runs.csv"
    if not reference.is_file() or reference.resolve() == Path(runs_csv).resolve():
        return None
    new, ref = _read(runs_csv), _read(reference)
    both = new.merge(ref, on=CELL, suffixes=("", "_ref"))
    where = f"against the reference {reference.parent}/"
    commits = ref["git_commit"].dropna() if "git_commit" in ref else pd.Series(dtype=str)
    commit = str(commits.iloc[0])[:7] if len(commits) else "?"
    if both.empty:
        return f"{where} (commit {commit}): none of its {len(ref)} evaluations is in this report"
    diff = (both["test_acc"] - both["test_acc_ref"]).abs()
    if (diff < SAME).all():
        same = "with the same test accuracy to 4 decimals"
        return f"{where} (commit {commit}): all {len(both)} of its {len(ref)} evaluations rerun, {same}"
    worst = both.loc[diff.idxmax()]
    cell = f"{worst['task']} {worst['protocol']} {worst['budget']} s{worst['seed']}"
    return (
        f"{where} (commit {commit}): {len(both)} of its {len(ref)} evaluations rerun, "
        f"{int((diff < SAME).sum())} with the same test accuracy to 4 decimals; mean |difference| "
        f"{diff.mean():.4f}, largest {diff.max():.4f} "
        f"({cell}: {worst['test_acc']:.4f} here, {worst['test_acc_ref']:.4f} there)"
    )
