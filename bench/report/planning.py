"""How many pretraining seeds and label draws a stated effect needs, and what they cost (``bench plan``).

The test is the report's: the exact sign-flip test over pretraining seeds on the per-seed differences (task
minus its baseline, draws averaged), a task counted as better when its p passes Holm's first step over its
family (p * m < alpha, the bar for the clearest of m tasks). Its power for an effect ``delta`` is simulated from
the variance components of the differences (:mod:`bench.report.variance`): with S seeds and D draws the seed
means are delta + B + a_s + e_s, with a_s ~ N(0, seed^2), e_s ~ N(0, residual^2 / D) and B ~ N(0, draw^2 / D)
shared by every seed (the draws are the same labels for every encoder), so more draws shrink the last two terms
and more seeds the first. A budget of every label has one draw whatever D is. The exact test's granularity is
part of the simulation: with too few seeds no outcome can pass (power 0).

Costs come from the pilot's own runs: the wall seconds of each pretraining, and of each evaluation together with
its tuning study's trials, times the number of such cells the design would run.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bench.report.stats import ALPHA
from bench.report.tidy import BASELINES, references
from bench.report.variance import components

MAX_SEEDS = 12  # 2^12 sign patterns per simulated experiment
SIMULATIONS = 4000


@dataclass(frozen=True)
class Spread:
    """Standard deviations of the per-cell differences: pretraining seed, label draw, residual; ``split``: whether
    the pilot separated them (a pilot with one draw per seed gives only their total, counted as ``seed``, which
    more draws do not shrink)."""

    seed: float
    draw: float
    residual: float
    split: bool = True


def difference_spreads(df: pd.DataFrame, protocol: str) -> dict[str, Spread]:
    """Budget -> the largest spread over the tasks of ``protocol`` of their differences against each reference
    (the report's pairs: same seed, same draw), from a pilot's tidy table."""
    done = df[df.status == "finished"]
    out: dict[str, Spread] = {}
    refs = references(protocol, done)
    for budget, at in done[done.protocol == protocol].groupby("budget", sort=False):
        spreads = []
        for task, rows in at.groupby("task"):
            if task in BASELINES:
                continue
            for base, base_protocol in refs:
                ref = done[(done.task == base) & (done.protocol == base_protocol) & (done.budget == budget)]
                both = rows.merge(ref, on=["seed", "draw"], suffixes=("", "_ref"))
                both["diff"] = both.test_acc - both.test_acc_ref
                grid = both.pivot_table(index="seed", columns="draw", values="diff").dropna()
                if grid.shape[0] >= 2 and grid.shape[1] >= 2:
                    comp = components(grid.to_numpy())
                    spreads.append(Spread(*(comp[n].sd[0] for n in ("seed", "draw", "residual"))))
                elif len(both) >= 2:
                    spreads.append(Spread(float(both["diff"].std(ddof=1)), 0.0, 0.0, split=False))
        if spreads:
            out[str(budget)] = Spread(
                max(s.seed for s in spreads),
                max(s.draw for s in spreads),
                max(s.residual for s in spreads),
                all(s.split for s in spreads),
            )
    return out


def power(delta: float, spread: Spread, seeds: int, draws: int, family: int, alpha: float = ALPHA, rng=None) -> float:
    """Probability that a task better by ``delta`` is found better (module docstring), by simulation."""
    if seeds < 2 or family * 2.0 / 2**seeds >= alpha:
        return 0.0
    rng = rng if rng is not None else np.random.default_rng(0)
    shared = rng.normal(0, spread.draw / math.sqrt(draws), (SIMULATIONS, 1))
    own = rng.normal(0, spread.seed, (SIMULATIONS, seeds)) + rng.normal(
        0, spread.residual / math.sqrt(draws), (SIMULATIONS, seeds)
    )
    d = delta + shared + own  # (simulations, seeds)
    signs = 1 - 2 * ((np.arange(2**seeds)[:, None] >> np.arange(seeds)) & 1)  # every sign pattern
    flipped = np.abs(d @ signs.T) / seeds  # (simulations, patterns)
    observed = np.abs(d.mean(axis=1, keepdims=True))
    p = (flipped >= observed - 1e-12).mean(axis=1)
    return float(((p * family < alpha) & (d.mean(axis=1) > 0)).mean())


def cell_seconds(tracker, df: pd.DataFrame) -> tuple[dict[str, float], dict[tuple, float]]:
    """From a pilot's store: task -> mean wall seconds of its pretraining, and (task, protocol, budget) -> mean
    wall seconds of one evaluation cell with its tuning study's trials."""
    done = df[df.status == "finished"]
    timed = df.dropna(subset=["pretrain_wall_s"])  # a finished pretraining counts, its evaluations done or not
    pretrain = {t: float(g.drop_duplicates("seed").pretrain_wall_s.mean()) for t, g in timed.groupby("task")}
    study_s: dict[str, float] = {}
    for run in tracker.runs("tags.kind = 'trial'"):
        if run.info.end_time:
            name = run.data.tags.get("study", "")
            study_s[name] = study_s.get(name, 0.0) + (run.info.end_time - run.info.start_time) / 1000
    runs = {r.info.run_id: r for r in tracker.runs("tags.kind = 'eval' and attributes.status = 'FINISHED'")}
    seconds: dict[tuple, list[float]] = {}
    for r in done.itertuples():
        run = runs.get(r.run_id)
        if run is None:
            continue
        found = re.search(r"study (\S+),", run.data.params.get("hp_source", ""))
        spent = run.data.metrics.get("wall_s", 0.0) + (study_s.get(found.group(1), 0.0) if found else 0.0)
        seconds.setdefault((r.task, r.protocol, str(r.budget)), []).append(spent)
    return {t: (0.0 if math.isnan(s) else s) for t, s in pretrain.items()}, {
        k: float(np.mean(v)) for k, v in seconds.items()
    }


def suite_costs(
    kinds: set[tuple[str, str, str]], pretrainers: set[str], measured: tuple[dict, dict]
) -> tuple[dict, dict, list[str]]:
    """The seconds of each pretraining and each kind of evaluation cell (task, protocol, budget) of the suite
    being planned, from the pilot's ``measured`` (cell_seconds): a kind the pilot did not run takes the mean of
    the pilot's tasks at its protocol and budget, a task's pretraining the mean of the pilot's pretrainings.
    Returns them with one note per estimated or uncostable kind."""
    pretrain_m, evals_m = measured
    timed = {t: s for t, s in pretrain_m.items() if t in pretrainers and s > 0}
    pretrain, notes = {}, []
    for task in sorted(pretrainers):
        if task in timed:
            pretrain[task] = timed[task]
        elif timed:
            pretrain[task] = float(np.mean(list(timed.values())))
            notes.append(f"{task}'s pretraining as the mean of {', '.join(sorted(timed))}'s")
        else:
            notes.append(f"{task}'s pretraining left out (no pilot pretraining to time)")
    evals, estimated, missing = {}, {}, {}
    for task, protocol, budget in sorted(kinds):
        if (task, protocol, budget) in evals_m:
            evals[(task, protocol, budget)] = evals_m[(task, protocol, budget)]
            continue
        peers = sorted(t for (t, p, b) in evals_m if (p, b) == (protocol, budget))
        if peers:
            evals[(task, protocol, budget)] = float(np.mean([evals_m[(t, protocol, budget)] for t in peers]))
            estimated.setdefault((protocol, ", ".join(peers)), set()).add(task)
        else:
            missing.setdefault(protocol, set()).add(task)
    for (protocol, peers), tasks in estimated.items():
        notes.append(f"{', '.join(sorted(tasks))} {protocol} cells as the mean of {peers}'s at their budget")
    for protocol, tasks in missing.items():
        notes.append(f"{', '.join(sorted(tasks))} {protocol} cells left out where the pilot has none at the budget")
    return pretrain, evals, notes


def design_hours(pretrain: dict, evals: dict, seeds: int, draws: int) -> float:
    """Wall hours of a design of ``seeds`` x ``draws`` (one draw at "full") on the pilot's machine."""
    total = seeds * sum(pretrain.values())
    for (_, _, budget), s in evals.items():
        total += seeds * (1 if budget == "full" else draws) * s
    return total / 3600


def plan_table(
    spreads: dict[str, Spread],
    delta: float,
    family: int,
    alpha: float,
    costs: tuple[dict, dict] | None,
    seeds: range,
    draws: range,
    target: float,
) -> pd.DataFrame:
    """One row per (seeds, draws): the power at every budget, the least of them, and the hours it costs."""
    rows = []
    for s in seeds:
        for d in draws:
            row: dict = {"seeds": s, "draws": d}
            for budget, spread in spreads.items():
                row[f"power_{budget}"] = power(delta, spread, s, 1 if budget == "full" else d, family, alpha)
            row["power_min"] = min(row[f"power_{b}"] for b in spreads) if spreads else math.nan
            row["hours"] = design_hours(*costs, s, d) if costs else math.nan
            row["reaches"] = row["power_min"] >= target
            rows.append(row)
    return pd.DataFrame(rows)


def compact(table: pd.DataFrame) -> pd.DataFrame:
    """Per number of seeds, the fewest draws that reach the target at every budget (the most draws tried where
    none does)."""
    rows = []
    for _, g in table.groupby("seeds", sort=True):
        ok = g[g.reaches]
        rows.append(ok.iloc[0] if len(ok) else g.iloc[-1])
    return pd.DataFrame(rows).reset_index(drop=True)


def choose(table: pd.DataFrame, hours: float | None) -> pd.Series | None:
    """The cheapest design that reaches the target power within ``hours`` (None: any time); else None."""
    ok = table[table.reaches]
    if hours is not None and ok.hours.notna().all():
        ok = ok[ok.hours <= hours]
    if ok.empty:
        return None
    key = "hours" if ok.hours.notna().all() else "seeds"
    return ok.sort_values([key, "seeds", "draws"]).iloc[0]


def plan_markdown(table: pd.DataFrame, spreads: dict[str, Spread], context: dict, chosen: pd.Series | None) -> str:
    """plan.md: the spreads the plan rests on, the designs, and the one chosen."""
    budgets = list(spreads)
    lines = [
        f"# Design plan: {context['suite']}, {context['protocol']}",
        "",
        f"The effect to find: {100 * context['delta']:.1f} points better than the baseline, at alpha = "
        f"{context['alpha']}, Holm over {context['family']} tasks, exact sign-flip test over pretraining seeds "
        f"(draws averaged), target power {context['target']:.0%}. Spreads of the differences ({context['source']}; "
        "SD in points, the largest over the tasks):",
        "",
        "| budget | seed SD | draw SD | residual SD |",
        "|---|---:|---:|---:|",
    ]
    for b, s in spreads.items():
        note = "" if s.split else " (one draw per seed: seed, draw and residual together)"
        lines.append(f"| {b} | {100 * s.seed:.2f}{note} | {100 * s.draw:.2f} | {100 * s.residual:.2f} |")
    lines += [
        "",
        "| seeds | draws | " + " | ".join(f"power at {b}" for b in budgets) + " | hours |",
        "|---:|---:|" + "---:|" * len(budgets) + "---:|",
    ]
    for r in table.itertuples():
        powers = [f"{getattr(r, f'power_{b}'):.2f}" for b in budgets]
        hours = "-" if math.isnan(r.hours) else f"{r.hours:.1f}"
        mark = " **chosen**" if chosen is not None and (r.seeds, r.draws) == (chosen.seeds, chosen.draws) else ""
        lines.append(f"| {r.seeds} | {r.draws} | " + " | ".join(powers) + f" | {hours}{mark} |")
    lines.append("")
    if context.get("estimated"):
        lines += ["Hours: the pilot's measured cell times; " + "; ".join(context["estimated"]) + ".", ""]
    if chosen is None:
        within = f" within {context['hours']} h" if context.get("hours") else ""
        lines.append(f"No design in the table reaches {context['target']:.0%} power at every budget{within}.")
    else:
        hours = "" if math.isnan(chosen.hours) else f", {chosen.hours:.1f} h on the pilot's machine"
        lines.append(
            f"Chosen: {int(chosen.seeds)} seeds x {int(chosen.draws)} draws (power at least "
            f"{chosen.power_min:.2f}{hours})."
        )
    return "\n".join(lines) + "\n"
