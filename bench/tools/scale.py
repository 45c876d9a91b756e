"""How bench's cost grows with the data and with the store: ``nox -s scale`` (``python -m bench.tools.scale``).

Data: generated image folders (JPEG, 10 classes, ``N`` train images and 1,000 test images) at each size; for
each, in a fresh process: the cache build (wall time, peak memory), a load of the built cache, and one
pretraining epoch (rotation, the small CNN) on the pool streamed from the cache (wall time, images per second,
peak memory). Peak memory is the process's peak resident set (``ru_maxrss``), torch's own share (a process that
has imported it and done nothing) reported beside it. On the smallest folder the streamed and the resident pool
are trained for a few steps each and their weights compared.

Store: suites of about 100, 1,000 and 3,000 cells (synthetic data, every CNN task) run into one store, growing;
after each, the time of ``bench run --dry-run``, ``bench report`` and a ``bench run`` that finds every cell done.

Each curve's growth exponent is the slope of log(time) against log(size) between the two largest sizes, where
fixed costs weigh least. Writes ``results/scale/scale.json``, ``scale.md`` and ``scale.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from bench.tools.scale_report import write

DATA_SIZES = [(10_000, 32), (100_000, 32), (1_000_000, 32), (100_000, 96)]
# images of the measured pretraining (else one epoch): at 96 px an epoch of 100k images takes about 20 minutes
# on 2 cores, and its memory and rate are those of any 20,000 of them
EPOCH_IMAGES = {(100_000, 96): 20_000}
STORE_SEEDS = [1, 4, 12]  # seeds of the store suites: about 100 (one seed, 6 tasks), 1,000 and 3,000 cells
CLASSES = 10
TEST_IMAGES = 1000


def _write_images(job: tuple[str, int, int, int]) -> None:
    folder, start, stop, size = job
    from PIL import Image

    rng = np.random.default_rng(start)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(start, stop):
        c = i % CLASSES
        hue = np.array([(c * 37) % 255, (c * 91) % 255, (c * 151) % 255]) / 255
        base = (0.3 + 0.5 * yy)[..., None] * hue + 0.2 * xx[..., None]
        image = np.clip(base + rng.normal(0, 0.08, (size, size, 3)), 0, 1)
        Image.fromarray((image * 255).astype(np.uint8)).save(Path(folder) / f"class{c}" / f"{i}.jpg", quality=90)


def make_folder(root: Path, n: int, size: int) -> Path:
    """``root/train/class<k>/<i>.jpg`` (``n`` images) and ``root/test/...`` (1,000), made once."""
    done = root / ".complete"
    if done.exists():
        return root
    jobs = []
    for split, count in (("train", n), ("test", TEST_IMAGES)):
        for c in range(CLASSES):
            (root / split / f"class{c}").mkdir(parents=True, exist_ok=True)
        step = 5000
        jobs += [(str(root / split), s, min(s + step, count), size) for s in range(0, count, step)]
    with ProcessPoolExecutor(os.cpu_count() or 1) as pool:
        list(pool.map(_write_images, jobs))
    done.touch()
    return root


def _child(args: list[str]) -> dict:
    """Run ``python -m bench.tools.scale --child ...`` and return the JSON it printed last."""
    done = subprocess.run([sys.executable, "-m", "bench.tools.scale", "--child", *args], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(args)} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(kind: str, root: str, images: int = 0) -> dict:
    """One measurement in this (fresh) process."""
    import torch

    from bench.config.sections import DatasetConfig, PretrainConfig
    from bench.data.datasets import load_dataset

    torch.set_num_threads(os.cpu_count() or 1)
    base = _peak_mb()
    start = time.perf_counter()
    if kind == "baseline":
        return {"peak_mb": base}
    data = load_dataset(DatasetConfig(name="imagefolder", root=root))
    out = {"seconds": time.perf_counter() - start, "pool_mb": data.pool.nbytes / 2**20, "images": len(data.pool)}
    if kind in ("epoch", "equal"):
        from bench.models.encoders import build_encoder
        from bench.tasks import TASKS
        from bench.train.loop import pretrain

        def trained(mode: str, cfg: PretrainConfig):
            torch.manual_seed(0)
            task = TASKS["rotation"](build_encoder("small_cnn", 0), TASKS["rotation"].Config(), data.image_size)
            history = pretrain(task, data.pool.on(torch.device("cpu"), mode), cfg, seed=0, say=lambda _: None)
            return history, task.encoder.state_dict()

        if kind == "epoch":
            length = {"images": images} if images else {"epochs": 1}
            (epoch,), _ = trained("stream", PretrainConfig(**length, batch_size=256, warmup_epochs=0))
            out |= {
                "seconds": epoch.seconds,
                "images_per_s": epoch.images_per_s,
                "trained_images": images or len(data.pool),
            }
        else:
            cfg = PretrainConfig(steps=20, batch_size=128, warmup_epochs=0)
            (a, wa), (b, wb) = trained("stream", cfg), trained("resident", cfg)
            out["equal"] = [h.loss for h in a] == [h.loss for h in b] and all(torch.equal(wa[k], wb[k]) for k in wa)
    return out | {"peak_mb": _peak_mb(), "torch_mb": base}


def measure_data(work: Path, sizes=DATA_SIZES) -> list[dict]:
    rows = []
    for n, size in sizes:
        folder = make_folder(work / f"folder-{n}-{size}px", n, size)
        for cache in (folder / ".bench-cache").glob("*"):
            subprocess.run(["rm", "-rf", str(cache)], check=True)
        row = {"images": n, "size": size}
        for kind in ("build", "load", "epoch"):
            got = _child([kind, str(folder), str(EPOCH_IMAGES.get((n, size), 0))])
            row |= {f"{kind}_{k}": v for k, v in got.items() if k not in ("images",)}
            print(
                f"  {n:,} images at {size} px: {kind} {got['seconds']:.1f} s, peak {got['peak_mb']:,.0f} MB", flush=True
            )
        if (n, size) == sizes[0]:
            row["stream_equals_resident"] = _child(["equal", str(folder), "0"])["equal"]
        rows.append(row)
    return rows


def _bench(args: list[str], env: dict) -> float:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "bench", *args], capture_output=True, text=True, env=env)
    if done.returncode:
        raise RuntimeError(f"bench {' '.join(args)} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return time.perf_counter() - start


def store_sets(results: Path, seeds: int) -> list[str]:
    """A suite on synthetic data whose cells cost little to run: every CNN task (6 for the smallest), pretraining
    one step, every protocol (fine-tuning one epoch) at 6 budgets."""
    from bench.registry import TASKS

    tasks = [n for n, cls in TASKS.items() if "cnn" in cls.encoder_kinds and not TASKS.is_plugin(n)]
    tasks = tasks if seeds > 1 else ["random", "scratch", "rotation", "simclr", "jigsaw", "byol"]
    return [
        "name='scale'",
        f"results_dir={str(results)!r}",
        f"seeds={list(range(seeds))}",
        "budgets=[8, 16, 24, 32, 64, 'full']",
        "protocols=['knn', 'linear', 'finetune']",
        "tasks={" + ", ".join(f"{t}={{}}" for t in tasks) + "}",
        "pretrain.steps=1",
        "dataset.synthetic.train=128",
        "dataset.synthetic.test=64",
        "linear.l2_grid=[0.01]",
        "linear.max_iter=5",
        "finetune.epochs=1",
        "finetune.min_steps=0",
        "evaluation.bn_recalibration=false",
    ]


def measure_store(work: Path, seeds_list=STORE_SEEDS) -> list[dict]:
    rows, env = [], dict(os.environ, COLUMNS="200")
    results = work / "store"
    for seeds in seeds_list:
        sets = [f"--set={s}" for s in store_sets(results, seeds)]
        started = time.perf_counter()
        _bench(["run", "smoke", *sets], env)
        run_s = time.perf_counter() - started
        cells = _count_cells(sets, env)
        row = {"cells": cells, "run_s": run_s}
        row["dry_run_s"] = _bench(["run", "smoke", "--dry-run", *sets], env)
        row["report_s"] = _bench(["report", "smoke", *sets], env)
        row["rerun_s"] = _bench(["run", "smoke", *sets], env)
        print(f"  store of {cells:,} cells: " + ", ".join(f"{k} {v:.1f}" for k, v in row.items() if k != "cells"))
        rows.append(row)
    return rows


def _count_cells(sets: list[str], env: dict) -> int:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "run", "smoke", "--dry-run", *sets], capture_output=True, text=True, env=env
    )
    found = re.search(r"^scale: ([\d,]+) cells", done.stdout, re.MULTILINE)
    if not found:
        raise RuntimeError(f"bench run --dry-run printed no plan:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return int(found.group(1).replace(",", ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tools.scale", description=__doc__.split("\n")[0])
    parser.add_argument("--work", default=str(Path.home() / ".cache" / "bench" / "scale"), help="folders and store")
    parser.add_argument("--out", default="results/scale")
    parser.add_argument("--quick", action="store_true", help="small sizes only (a check of the script itself)")
    parser.add_argument("--store-only", action="store_true", help="measure the store again; data rows from --out")
    parser.add_argument("--child", nargs=3, metavar=("KIND", "ROOT", "IMAGES"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        kind, root, images = args.child
        print(json.dumps(child(kind, root, int(images))))
        return 0
    work = Path(args.work)
    sizes = [(2000, 32), (4000, 32), (2000, 48)] if args.quick else DATA_SIZES
    seeds = [1, 2] if args.quick else STORE_SEEDS
    memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30
    machine = f"{platform.machine()}, {os.cpu_count()} cores, {memory:.0f} GiB"
    if args.store_only:
        data = json.loads((Path(args.out) / "scale.json").read_text())["data"]
    else:
        print("data:", flush=True)
        data = measure_data(work, sizes)
    print("store:", flush=True)
    store = measure_store(work, seeds)
    write(Path(args.out), data, store, machine)
    print(f"wrote {args.out}/scale.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
