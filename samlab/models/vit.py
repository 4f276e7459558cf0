"""A small Vision Transformer for 32x32 images.

Dosovitskiy et al., "An Image is Worth 16x16 Words: Transformers for Image Recognition at
Scale" (ICLR 2021, arXiv:2010.11929): split the image into patches, embed each linearly, prepend
a learned class token, add learned position embeddings, run pre-norm transformer encoder blocks
and classify the class token after a final LayerNorm. SAM helps ViTs more than ResNets (Chen
et al., "When Vision Transformers Outperform ResNets without Pre-training or Strong Data
Augmentations", ICLR 2022), which is why samlab ships one.

.. note:: The defaults (4x4 patches, width 192, 6 blocks, 3 heads, MLP width 768) are a
   CIFAR-sized model of about 2.69M parameters, not the paper's ViT-S/16 (22M, 224x224 input).
   Dropout is omitted; attention uses ``torch.nn.functional.scaled_dot_product_attention``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ViT", "vit_small"]


class _Attention(nn.Module):
    """Multi-head self-attention, (N, T, dim) -> (N, T, dim)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        # (N, T, 3*dim) -> (3, N, heads, T, head_dim)
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.heads, dim // self.heads)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(query, key, value)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class _Block(nn.Module):
    """Pre-norm encoder block: x + attn(LN(x)), then x + MLP(LN(x)) with GELU."""

    def __init__(self, dim: int, heads: int, mlp_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = _Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """Vision Transformer: (N, channels, image_size, image_size) -> (N, num_classes).

    Patches are embedded by a conv with kernel = stride = ``patch_size``, giving
    T = (image_size / patch_size)^2 tokens plus one class token, each of width ``dim``.
    """

    def __init__(
        self,
        *,
        num_classes: int = 10,
        image_size: int = 32,
        patch_size: int = 4,
        dim: int = 192,
        depth: int = 6,
        heads: int = 3,
        mlp_dim: int = 768,
        channels: int = 3,
    ) -> None:
        super().__init__()
        for name, value in [
            ("num_classes", num_classes),
            ("image_size", image_size),
            ("patch_size", patch_size),
            ("dim", dim),
            ("depth", depth),
            ("heads", heads),
            ("mlp_dim", mlp_dim),
            ("channels", channels),
        ]:
            if value < 1:
                raise ValueError(f"{name} must be positive, got {value}")
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not divisible by patch {patch_size}")
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.image_size = image_size
        num_patches = (image_size // patch_size) ** 2
        self.patch_embed = nn.Conv2d(channels, dim, kernel_size=patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, dim))
        self.blocks = nn.Sequential(*[_Block(dim, heads, mlp_dim) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # As in timm's VisionTransformer: truncated normal(0.02) for embeddings and linear
        # weights, zero biases, LayerNorm at identity.
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map images (N, C, image_size, image_size) to logits (N, num_classes)."""
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)  # (N, T, dim)
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        tokens = torch.cat([cls, tokens], dim=1) + self.pos_embed
        tokens = self.norm(self.blocks(tokens))
        return self.head(tokens[:, 0])


def vit_small(
    num_classes: int = 10,
    image_size: int = 32,
    patch_size: int = 4,
    dim: int = 192,
    depth: int = 6,
    heads: int = 3,
    mlp_dim: int = 768,
    *,
    in_channels: int = 3,
) -> ViT:
    """Small ViT for 32x32 images; about 2.69M parameters with the defaults.

    (N, in_channels, image_size, image_size) -> (N, num_classes).
    """
    return ViT(
        num_classes=num_classes,
        image_size=image_size,
        patch_size=patch_size,
        dim=dim,
        depth=depth,
        heads=heads,
        mlp_dim=mlp_dim,
        channels=in_channels,
    )
