"""How long pretraining must be: the frozen probe's test accuracy after each pretraining length (``bench curve``).

Each length is the suite itself with ``pretrain.epochs`` set to it, at one seed, one budget and one frozen
protocol: a whole schedule of that length (warm-up and decay included), not a checkpoint of a longer one, so each
point is what the suite would report with that setting. The runs are ordinary cells in the suite's store: the
point at the suite's own length is the suite's own pretraining, reused by a later run of the suite. Written to
``<results_dir>/<suite>/pretrain_curve.{csv,md,png}``; the suite's report is not touched.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from rich.console import Console

from bench.config import load_suite
from bench.errors import ConfigError
from bench.files import write_atomic
from bench.registry import PROTOCOLS, TASKS
from bench.report.tidy import tidy
from bench.run.runner import Runner


def curve_overrides(suite, epochs: int, budget, protocol: str, seed: int) -> list[str]:
    budget_text = '"full"' if budget == "full" else str(budget)
    sets = [f"pretrain.epochs={epochs}", f"budgets=[{budget_text}]", f"protocols=[{protocol!r}]", f"seeds=[{seed}]"]
    sets += ["tuning.enabled=false", f"tuning.budgets=[{budget_text}]"]  # a frozen probe is not tuned
    if suite.draws is not None:
        sets.append(f"draws=[{suite.draws[0]}]")
    return sets


def frozen_tasks_only(suite, protocol: str):
    """The suite without the tasks the frozen protocol cannot evaluate (training on the labels alone)."""
    keep = {
        name: cfg
        for name, cfg in suite.tasks.items()
        if TASKS[name].evaluates_with(PROTOCOLS[protocol]) and (cfg.protocols is None or protocol in cfg.protocols)
    }
    return suite.model_copy(update={"tasks": keep})


def run_curve(path: Path, sets: list[str], epochs: list[int], budget, protocol: str, console: Console) -> Path:
    """Run every length of the curve (cells already done are reused) and write its files; returns the folder."""
    base = load_suite(path, sets)
    if base.pretrain.steps is not None or base.pretrain.images is not None:
        raise ConfigError(f"{path}: bench curve varies pretrain.epochs, but the suite fixes pretrain.steps or .images")
    seed = base.seeds[0]
    frames = []
    for i, e in enumerate(sorted(set(epochs))):
        console.print(f"[bold]curve[/]: pretraining length {e} epochs ({i + 1} of {len(set(epochs))})")
        overrides = [*sets, *curve_overrides(base, e, budget, protocol, seed)]
        suite = frozen_tasks_only(load_suite(path, overrides), protocol)
        runner = Runner(suite, path, console)
        runner.run(report=False)
        frames.append(tidy(runner.tracker, runner.cells).assign(epochs=e))
    df = pd.concat(frames, ignore_index=True)
    df = df[df.task.map(lambda t: TASKS[t].pretrains) | (df.task == "random")]
    out = Path(base.results_dir) / base.name
    out.mkdir(parents=True, exist_ok=True)
    keep = ["task", "protocol", "budget", "seed", "epochs", "test_acc", "rankme", "pretrain_steps", "pretrain_wall_s"]
    write_atomic(out / "pretrain_curve.csv", df[keep].to_csv(index=False).encode())
    write_atomic(out / "pretrain_curve.md", curve_markdown(df, base.name).encode())
    plot_curve(df, out / "pretrain_curve.png", base.name)
    console.print(f"curve: {out}/pretrain_curve.{{csv,md,png}}")
    return out


PLATEAU = 0.01  # a longer schedule that adds less than 1 point of test accuracy has stopped paying


def plateau(df: pd.DataFrame, tolerance: float = PLATEAU) -> dict[str, int | None]:
    """Per pretraining task, the shortest length from which no longer length of the curve gains ``tolerance`` or
    more in test accuracy; None when the longest length still gains on the one before it."""
    found = {}
    for task, g in df[df.task != "random"].groupby("task"):
        acc = g.groupby("epochs").test_acc.mean().sort_index()
        found[task] = next(
            (int(e) for i, e in enumerate(acc.index[:-1]) if (acc.iloc[i + 1 :] < acc.iloc[i] + tolerance).all()),
            None,
        )
    return found


def rankme_lines(df: pd.DataFrame) -> list[str]:
    """RankMe within each method: the final RankMe of each length's pretraining, and Spearman's rho between it and
    the probe's accuracy across the lengths of each task (health.stratified_p over the tasks together)."""
    from bench.report.health import stratified_p

    pretrained = df[(df.task != "random") & df.rankme.notna()] if "rankme" in df else df.iloc[:0]
    if pretrained.empty:
        return []
    wide = pretrained.pivot_table(index="task", columns="epochs", values="rankme")
    lines = ["", "Final RankMe of each length's pretraining (no labels):", ""]
    lines += [
        "| task | " + " | ".join(f"{e} epochs" for e in wide.columns) + " |",
        "|---|" + "---:|" * len(wide.columns),
    ]
    lines += [f"| {t} | " + " | ".join(f"{v:.1f}" for v in row) + " |" for t, row in wide.iterrows()]
    pairs = {t: (g.rankme.to_numpy(float), g.test_acc.to_numpy(float)) for t, g in pretrained.groupby("task")}
    pairs = {t: p for t, p in pairs.items() if len(p[0]) >= 3}
    if pairs:
        each = ", ".join(f"{t} {stratified_p([p])[0]:+.2f}" for t, p in pairs.items())
        rho, pvalue = stratified_p(list(pairs.values()))
        lines += [
            "",
            f"RankMe within each method, across lengths: Spearman's rho with the probe's accuracy {each}; mean "
            f"{rho:+.2f}, p = {pvalue:.3f} (permutations within each task).",
        ]
    return lines


def curve_markdown(df: pd.DataFrame, suite: str) -> str:
    wide = df.pivot_table(index="task", columns="epochs", values="test_acc")
    protocol, budget, seed = df.protocol.iloc[0], df.budget.iloc[0], int(df.seed.iloc[0])
    lines = [
        f"# Pretraining length: {suite}",
        "",
        f"Test accuracy of {protocol} at {budget} labels, seed {seed}, after a whole pretraining schedule of each "
        "length (random: no pretraining).",
        "",
        "| task | " + " | ".join(f"{e} epochs" for e in wide.columns) + " |",
        "|---|" + "---:|" * len(wide.columns),
    ]
    for task, row in wide.iterrows():
        lines.append(f"| {task} | " + " | ".join(f"{v:.4f}" for v in row) + " |")
    lines += [*rankme_lines(df)]
    reached = plateau(df)
    lines += [
        "",
        f"Stopped improving (no longer length gains {PLATEAU:.0%} or more, one seed): "
        + ", ".join(f"{t} at {e} epochs" if e else f"{t} not by {int(wide.columns.max())}" for t, e in reached.items())
        + ".",
    ]
    return "\n".join(lines) + "\n"


def plot_curve(df: pd.DataFrame, path: Path, suite: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    from bench.report.palette import RC, style

    plt.rcParams.update(RC)
    fig, ax = plt.subplots(figsize=(6, 4))
    for task, g in df.groupby("task"):
        g = g.sort_values("epochs")
        look = style(task)
        if task == "random":
            ax.axhline(g.test_acc.mean(), color=look["color"], linestyle="--", label="random (no pretraining)")
        else:
            sns.lineplot(x=g.epochs, y=g.test_acc, ax=ax, label=task, color=look["color"], marker=look["marker"])
    ax.set_xscale("log", base=2)
    ax.set_xlabel("pretraining epochs (a whole schedule each)")
    ax.set_ylabel("test accuracy")
    protocol, budget = df.protocol.iloc[0], df.budget.iloc[0]
    ax.set_title(f"{suite}: {protocol} at {budget} labels against pretraining length", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
