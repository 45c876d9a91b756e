"""Accuracy parity of the two data paths: the same suite pretrained once with the on-device views and once with
lightly's per-image transforms (``pretrain.augment``), everything else equal, then evaluated alike.

Fast views that train a different encoder would be a bug, so this runs both as ordinary suite cells (tracked
in MLflow, resumable) and compares them paired by seed: mean test accuracy of each path, the mean difference
(lightly minus device) with the report's interval (:func:`bench.report.stats.interval`: 95% Student-t from 3 seeds, the
seeds' range below) and the exact sign-flip test (the paired t-test as an extra column). "Within noise" means the
interval contains zero; its width says how small a difference the seeds could have detected.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from rich.console import Console

from bench.config.load import load_suite
from bench.files import inside, write_atomic
from bench.report.stats import paired
from bench.report.tidy import tidy

PATHS = ("device", "lightly")


def run_parity(suite_path: str | Path, overrides: list[str], console: Console) -> dict:
    """Run (or resume) the suite on both data paths and compare them; writes <results_dir>/<suite>/parity.{md,json}."""
    from bench.run.runner import Runner

    frames, suite = [], None
    for path in PATHS:
        suite = load_suite(suite_path, [*overrides, f"pretrain.augment={path!r}"])
        console.rule(f"pretrain.augment = {path!r}")
        runner = Runner(suite, suite_path, console)
        runner.run(report=False)  # <results_dir>/<suite>/ holds the comparison, not one path's report
        frames.append(tidy(runner.tracker, runner.cells).assign(path=path))
    rows = compare(pd.concat(frames))
    out = inside(suite.results_dir, suite.name)
    result = {"suite": suite.name, "epochs": suite.pretrain.epochs, "rows": rows}
    write_atomic(out / "parity.json", json.dumps(result, indent=2).encode())
    write_atomic(out / "parity.md", markdown(result).encode())
    console.print(markdown(result))
    console.print(f"written: {out / 'parity.md'}, {out / 'parity.json'}")
    return result


def compare(df: pd.DataFrame) -> list[dict]:
    """One row per (task, protocol, budget): both paths' accuracies paired by seed."""
    rows = []
    for (task, protocol, budget), group in df.groupby(["task", "protocol", "budget"], sort=False):
        wide = group.pivot_table(index="seed", columns="path", values="test_acc").dropna()
        if not set(PATHS) <= set(wide.columns):
            continue
        device, lightly = wide["device"].to_numpy(), wide["lightly"].to_numpy()
        p = paired(lightly, device)
        diff, low, high = p.mean_diff, p.ci_low, p.ci_high
        rows.append(
            {
                "task": task,
                "protocol": protocol,
                "budget": budget,
                "seeds": [int(s) for s in wide.index],
                "device": device.tolist(),
                "lightly": lightly.tolist(),
                "device_mean": float(device.mean()),
                "lightly_mean": float(lightly.mean()),
                "diff": diff,
                "diff_ci_low": low,
                "diff_ci_high": high,
                "diff_ci_method": p.ci_method,
                "p_signflip": p.p_signflip,
                "p_ttest": p.p_ttest,
                "within_noise": bool(low <= 0 <= high) if low == low else None,
            }
        )
    return rows


def markdown(result: dict) -> str:
    lines = [
        f"Data-path parity, suite `{result['suite']}`, {result['epochs']} pretraining epochs: test accuracy "
        "(mean over seeds) with the on-device views and with lightly's per-image transforms; difference "
        "lightly - device paired by seed, with its 95% Student-t interval from 3 seeds or the seeds' range "
        "(marked range) below; p: exact sign-flip test (smallest possible p with n seeds: 2/2^n), paired t-test.",
        "",
        "| task | protocol | budget | n | device | lightly | difference [interval] | sign-flip p | paired t p "
        "| within noise |",
        "|---|---|---|---:|---:|---:|---|---:|---:|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['task']} | {r['protocol']} | {r['budget']} | {len(r['seeds'])} | {r['device_mean']:.4f} | "
            f"{r['lightly_mean']:.4f} | {r['diff']:+.4f} {'range ' if r['diff_ci_method'] == 'range' else ''}"
            f"[{r['diff_ci_low']:+.4f}, {r['diff_ci_high']:+.4f}] | {r['p_signflip']:.3f} | {r['p_ttest']:.3f} | "
            f"{'yes' if r['within_noise'] else 'no' if r['within_noise'] is False else 'n/a'} |"
        )
    return "\n".join(lines) + "\n"
