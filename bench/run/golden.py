"""The golden check: tiny deterministic runs of every part that decides a number, compared bitwise with the
outputs recorded in ``bench/run/golden.json`` (on a machine with the recorded CPU instruction set and library
versions: elsewhere kernels round otherwise, and the check says so instead of comparing).

Each case runs on synthetic data, on the CPU, with one thread: a pretraining of every task (losses per epoch,
the health measures, a digest of the features after a save and load of the checkpoint), the reference data
path, every protocol (test accuracy and a digest of the predictions, with and without BatchNorm
recalibration), a tuning study, and the data pipeline (pool, subsets, nested budgets). A case records the part
versions it ran under (``bench.run.identity``), so the check decides what a change of source is:

- every output unchanged: a refactor; ``python -m bench identity --update`` records the new digests;
- an output changed where some part it uses has a new version: expected; ``--update`` records the new outputs;
- an output changed with every version as recorded: a change of behaviour that renews no key; ``--update``
  refuses and names the case and its parts: bump the version of the part that changed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from bench.config.suite import Suite
from bench.run import identity, lock

RECORD = Path(__file__).resolve().parent / "golden.json"
SYNTHETIC = {"name": "synthetic", "synthetic": {"classes": 4, "train": 64, "test": 32, "size": 32}}
BASE = {
    "name": "golden",
    "dataset": SYNTHETIC,
    "encoder": {"name": "small_cnn"},
    "seeds": [0],
    "budgets": [8, 16, "full"],
    "device": "cpu",
    "pretrain": {"epochs": 2, "batch_size": 16, "lr": 0.01, "health_every": 1, "health_images": 32},
    "linear": {"l2_grid": [1e-3, 1e-1], "max_iter": 20},
    "knn": {"k": 10},
    "finetune": {"epochs": 1, "min_steps": 4, "batch_size": 8},
}


def suite(**changes) -> Suite:
    raw = json.loads(json.dumps(BASE))
    for key, value in changes.items():
        raw[key] = value
    return Suite.model_validate(raw)


def hexes(values) -> list[str]:
    return [float(v).hex() for v in values]


def tensor_digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------- cases


def _data(s: Suite):
    from bench.data.datasets import load_dataset

    return load_dataset(s.dataset)


def case_data() -> dict:
    from bench.run.cells import draw_labels

    s = suite(dataset=SYNTHETIC | {"pool_size": 48, "train_size": 60, "test_size": 28})
    data = _data(s)
    labels = draw_labels(s, data)
    return {
        "identity": data.identity,
        "pool": tensor_digest(data.pool.resident()),
        "train": tensor_digest(data.train_y),
        "labels": {f"{k[0]}/{k[1]}": hashlib.sha256(v.tobytes()).hexdigest()[:16] for k, v in labels.items()},
    }


def case_pretrain(name: str, augment: str = "device") -> dict:
    from bench.protocols.features import extract_features
    from bench.registry import TASKS
    from bench.run.cells import build_task, health_hooks, trained_encoder
    from bench.store.checkpoints import save_encoder
    from bench.train.loop import pretrain

    encoder = {"name": "small_cnn" if "cnn" in TASKS[name].encoder_kinds else "vit_tiny"}  # MAE, I-JEPA: a ViT
    s = suite(tasks={name: {}}, encoder=encoder, pretrain=BASE["pretrain"] | {"augment": augment, "workers": 0})
    data = _data(s)
    task = build_task(s, name, 0, data.image_size)
    history = pretrain(
        task, data.pool.resident(), s.pretrain, 0, say=lambda _: None, hooks=health_hooks(s, task, data.pool, 0)
    )
    with tempfile.TemporaryDirectory() as folder:
        save_encoder(task.evaluated_encoder(), Path(folder), "golden")  # as the pretraining cell saves it
        encoder = trained_encoder(s, name, 0, "golden", Path(folder))
        feats = extract_features(encoder, data.test_x, torch.device("cpu"), prepare=TASKS[name].eval_input)
    return {
        "loss": hexes(h.loss for h in history),
        "health": {k: float(v).hex() for h in history for k, v in h.measures.items() if k != "health_s"},
        "features": tensor_digest(feats),
    }


def case_protocol(protocol: str, recalibrate: bool = False) -> dict:
    from bench.cell import Cell
    from bench.data.budgets import budget_indices
    from bench.protocols.features import extract_features
    from bench.registry import TASKS
    from bench.run.cells import fit, prepare_encoder, trained_encoder

    evaluation = {"bn_recalibration": recalibrate, "bn_recalibration_images": 32}
    s = suite(tasks={"scratch": {}}, protocols=[protocol], evaluation=evaluation)
    data, cpu = _data(s), torch.device("cpu")
    encoder = prepare_encoder(trained_encoder(s, "scratch", 0, "init", None), s, data, cpu, "scratch", 0)
    prepare = TASKS["scratch"].eval_input
    features = tuple(extract_features(encoder, x, cpu, prepare=prepare) for x in (data.train_x, data.test_x))
    out = {}
    for budget in (8, "full"):
        idx = budget_indices(data.train_y.numpy(), budget, 0)
        cell = Cell("eval", "scratch", 0, "golden", "init", budget, protocol)
        fitted, inputs = fit(
            cell, s, data, encoder, features, idx, s.protocol_settings(protocol, {}), data.train_x, cpu
        )
        predictions = fitted.predict(inputs)
        out[str(budget)] = {"test_acc": float(data.score(predictions)).hex(), "predictions": tensor_digest(predictions)}
    return out


def case_tuning() -> dict:
    import optuna

    from bench.protocols.tuning import Tuner
    from bench.run.cells import trained_encoder

    tuning = {"enabled": True, "trials": 3, "protocols": ["linear", "knn", "finetune"]}
    s = suite(tasks={"random": {}}, protocols=["linear", "knn", "finetune"], tuning=tuning)
    data = _data(s)
    encoder = lambda t, seed: trained_encoder(s, t, seed, "init", None)  # noqa: E731
    tuner = Tuner(s, data, torch.device("cpu"), encoder, lambda *_: "i", storage=optuna.storages.InMemoryStorage())
    out = {}
    for protocol in ("linear", "knn", "finetune"):
        tuner.params("random", protocol, 16, 0)
        study = optuna.load_study(study_name=tuner.study_name("random", protocol, 16, 0), storage=tuner.storage)
        out[protocol] = [
            {"params": {k: float(v).hex() for k, v in sorted(t.params.items())}, "value": float(t.value).hex()}
            for t in study.trials
        ]
    return out


def cases() -> dict[str, tuple[Callable[[], dict], set[str], Suite]]:
    """case -> (run it, the parts it exercises directly, a suite whose cells those are)."""
    from bench.registry import TASKS

    pretrain = suite(pretrain=BASE["pretrain"])
    out: dict[str, tuple[Callable[[], dict], set[str], Suite]] = {"data": (case_data, {"data", "cells"}, pretrain)}
    for name, task in TASKS.items():
        if task.pretrains:
            parts = identity.cell_parts(pretrain, "pretrain", task) | {"protocols"}
            out[f"pretrain/{name}"] = (lambda n=name: case_pretrain(n), parts, pretrain)
    lightly = suite(pretrain=BASE["pretrain"] | {"augment": "lightly"})
    rotation = identity.cell_parts(lightly, "pretrain", TASKS["rotation"]) | {"protocols"}
    out["pretrain-lightly/rotation"] = (lambda: case_pretrain("rotation", "lightly"), rotation, lightly)
    protocols = ("linear", "knn", "finetune")
    for protocol in protocols:
        parts = identity.cell_parts(pretrain, "eval", TASKS["scratch"], protocol=protocol)
        out[f"protocol/{protocol}"] = (lambda p=protocol: case_protocol(p), parts, pretrain)
    parts = identity.cell_parts(pretrain, "eval", TASKS["scratch"], protocol="linear")
    out["protocol/linear+bn_recalibration"] = (lambda: case_protocol("linear", True), parts, pretrain)
    tuned = set().union(*(identity.cell_parts(pretrain, "eval", TASKS["random"], True, p) for p in protocols))
    out["tuning"] = (case_tuning, tuned, pretrain)
    return out


def run(only: set[str] | None = None, progress: Callable[[str], None] = lambda _: None) -> dict[str, dict]:
    """case -> {"parts": {part: version}, "outputs": {...}}, every case (or those in ``only``) run now."""
    found = {}
    all_parts = identity.all_parts()
    for name, (make, parts, _) in cases().items():
        if only is not None and name not in only:
            continue
        progress(name)
        with one_thread():
            outputs = make()
        found[name] = {"parts": identity.uses(parts, all_parts), "outputs": outputs}
    return found


def machine() -> dict[str, str]:
    """What the bitwise outputs depend on besides the code: the CPU kernels torch dispatches to (their
    instruction set) and the exact versions of the numeric libraries."""
    from importlib.metadata import version

    libraries = {name: version(name) for name in (*identity.LIBRARIES, *identity.TUNING_LIBRARIES)}
    return {"cpu_capability": torch.backends.cpu.get_cpu_capability(), **libraries}


def read(path: Path = RECORD) -> dict[str, dict]:
    return json.loads(path.read_text())["cases"] if path.exists() else {}


def recorded_machine(path: Path = RECORD) -> dict[str, str]:
    return json.loads(path.read_text())["machine"] if path.exists() else {}


def comparable(path: Path = RECORD) -> str | None:
    """None when this machine can reproduce the recorded outputs bitwise, else why not (one line)."""
    here, there = machine(), recorded_machine(path)
    differ = [f"{k} {there.get(k)} recorded, {here.get(k)} here" for k in sorted(here) if here.get(k) != there.get(k)]
    return None if not differ else "the golden outputs were recorded elsewhere: " + "; ".join(differ)


def write(record: dict[str, dict], path: Path = RECORD) -> None:
    text = json.dumps({"machine": machine(), "cases": record}, indent=1, sort_keys=True)
    path.write_text(text + "\n")


def compare(found: dict[str, dict], recorded: dict[str, dict]) -> dict[str, str]:
    """case -> "same" | "new" | "gone" | "changed: bumped <parts>" | "changed: no version moved"."""
    out = {}
    for name in sorted(set(found) | set(recorded)):
        new, old = found.get(name), recorded.get(name)
        if old is None:
            out[name] = "new"
        elif new is None:
            out[name] = "gone"
        elif new["outputs"] == old["outputs"]:
            out[name] = "same" if new["parts"] == old["parts"] else "same (versions moved)"
        else:
            bumped = sorted(p for p, v in new["parts"].items() if old["parts"].get(p) != v)
            out[name] = f"changed: bumped {', '.join(bumped)}" if bumped else "changed: no version moved"
    return out


def update(progress: Callable[[str], None] = lambda _: None) -> tuple[bool, list[str]]:
    """Run every case; record the outputs and the lock unless some case changed with no version moved.
    Returns (recorded, one line per case that is not simply the same, or per refusal)."""
    elsewhere = comparable()
    if elsewhere:
        return False, [f"{elsewhere}; record them on such a machine, or compare there"]
    found = run(progress=progress)
    verdicts = compare(found, read())
    refused = [
        f"golden case {name}: its outputs changed, but no part it uses has a new version (it uses "
        f"{', '.join(found[name]['parts'])}); bump the version of the part you changed "
        "(`python -m bench identity` names the parts whose source moved)"
        for name, verdict in verdicts.items()
        if verdict == "changed: no version moved"
    ]
    if refused:
        return False, refused
    write(found)
    lock.write_lock()
    return True, [f"{name}: {verdict}" for name, verdict in verdicts.items() if verdict != "same"]
