"""MLflow runs to one tidy table: a row per planned evaluation cell, with its score, status, health and
identity; which baselines each row is compared against."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bench.cell import Cell, label_draw
from bench.registry import PROTOCOLS
from bench.store.tracking import Tracker

BASELINES = ("scratch", "random")
REFERENCE = ("scratch", "finetune")  # the labels-only reference


def is_frozen(protocol: str) -> bool:
    """Whether ``protocol`` keeps the encoder frozen (its registered class says; a name no registry holds, from an
    older store, counts as not frozen)."""
    return protocol in PROTOCOLS and PROTOCOLS[protocol].frozen


def frozen_protocols() -> list[str]:
    """The registered frozen protocols, bench's own first (linear, knn), then any other, by name."""
    names = [n for n in PROTOCOLS.names() if is_frozen(n)]
    return sorted(names, key=lambda n: (not PROTOCOLS.module_of(n).startswith("bench."), n != "linear", n))


def _experiment_name(tracker) -> str:
    """The suite's name: the tracker's experiment name."""
    if getattr(tracker, "name", None):
        return tracker.name
    try:
        return tracker.client.get_experiment(tracker.experiment_id).name
    except Exception:  # no experiment (yet): no name to give
        return ""


def _n_labels(run, cell) -> float:
    if run is not None:
        for source in (run.data.params, run.data.metrics):  # a param now; a metric in older runs
            if "n_labels" in source:
                return float(source["n_labels"])
    return np.nan if cell.budget == "full" else float(cell.budget)


def _commit(run) -> str:
    if run is None:
        return ""
    tags = run.data.tags
    return tags.get("mlflow.source.git.commit") or tags.get("git_commit") or "unknown"


def _health_cost(tracker, run, costs: dict) -> float:
    """What the health measurements cost a pretraining run: their seconds over its epochs' training seconds (the
    run's totals; for runs logged before totals were, from the metric histories, read once per run); NaN when
    nothing was measured."""
    metrics = run.data.metrics
    if "health_wall_s" in metrics and "pretrain_wall_s" in metrics:
        trained = metrics["pretrain_wall_s"]
        return metrics["health_wall_s"] / trained if trained else np.nan
    if run.info.run_id not in costs:
        history = {k: tracker.client.get_metric_history(run.info.run_id, k) for k in ("health_s", "epoch_s")}
        measured, trained = (sum(m.value for m in history[k]) for k in ("health_s", "epoch_s"))
        costs[run.info.run_id] = measured / trained if history["health_s"] and trained else np.nan
    return costs[run.info.run_id]


COST = ("pretrain_steps", "pretrain_images_seen", "pretrain_wall_s", "pretrain_device_s")  # bench.train.loop.cost


def _pretrain_cost(source, pretrained: bool) -> dict[str, float]:
    """The cost columns of an evaluation row: its source pretraining's (NaN when that run did not log them), 0 for
    a baseline, which does not pretrain."""
    if not pretrained:
        return dict.fromkeys(COST, 0.0)
    metrics = source.data.metrics if source is not None else {}
    return {k: metrics.get(k, np.nan) for k in COST}


def tidy(tracker: Tracker, cells: list[Cell]) -> pd.DataFrame:
    """One row per planned evaluation cell: its identity, and test_acc (NaN when it has no finished run), with its
    pretraining's health and cost (``COST``). The ``suite`` column is the MLflow experiment's name, ``dataset`` the
    runs' ``dataset.name`` param."""
    finished = tracker.finished()
    pretrainings = {c.key for c in cells if c.kind == "pretrain"}
    rows, costs, seen = [], {}, set()
    for c in cells:
        if c.kind != "eval" or c.key in seen:  # one row per key: a repeated cell is one sample, not two
            continue
        seen.add(c.key)
        run = finished.get(c.key)
        m = run.data.metrics if run else {}
        source = finished.get(c.source) if c.source != c.key else None
        health = source.data.metrics if source is not None and source.data.tags.get("kind") == "pretrain" else {}
        tags = run.data.tags if run else {}
        rows.append(
            {
                "task": c.task,
                "protocol": c.protocol,
                "budget": str(c.budget),
                "seed": c.seed,
                "draw": label_draw(c.seed, getattr(c, "draw", None)),  # without suite draws: the seed
                "test_acc": m.get("test_acc", np.nan),
                "val_acc": m.get("val_acc", np.nan),
                "train_acc": m.get("train_acc", np.nan),  # fine-tuning: accuracy on its own training labels
                "rankme": health.get("rankme", np.nan),  # the source pretraining's last logged (final) RankMe
                "collapse_std": health.get("collapse_std", np.nan),  # and its collapse signal (0: collapsed)
                "health_cost": _health_cost(tracker, source, costs) if "rankme" in health else np.nan,
                "health_images": float(source.data.params.get("pretrain.health_images", np.nan))
                if "rankme" in health
                else np.nan,  # the sample RankMe was measured on (at most this many pool images)
                **_pretrain_cost(source, c.source in pretrainings),
                "n_labels": _n_labels(run, c),
                "status": "finished" if run else "missing",
                "hp_source": tags.get("hp_source", ""),
                "caveat": tags.get("caveat", ""),  # why the protocol may have stopped short of its optimum
                "cell_key": c.key,
                "run_id": run.info.run_id if run else "",
                "git_commit": _commit(run),
                "code_identity": tags.get("parts") or tags.get("code_identity", ""),
                "data_identity": tags.get("data_identity", ""),
                "dataset": run.data.params.get("dataset.name", "") if run else "",
            }
        )
    df = pd.DataFrame(rows)
    if len(df):
        known = df.dataset[df.dataset != ""]
        df["dataset"] = known.mode().iloc[0] if len(known) else ""
        df.insert(0, "suite", _experiment_name(tracker))
    return df


def references(protocol: str, df: pd.DataFrame) -> list[tuple[str, str]]:
    """The (baseline, baseline protocol) pairs a task under ``protocol`` is tested against."""
    present = set(zip(df.task, df.protocol, strict=True))
    refs = [("random", protocol)] if is_frozen(protocol) else []
    return [r for r in refs + [REFERENCE] if r in present]


SEED_CELL = ["task", "protocol", "budget", "seed"]


def by_seed(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (task, protocol, budget, pretraining seed), the unit every interval and paired test of the
    report is over: a seed evaluated on several label draws has its draws' mean (``n_draws`` of them). A seed with
    a draw missing counts as missing, so that no mean is over fewer draws than its neighbours'. Without draws each
    row is its own and the table is returned as it is, with ``n_draws`` 1."""
    if df.empty or "draw" not in df or not df.duplicated(SEED_CELL).any():
        return df.drop(columns="draw", errors="ignore").assign(n_draws=1) if len(df) else df
    numeric = [c for c in df.columns if c not in SEED_CELL and pd.api.types.is_numeric_dtype(df[c]) and c != "draw"]
    text = [c for c in df.columns if c not in SEED_CELL + numeric + ["draw", "status", "caveat"]]
    groups = df.groupby(SEED_CELL, sort=False)
    out = groups[numeric].mean()
    out[text] = groups[text].first()
    out["status"] = groups.status.agg(lambda s: "finished" if (s == "finished").all() else "missing")
    out.loc[out.status != "finished", "test_acc"] = np.nan
    out["caveat"] = groups[["draw", "caveat"]].apply(
        lambda g: "; ".join(f"draw {d}: {c}" for d, c in zip(g.draw, g.caveat, strict=True) if c)
    )
    out["n_draws"] = groups.draw.nunique()
    return out.reset_index()[[c for c in df.columns if c != "draw"] + ["n_draws"]]
