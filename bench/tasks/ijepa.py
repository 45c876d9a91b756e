"""I-JEPA: from one large context block of an image, predict the target encoder's embeddings of several other
blocks, in representation space (no pixels, no hand-made views).

Assran, Duval, Misra, Bojanowski, Vincent, Rabbat, LeCun & Ballas, "Self-Supervised Learning from Images with a
Joint-Embedding Predictive Architecture", CVPR 2023, arXiv:2301.08243. Built from lightly's modules: the shared
ViT's ``MaskedVisionTransformerTIMM`` encodes the context tokens, ``IJEPAPredictorTIMM`` predicts the target
tokens from them and their positions, an EMA copy of the encoder (lightly's ``update_momentum``) gives the
targets, layer-normalised over the feature dimension; the loss is smooth L1, as the paper's code. Masks as in the
paper: 4 target blocks of 15-20% of the patches with aspect ratio 0.75-1.5, one context block of 85-100% with
aspect ratio 1, less the target patches; block sizes are drawn once per batch (one for all target blocks) and
positions per image, and every
image keeps as many context patches as the image with fewest (the paper's collator). The target encoder is
evaluated, as in the paper.

Deviations: a small predictor for small images (96-d, 4 blocks, 3 heads; the paper's is 384-d with 6-12 blocks);
the EMA follows bench's cosine schedule from a start that scales with the run's length (``bench.tasks.joint.
Momentum``; the paper's goes linearly 0.996 -> 1 over 300 ImageNet epochs); the ViT's class token is kept in the
context sequence and left out of predictor and targets. The masks are drawn from the run's generator.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from bench.augment.ops import to_input
from bench.tasks.base import Task, TaskConfig
from bench.tasks.joint import Momentum, momentum_field, momentum_steps_field


class IJEPAConfig(TaskConfig):
    targets: int = Field(4, ge=1)  # target blocks per image
    target_scale: tuple[float, float] = (0.15, 0.2)  # fraction of the patches in each target block
    target_aspect: tuple[float, float] = (0.75, 1.5)
    context_scale: tuple[float, float] = (0.85, 1.0)
    predictor_dim: int = Field(96, gt=0)
    predictor_depth: int = Field(4, ge=1)
    predictor_heads: int = Field(3, ge=1)
    momentum: float = momentum_field(0.996)  # the paper's start, for momentum_steps
    momentum_steps: int | None = momentum_steps_field(187_500)  # 300 ImageNet epochs at batch 2048


def _block(side: int, scale: tuple[float, float], aspect: tuple[float, float], gen: torch.Generator):
    """(height, width) in patches of a block of ``side`` x ``side`` patches, drawn as the paper's collator."""
    s = scale[0] + float(torch.rand((), generator=gen)) * (scale[1] - scale[0])
    log_lo, log_hi = math.log(aspect[0]), math.log(aspect[1])
    r = math.exp(log_lo + float(torch.rand((), generator=gen)) * (log_hi - log_lo))
    area = max(1.0, s * side * side)
    h, w = round(math.sqrt(area * r)), round(math.sqrt(area / r))
    return min(max(h, 1), side), min(max(w, 1), side)


def _placed(batch: int, side: int, hw: tuple[int, int], gen: torch.Generator) -> torch.Tensor:
    """(batch, side * side) booleans: one block of ``hw`` patches at a random place in each image."""
    h, w = hw
    top = torch.randint(0, side - h + 1, (batch,), generator=gen)
    left = torch.randint(0, side - w + 1, (batch,), generator=gen)
    rows, cols = torch.arange(side).view(1, side, 1), torch.arange(side).view(1, 1, side)
    inside = (rows >= top.view(-1, 1, 1)) & (rows < (top + h).view(-1, 1, 1))
    inside = inside & (cols >= left.view(-1, 1, 1)) & (cols < (left + w).view(-1, 1, 1))
    return inside.view(batch, -1)


def block_masks(batch: int, side: int, cfg: IJEPAConfig, gen: torch.Generator):
    """(context indices (batch, K), [target indices (batch, T)] * targets), patch indices in row-major order."""
    size = _block(side, cfg.target_scale, cfg.target_aspect, gen)  # one size for every target block of the batch
    targets = [_placed(batch, side, size, gen) for _ in range(cfg.targets)]
    context = _placed(batch, side, _block(side, cfg.context_scale, (1.0, 1.0), gen), gen)
    for t in targets:
        context &= ~t
    keep = max(1, int(context.sum(1).min()))
    order = torch.arange(side * side).expand(batch, -1)
    # each image's first ``keep`` context patches (in order); an empty context keeps patch 0
    ranked = torch.where(context, order, order + side * side).sort(1).values[:, :keep] % (side * side)
    return ranked, [torch.nonzero(t)[:, 1].view(batch, -1) for t in targets]


class IJEPA(Task):
    name = "ijepa"
    summary = "predict the target encoder's embeddings of 4 blocks from one context block (ViT)"
    reference = "Assran et al. 2023, arXiv:2301.08243"
    Config = IJEPAConfig
    encoder_kinds = ("vit",)
    min_image_size = 8
    monotone_loss = False  # the targets move with the EMA encoder

    def __init__(self, encoder: nn.Module, cfg: IJEPAConfig, image_size: int) -> None:
        from lightly.models.modules import IJEPAPredictorTIMM

        super().__init__(encoder, cfg, image_size)
        self.side = image_size // encoder.patch_size
        self.predictor = IJEPAPredictorTIMM(
            num_patches=self.side**2,
            depth=cfg.predictor_depth,
            mlp_dim=encoder.out_dim,
            predictor_embed_dim=cfg.predictor_dim,
            num_heads=cfg.predictor_heads,
        )
        self.target = Momentum(encoder, momentum=cfg.momentum, reference_steps=cfg.momentum_steps)

    def loss(self, images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        patch = self.encoder.patch_size
        x = to_input(images)[..., : self.side * patch, : self.side * patch]
        context, targets = block_masks(len(x), self.side, self.cfg, gen)
        context, targets = context.to(x.device), [t.to(x.device) for t in targets]
        with torch.no_grad():
            full = self.target.copies[0].masked.encode(images=x)[:, 1:]  # patch tokens, no class token
            full = F.layer_norm(full, (full.shape[-1],))
            dim = full.shape[-1]
            wanted = torch.cat([torch.gather(full, 1, t.unsqueeze(-1).expand(-1, -1, dim)) for t in targets])
        cls = torch.zeros(len(x), 1, dtype=context.dtype, device=x.device)
        encoded = self.encoder.masked.encode(images=x, idx_keep=torch.cat([cls, context + 1], 1))[:, 1:]
        predicted = self.predictor(encoded, masks_x=[context], masks=targets)
        return F.smooth_l1_loss(predicted, wanted)

    def after_step(self, step: int, total_steps: int) -> None:
        self.target.update(step, total_steps)

    def evaluated_encoder(self) -> nn.Module:
        return self.target.copies[0]

    def records(self) -> dict[str, float]:
        return self.target.record()
