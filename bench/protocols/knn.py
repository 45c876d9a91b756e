"""Weighted kNN on the frozen encoder's L2-normalised features (Wu et al. 2018, InstDisc, arXiv:1805.01978), by
lightly's ``knn_predict``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from lightly.utils.benchmarking import knn_predict
from pydantic import Field

from bench.config.settings import LogRange, Strict
from bench.protocols.base import Labelled, Protocol, Watch
from bench.protocols.features import Fitted, cross_validated


class KNNConfig(Strict):
    """Weighted kNN of Wu et al. 2018 (InstDisc, arXiv:1805.01978): cosine similarity, weights exp(s / T)."""

    k: int = Field(200, gt=0)  # capped by the number of labelled images
    temperature: float = Field(0.1, gt=0)
    chunk: int = Field(1024, gt=0)  # test images per similarity block: memory stays O(chunk x labelled)


class KNNSpace(Strict):
    k: LogRange = (5, 200)  # integers
    temperature: LogRange = (0.02, 1.0)


def knn_classifier(feats: torch.Tensor, labels: torch.Tensor, classes: int, cfg: KNNConfig) -> Fitted:
    """Weighted kNN on L2-normalised features (Wu et al. 2018, InstDisc): each of the k most similar labelled
    images votes for its class with weight exp(cosine / T), by lightly's ``knn_predict``, in chunks of test
    images. Nothing is chosen, so there is no validation score."""
    bank = F.normalize(feats, dim=1).T.contiguous()  # (D, N), as knn_predict takes it
    k = min(cfg.k, bank.shape[1])

    @torch.no_grad()
    def predict(test_feats: torch.Tensor) -> torch.Tensor:
        out = []
        for i in range(0, len(test_feats), cfg.chunk):
            query = F.normalize(test_feats[i : i + cfg.chunk], dim=1)
            out.append(knn_predict(query, bank, labels, classes, knn_k=k, knn_t=cfg.temperature)[:, 0])
        return torch.cat(out)

    return Fitted(predict, None, {"k": k, "temperature": cfg.temperature})


class KNN(Protocol):
    name = "knn"
    summary = "frozen L2-normalised features, similarity-weighted kNN (InstDisc: k=200, T=0.1)"
    Config = KNNConfig
    Space = KNNSpace
    frozen = True

    @classmethod
    def fit(cls, settings: KNNConfig, data: Labelled) -> Fitted:
        return knn_classifier(data.features, data.labels, data.classes, settings)

    @classmethod
    def score(cls, settings: KNNConfig, data: Labelled, folds: list, watch: Watch) -> float:
        fit = lambda a, b: knn_classifier(a, b, data.classes, settings).predict  # noqa: E731
        return cross_validated(fit, data.features, data.labels, folds)

    @classmethod
    def suggest(cls, trial, space: KNNSpace) -> dict:
        return {
            "k": trial.suggest_int("k", int(space.k[0]), int(space.k[1]), log=True),
            "temperature": trial.suggest_float("temperature", *space.temperature, log=True),
        }

    @classmethod
    def configured(cls, settings: KNNConfig) -> dict:
        return {"k": settings.k, "temperature": settings.temperature}
