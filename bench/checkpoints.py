"""Encoder checkpoints by cell key: a local cache under ``results/cache/checkpoints``, backed by the MLflow
artifact of the pretraining run, so a deleted cache or another machine still finds every finished encoder."""

from __future__ import annotations

import os
from pathlib import Path

import mlflow
import torch
from torch import nn

from bench.encoders import build_encoder


def checkpoint_path(cache: Path, key: str) -> Path:
    return Path(cache) / "checkpoints" / f"{key}.pt"


def save_encoder(encoder: nn.Module, cache: Path, key: str) -> Path:
    """Write the encoder's state dict atomically (a killed save never leaves a truncated checkpoint)."""
    path = checkpoint_path(cache, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({k: v.detach().cpu() for k, v in encoder.state_dict().items()}, tmp)
    os.replace(tmp, path)
    return path


def load_encoder(cache: Path, key: str, encoder_name: str, run_id: str | None = None) -> nn.Module:
    """The pretrained encoder of cell ``key``, from the cache or else from run ``run_id``'s artifacts."""
    path = checkpoint_path(cache, key)
    if not path.exists():
        if run_id is None:
            raise FileNotFoundError(f"no checkpoint {path} and no MLflow run to fetch it from")
        path.parent.mkdir(parents=True, exist_ok=True)
        mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path.name, dst_path=str(path.parent))
    encoder = build_encoder(encoder_name, seed=0)
    encoder.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return encoder
