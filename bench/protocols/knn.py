"""evaluate: protocols.knn."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from lightly.utils.benchmarking import knn_predict

from bench.config.sections import KNNConfig
from bench.protocols.features import Fitted


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
