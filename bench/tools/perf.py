"""Throughput benchmark: the on-device data path against lightly's reference pipeline, in one run.

For each task, pretraining images/s for (a) the model step alone on views already on the device, (b) the
on-device path (uint8 batch -> batched views -> step), optionally with the encoder compiled, (c) the reference
path: the task's per-image PIL transforms (lightly's for the joint-embedding tasks, torchvision's pad-crop and
flip for rotation) in DataLoader workers, the same model step after it. Also view generation alone (the CPU
target), feature extraction and a linear probe. Writes JSON to ``results/perf/``. Runs on CPU (small sizes) and
CUDA (full sizes).
"""

from __future__ import annotations

import json
import platform
import resource
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.augment.reference import PilImages
from bench.errors import ConfigError
from bench.files import write_atomic
from bench.models.encoders import build_encoder
from bench.protocols.features import extract_features
from bench.protocols.linear import fit_linear
from bench.registry import TASKS
from bench.train.optim import autocast

CIFAR10_TRAIN = 50_000


def _rate(fn, n_images: int, steps: int, device: torch.device, rounds: int = 1) -> float:
    """Images per second of ``fn`` (which handles ``n_images``), after one warm-up call: the median of
    ``rounds`` timings of ``steps`` calls each."""
    fn()  # warm-up (and cudnn autotuning)
    rates = []
    for _ in range(rounds):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        rates.append(n_images * steps / (time.perf_counter() - start))
    return float(np.median(rates))


def _stack(transform, images: torch.Tensor) -> list[torch.Tensor]:
    """The per-image reference transform over a uint8 batch, stacked: one batch per view."""
    per_image = [transform(Image.fromarray(x)) for x in images.permute(0, 2, 3, 1).numpy()]
    per_image = [v if isinstance(v, list | tuple) else [v] for v in per_image]
    return [torch.stack(vs) for vs in zip(*per_image)]


def measure(
    task_name: str, encoder: str, batch: int, steps: int, device: torch.device, workers: int, compile_: bool
) -> dict:
    size = 32
    images = torch.randint(0, 256, (batch * 4, 3, size, size), dtype=torch.uint8)
    on_device = images.to(device)
    torch.manual_seed(0)
    task = TASKS[task_name](build_encoder(encoder, 0), TASKS[task_name].Config(), size)
    task.to(device).to(memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(task.parameters(), lr=0.01, momentum=0.9)
    gen = torch.Generator(device=device).manual_seed(0)
    transform = task.reference_transform()

    def step(loss: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    fixed = [v.to(device) for v in _stack(transform, images[:batch])]

    def model_only() -> None:
        with autocast(device):
            step(task.loss_views(*fixed))

    def device_path() -> None:
        idx = torch.randint(0, len(on_device), (batch,), device=device, generator=gen)
        with autocast(device):
            step(task.loss(on_device[idx], gen))

    loader = torch.utils.data.DataLoader(
        PilImages(images.numpy(), transform),
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        drop_last=True,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
    )
    stream = iter(())

    def reference_path() -> None:
        nonlocal stream
        try:
            item = next(stream)
        except StopIteration:
            stream = iter(loader)
            item = next(stream)
        views = [v.to(device, non_blocking=True) for v in (item if isinstance(item, list) else [item])]
        with autocast(device):
            step(task.loss_views(*views))

    out = {
        "a_model_step_only": _rate(model_only, batch, steps, device),
        "b_on_device": _rate(device_path, batch, steps, device),
        "c_reference": _rate(reference_path, batch, steps, device),
    }
    out["ratio_b_over_c"] = out["b_on_device"] / out["c_reference"]
    out["ratio_b_over_a"] = out["b_on_device"] / out["a_model_step_only"]
    out["cifar10_epoch_s"] = CIFAR10_TRAIN / out["b_on_device"]
    if compile_:
        task.encoder.compile()
        start = time.perf_counter()
        device_path()  # the first call compiles
        out["compile_s"] = time.perf_counter() - start
        out["b_on_device_compiled"] = _rate(device_path, batch, steps, device)
        out["ratio_b_compiled_over_a"] = out["b_on_device_compiled"] / out["a_model_step_only"]
        out["cifar10_epoch_s_compiled"] = CIFAR10_TRAIN / out["b_on_device_compiled"]
    return out


def view_generation(n: int, device: torch.device) -> dict:
    """SimCLR's two views of n images: batched on the device vs lightly's per-image transform (one process)."""
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8)
    on_device = images.to(device)
    task = TASKS["simclr"](build_encoder("small_cnn", 0), TASKS["simclr"].Config(), 32)
    gen = torch.Generator(device=device).manual_seed(0)
    batched = _rate(lambda: task.views(on_device, gen), n, 3, device, rounds=5)
    transform = task.reference_transform()
    pil = [Image.fromarray(x) for x in images.permute(0, 2, 3, 1).numpy()]
    per_image = _rate(lambda: [transform(p) for p in pil], n, 1, torch.device("cpu"), rounds=3)
    return {"batched_images_per_s": batched, "lightly_images_per_s": per_image, "ratio": batched / per_image}


def probes(encoder: str, device: torch.device, n: int) -> dict:
    enc = build_encoder(encoder, 0)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8)
    start = time.perf_counter()
    feats = extract_features(enc, images, device)
    extract = n / (time.perf_counter() - start)
    labels = torch.randint(0, 10, (n,), device=device)
    start = time.perf_counter()
    fit_linear(feats, labels, 10, 1e-3, 100)
    return {"feature_extract_images_per_s": extract, "linear_probe_fit_s": time.perf_counter() - start}


def run_perf(
    tasks: list[str],
    encoder: str | None,
    batch: int | None,
    steps: int | None,
    workers: int,
    device: torch.device,
    out_dir: Path,
    compile_: bool = False,
    say: Callable[[str], None] = lambda message: None,
) -> dict:
    """Measure everything in one process and write the JSON record; ``say`` is told what is being measured."""
    cuda = device.type == "cuda"
    encoder = encoder or ("resnet18_cifar" if cuda else "small_cnn")
    batch, steps = batch or (512 if cuda else 64), steps or (50 if cuda else 5)
    missing = [t for t in tasks if t not in TASKS or not TASKS[t].has_reference_path()]
    if missing:
        have = sorted(n for n, t in TASKS.items() if t.pretrains and t.has_reference_path())
        raise ConfigError(f"no reference pipeline for {', '.join(missing)}; tasks with one: {', '.join(have)}")
    if cuda:
        torch.backends.cudnn.benchmark = True
        torch.cuda.reset_peak_memory_stats()
    result = {
        "device": torch.cuda.get_device_name(device) if cuda else f"cpu ({platform.processor() or 'unknown'})",
        "threads": torch.get_num_threads(),
        "encoder": encoder,
        "batch": batch,
        "steps": steps,
        "workers": workers,
        "compile": compile_,
        "torch": torch.__version__,
    }
    result["tasks"] = {}
    for t in tasks:
        say(f"{t}: model step, on-device path, reference path{', compiled path' if compile_ else ''}")
        result["tasks"][t] = measure(t, encoder, batch, steps, device, workers, compile_)
    say("view generation, feature extraction, linear probe")
    result["view_generation"] = view_generation(4 * batch, device)
    result["probes"] = probes(encoder, device, 8 * batch)
    result["peak_memory_mb"] = (
        torch.cuda.max_memory_allocated() / 2**20 if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    path = out_dir / f"perf-{device.type}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    write_atomic(path, json.dumps(result, indent=2).encode())
    result["path"] = str(path)
    return result


def summary(r: dict) -> list[str]:
    """The lines ``bench perf`` prints for a record of ``run_perf``."""
    out = []
    out.append(f"{r['device']}, {r['encoder']}, batch {r['batch']}, {r['workers']} DataLoader workers")
    for task, m in r["tasks"].items():
        out.append(
            f"  {task:9s} images/s: (a) model step only {m['a_model_step_only']:,.0f}  (b) on-device "
            f"{m['b_on_device']:,.0f}  (c) reference {m['c_reference']:,.0f}  b/c {m['ratio_b_over_c']:.2f}"
            f"  b/a {m['ratio_b_over_a']:.2f}  (CIFAR-10 epoch {m['cifar10_epoch_s']:.1f} s)"
        )
        if "b_on_device_compiled" in m:
            out.append(
                f"  {'':9s} compiled: (b) {m['b_on_device_compiled']:,.0f} images/s, b/a "
                f"{m['ratio_b_compiled_over_a']:.2f}, CIFAR-10 epoch {m['cifar10_epoch_s_compiled']:.1f} s "
                f"(compiling took {m['compile_s']:.0f} s)"
            )
    v = r["view_generation"]
    out.append(
        f"  two SimCLR views: batched {v['batched_images_per_s']:,.0f} images/s, lightly per-image "
        f"{v['lightly_images_per_s']:,.0f} images/s, ratio {v['ratio']:.1f}"
    )
    p = r["probes"]
    out.append(
        f"  feature extraction {p['feature_extract_images_per_s']:,.0f} images/s, linear probe fit "
        f"{p['linear_probe_fit_s']:.2f} s; peak memory {r['peak_memory_mb']:,.0f} MiB"
    )
    out.append(f"  written: {r['path']}")
    return out
