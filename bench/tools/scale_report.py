"""The tables, exponents and figure of ``bench.tools.scale``'s measurements, under ``results/scale/``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def exponent(xs, ys) -> float:
    """Slope of log(y) on log(x) between the two largest x."""
    (x0, y0), (x1, y1) = sorted(zip(xs, ys))[-2:]
    return float(np.log(y1 / y0) / np.log(x1 / x0))


DATA_CURVES = {  # column -> what it is
    "build_seconds": "cache build (s)",
    "load_seconds": "load of the built cache (s)",
    "epoch_seconds": "pretraining epoch, pool streamed (s)",
}
STORE_CURVES = {
    "dry_run_s": "bench run --dry-run (s)",
    "report_s": "bench report (s)",
    "rerun_s": "rerun, all done (s)",
}


def write(out: Path, data: list[dict], store: list[dict], machine: str) -> None:
    """scale.json, scale.md (the tables and each curve's exponent) and scale.png."""
    out.mkdir(parents=True, exist_ok=True)
    at32 = [r for r in data if r["size"] == 32]
    exponents = {k: exponent([r["images"] for r in at32], [r[k] for r in at32]) for k in DATA_CURVES if len(at32) > 1}
    exponents |= {
        k: exponent([r["cells"] for r in store], [r[k] for r in store]) for k in STORE_CURVES if len(store) > 1
    }
    record = {"machine": machine, "data": data, "store": store, "exponents": exponents}
    (out / "scale.json").write_text(json.dumps(record, indent=1) + "\n")
    lines = [f"# How the cost grows\n\nMachine: {machine}. Written by `nox -s scale` (`bench/tools/scale.py`).\n"]
    lines += [
        "## Data (generated JPEG folders, 10 classes, 1,000 test images)\n",
        "Pretraining: rotation on the small CNN, batch 256, the pool streamed from the cache (`execution.pool = "
        '"stream"`), one epoch unless fewer images are listed.\n',
    ]
    lines += [
        "| images | px | pool (MB) | build (s) | build peak (MB) | load (s) | load peak (MB) | pretrained images | "
        "pretraining (s) | images/s | pretraining peak (MB) |",
        "|" + "---:|" * 11,
    ]
    for r in data:
        lines.append(
            f"| {r['images']:,} | {r['size']} | {r['build_pool_mb']:,.0f} | {r['build_seconds']:.1f} | "
            f"{r['build_peak_mb']:,.0f} | {r['load_seconds']:.2f} | {r['load_peak_mb']:,.0f} | "
            f"{r['epoch_trained_images']:,} | {r['epoch_seconds']:.1f} | {r['epoch_images_per_s']:,.0f} | "
            f"{r['epoch_peak_mb']:,.0f} |"
        )
    torch_mb = data[0]["build_torch_mb"] if data else 0
    equal = next((r["stream_equals_resident"] for r in data if "stream_equals_resident" in r), None)
    lines += [
        f"\nA process that has imported torch and done nothing else peaks at {torch_mb:,.0f} MB. Streamed "
        f"and resident pool, 20 steps on the smallest folder: {'equal' if equal else 'NOT equal'} weights.\n"
    ]
    lines += [
        "## Store (synthetic data; every cell finished)\n",
        "| cells | run (s) | dry run (s) | report (s) | rerun, all done (s) |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in store:
        lines.append(
            f"| {r['cells']:,} | {r['run_s']:.0f} | {r['dry_run_s']:.1f} | {r['report_s']:.1f} | {r['rerun_s']:.1f} |"
        )
    lines += [
        "\n## Growth exponents (slope of log time on log size, the two largest sizes)\n",
        "| curve | exponent |",
        "|---|---:|",
    ]
    names = DATA_CURVES | STORE_CURVES
    lines += [f"| {names[k]} | {v:.2f} |" for k, v in exponents.items()]
    (out / "scale.md").write_text("\n".join(lines) + "\n")
    _figure(out / "scale.png", at32, store)


def _figure(path: Path, data: list[dict], store: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, rows, x, curves, label in (
        (axes[0], data, "images", DATA_CURVES, "images (32 px)"),
        (axes[1], store, "cells", STORE_CURVES, "finished cells in the store"),
    ):
        for key, name in curves.items():
            if rows:
                ax.plot([r[x] for r in rows], [r[key] for r in rows], marker="o", label=name)
        ax.set(xscale="log", yscale="log", xlabel=label, ylabel="seconds")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
