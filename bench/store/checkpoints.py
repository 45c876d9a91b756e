"""Encoder checkpoints by cell key: a local cache under ``results/cache/checkpoints``, backed by the MLflow
artifact of the pretraining run, so a deleted cache or another machine still finds every finished encoder.

Every checkpoint is written whole (beside, then renamed) with its size and SHA-256 recorded (a ``.json`` beside
it, and tags of the pretraining run). Loading verifies them: a damaged cache copy is moved aside and the artifact
copy is fetched and verified in turn; when neither is usable the caller pretrains the cell again.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import mlflow
import torch
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from torch import nn

from bench.files import torch_bytes, write_atomic
from bench.models.encoders import build_encoder


class CheckpointUnusable(RuntimeError):
    """Neither the cached nor the tracked copy of a checkpoint is whole; the cell must pretrain again."""


def checkpoint_path(cache: Path, key: str) -> Path:
    return Path(cache) / "checkpoints" / f"{key}.pt"


def _sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


def fingerprint(data: bytes) -> dict[str, str]:
    return {"checkpoint_bytes": str(len(data)), "checkpoint_sha256": hashlib.sha256(data).hexdigest()}


def save_encoder(encoder: nn.Module, cache: Path, key: str) -> tuple[Path, dict[str, str]]:
    """Write the encoder's state dict atomically; returns its path and fingerprint (size, SHA-256)."""
    data = torch_bytes({k: v.detach().cpu() for k, v in encoder.state_dict().items()})
    path = checkpoint_path(cache, key)
    stamp = fingerprint(data)
    write_atomic(path, data)
    write_atomic(_sidecar(path), json.dumps(stamp).encode())
    return path, stamp


def _expected(path: Path, run) -> dict[str, str] | None:
    tags = run.data.tags if run is not None else {}
    if "checkpoint_sha256" in tags:
        return {k: tags[k] for k in ("checkpoint_bytes", "checkpoint_sha256")}
    try:
        return json.loads(_sidecar(path).read_text())
    except (OSError, ValueError):
        return None  # a checkpoint written before fingerprints: loading it is the check


def _verified(path: Path, expected: dict[str, str] | None, encoder_name: str) -> nn.Module:
    """The encoder in ``path``, or ValueError saying what is wrong with the file."""
    data = path.read_bytes()
    if expected is not None:
        if str(len(data)) != expected["checkpoint_bytes"]:
            raise ValueError(f"{len(data)} bytes, {expected['checkpoint_bytes']} were saved")
        if hashlib.sha256(data).hexdigest() != expected["checkpoint_sha256"]:
            raise ValueError("its SHA-256 differs from the one recorded at save")
    encoder = build_encoder(encoder_name, seed=0)
    try:
        encoder.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as e:  # noqa: BLE001 - torch reports damage in many types
        raise ValueError(f"unreadable ({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None
    return encoder


def load_encoder(cache: Path, key: str, encoder_name: str, run: Run | None = None) -> nn.Module:
    """The pretrained encoder of cell ``key``: the verified cache copy, else the verified artifact of ``run`` (the
    pretraining's MLflow run; it then replaces the cache copy); else CheckpointUnusable naming what was tried."""
    path = checkpoint_path(cache, key)
    expected = _expected(path, run)
    problems = []
    if path.exists():
        try:
            return _verified(path, expected, encoder_name)
        except ValueError as e:
            aside = path.with_name(path.name + ".damaged")
            os.replace(path, aside)
            problems.append(f"{path} is damaged ({e}; moved to {aside.name})")
    if run is None:
        problems.append("no finished pretraining run to fetch it from")
        raise CheckpointUnusable("; ".join(problems))
    run_id = run.info.run_id
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        try:
            got = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path.name, dst_path=tmp))
            encoder = _verified(got, expected, encoder_name)
        except (ValueError, FileNotFoundError, MlflowException) as e:
            # only a missing or damaged copy: a store that is down or a full disk is not a reason to retrain
            if isinstance(e, MlflowException) and e.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            problems.append(f"the artifact {path.name} of run {run_id} is unusable ({str(e).splitlines()[0][:160]})")
            raise CheckpointUnusable("; ".join(problems)) from None
        write_atomic(path, got.read_bytes())
    if expected is not None:
        write_atomic(_sidecar(path), json.dumps(expected).encode())
    return encoder
