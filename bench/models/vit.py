"""Vision transformers for small images: ViT-Tiny (192-d, 12 blocks, 3 heads; Touvron et al. 2021,
arXiv:2012.12877) from timm, wrapped in lightly's masked vision transformer so that the masked image modelling
tasks (MAE, I-JEPA) encode only the tokens they keep, while every other task and every protocol sees the plain
encoder: (B, 3, H, W) -> (B, 192), the mean of the patch tokens after the final norm (I-JEPA's evaluation; the
class token is kept in the sequence, as MAE's).

- ``vit_tiny``: 4-px patches, built for 32 px (64 tokens), for images of 32-64 px.
- ``vit_tiny_p16``: 16-px patches, built for 96 px (36 tokens), for 96 px and up.

Both take other sizes too (timm's ``dynamic_img_size`` interpolates the position embedding). The patch embedding,
class token, linear and norm layers are initialised as lightly's MAE (xavier-uniform, normal 0.02), the position
embedding as fixed 2-D sine-cosine. timm is the optional extra ``vit`` (``pip install 'pretext-bench[vit]'``).
"""

from __future__ import annotations

import torch
from torch import nn

from bench.errors import ConfigError
from bench.models.encoders import Encoder
from bench.registry import ENCODERS


class ViT(nn.Module):
    """A timm VisionTransformer inside lightly's ``MaskedVisionTransformerTIMM`` (``self.masked``)."""

    def __init__(self, vit: nn.Module) -> None:
        from lightly.models.modules import MaskedVisionTransformerTIMM

        super().__init__()
        self.out_dim = int(vit.embed_dim)
        self.patch_size = int(vit.patch_embed.patch_size[0])
        self.masked = MaskedVisionTransformerTIMM(vit=vit)

    @classmethod
    def tiny(cls, patch_size: int, image_size: int) -> ViT:
        """ViT-Tiny (192-d, 12 blocks, 3 heads) built for ``image_size`` px with ``patch_size`` px patches."""
        try:
            from timm.models.vision_transformer import VisionTransformer
        except ImportError:
            raise ConfigError(
                "the ViT encoders need timm: pip install 'pretext-bench[vit]' (or pip install timm)"
            ) from None
        vit = VisionTransformer(
            img_size=image_size,
            patch_size=patch_size,
            embed_dim=192,
            depth=12,
            num_heads=3,
            num_classes=0,
            global_pool="avg",
            dynamic_img_size=True,
        )
        return cls(vit)

    @classmethod
    def wrapping(cls, vit: nn.Module) -> ViT:
        """A timm VisionTransformer made by name (``bench.models.hub``)."""
        return cls(vit)

    @property
    def sequence_length(self) -> int:
        """Tokens of an image of the size it was built for, the class token included."""
        return self.masked.sequence_length

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.masked(x)  # global_pool "avg": the mean of the patch tokens


ENCODERS.register(
    "vit_tiny",
    Encoder(lambda: ViT.tiny(4, 32), "ViT-Tiny (timm), 4-px patches, 192-d; 32-64 px", "vit", ("timm",)),
)
ENCODERS.register(
    "vit_tiny_p16",
    Encoder(lambda: ViT.tiny(16, 96), "ViT-Tiny (timm), 16-px patches, 192-d; 96 px and up", "vit", ("timm",)),
)
