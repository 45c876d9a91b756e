"""MAE: mask most patches of an image, encode the visible ones, and reconstruct the pixels of the masked ones.

He, Chen, Xie, Li, Dollár & Girshick, "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022,
arXiv:2111.06377. Built from lightly's modules as in lightly's MAE example: the shared ViT's
``MaskedVisionTransformerTIMM`` encodes the kept tokens (the class token always kept), a linear layer embeds
them for ``MaskedVisionTransformerDecoderTIMM``, which decodes them with mask tokens at the masked places, a
linear layer predicts each masked patch's pixels, and the loss is the mean squared error on the masked patches'
pixels, each patch normalised by its own mean and variance (the paper's ``norm_pix_loss``, its best setting).
75% of the patches are masked, as in the paper.

Deviations: a small decoder for small images (128-d, 2 blocks, 4 heads; the paper's is 512-d, 8 blocks, 16
heads for 224 px), and pad-and-crop with flips instead of RandomResizedCrop, as bench's other tasks at 32 px.
The masks are drawn from the run's generator (lightly's ``random_token_mask`` draws from torch's global one).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from lightly.models import utils
from pydantic import Field
from torch import nn

from bench.augment.ops import crop_flip, to_input
from bench.tasks.base import Task, TaskConfig


class MAEConfig(TaskConfig):
    mask_ratio: float = Field(0.75, gt=0, lt=1)
    decoder_dim: int = Field(128, gt=0)
    decoder_depth: int = Field(2, ge=1)
    decoder_heads: int = Field(4, ge=1)
    norm_pix_loss: bool = True  # each target patch normalised by its own mean and variance
    crop_flip: bool = True


def token_mask(batch: int, length: int, ratio: float, gen: torch.Generator, device) -> tuple[torch.Tensor, ...]:
    """(kept, masked) token indices per image, the class token (index 0) always kept: lightly's
    ``random_token_mask`` with the noise drawn from ``gen``."""
    keep = max(1, int((length - 1) * (1 - ratio)) + 1)
    noise = torch.rand(batch, length, generator=gen, device=device)
    noise[:, 0] = -1
    order = torch.argsort(noise, dim=1)
    return order[:, :keep], order[:, keep:]


class MAE(Task):
    name = "mae"
    summary = "mask 75% of the patches, reconstruct their normalised pixels from the visible ones (ViT)"
    reference = "He et al. 2022, arXiv:2111.06377"
    Config = MAEConfig
    encoder_kinds = ("vit",)
    min_image_size = 8

    def __init__(self, encoder: nn.Module, cfg: MAEConfig, image_size: int) -> None:
        from lightly.models.modules import MaskedVisionTransformerDecoderTIMM

        super().__init__(encoder, cfg, image_size)
        patch = encoder.patch_size
        self.patch = patch
        self.embed = nn.Linear(encoder.out_dim, cfg.decoder_dim)
        self.decoder = MaskedVisionTransformerDecoderTIMM(
            num_patches=(image_size // patch) ** 2,
            embed_dim=cfg.decoder_dim,
            depth=cfg.decoder_depth,
            num_heads=cfg.decoder_heads,
        )
        self.predict = nn.Linear(cfg.decoder_dim, patch * patch * 3)

    def loss(self, images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        x = to_input(images)
        x = crop_flip(x, gen, flip=self.flip) if self.cfg.crop_flip else x
        side = x.shape[-1] // self.patch * self.patch
        x = x[..., :side, :side]  # whole patches only
        length = (side // self.patch) ** 2 + 1
        idx_keep, idx_mask = token_mask(len(x), length, self.cfg.mask_ratio, gen, x.device)
        encoded = self.embed(self.encoder.masked.encode(images=x, idx_keep=idx_keep))
        tokens = utils.repeat_token(self.decoder.mask_token, (len(x), length))
        tokens = utils.set_at_index(tokens, idx_keep, encoded.type_as(tokens))
        decoded = self.decoder.decode(self.decoder.add_pos_embed(tokens))
        predicted = self.predict(utils.get_at_index(decoded, idx_mask))
        target = utils.get_at_index(utils.patchify(x, self.patch), idx_mask - 1)  # patches have no class token
        if self.cfg.norm_pix_loss:
            mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
            target = (target - mean) / (var + 1e-6).sqrt()
        return F.mse_loss(predicted, target)
