"""Feature protocols as small modules on top of a backbone (imported lazily: it pulls in torch)."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn


class ViTFeatures(nn.Module):
    """[CLS] of the last ``n_last`` blocks (each through the final norm), optionally + mean of patch tokens, optionally
    + the last block's patch tokens average-pooled to a ``grid`` x ``grid`` map (flattened, token-major).

    ``n_last=1, avgpool=False`` is MAE's linear-probe feature; ``n_last=4`` is DINO's ViT-S protocol and
    ``n_last=1, avgpool=True`` its ViT-B protocol; ``cls=False, avgpool=True`` is the global average pool.
    ``grid=2`` keeps where in the image a patch feature was (four quadrant means), which a global mean loses.
    """

    def __init__(self, vit: Any, n_last: int = 1, avgpool: bool = False, cls: bool = True, grid: int = 0):
        super().__init__()
        self.vit, self.n_last, self.avgpool, self.cls, self.grid = vit, n_last, avgpool, cls, grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layers = self.vit.get_intermediate_layers(x, self.n_last)
        parts = [t[:, 0] for t in layers] if self.cls else []
        patches = layers[-1][:, 1:]
        if self.avgpool:
            parts.append(patches.mean(1))
        if self.grid:
            b, n, d = patches.shape
            side = int(round(n ** 0.5))
            if side * side != n:
                from .errors import UsageError

                raise UsageError(f"the grid readout needs a square patch map, got {n} patch tokens; resize the "
                                 f"images to a square input (-o image_size N)")
            fmap = patches.transpose(1, 2).reshape(b, d, side, side)
            parts.append(nn.functional.adaptive_avg_pool2d(fmap, self.grid).flatten(2).transpose(1, 2).flatten(1))
        return torch.cat(parts, dim=-1)


class MAEGlobalPool(nn.Module):
    """MAE's global-pool feature, as its fine-tuning code defines it (``models_vit.VisionTransformer`` with
    ``global_pool=True``): the mean of the last block's patch tokens *before* the final norm (the [CLS] token is
    left out), then ``fc_norm``, a LayerNorm (eps 1e-6) that the pretraining checkpoint does not hold, initialised
    to weight 1, bias 0. The backbone's final ``norm`` is not used."""

    def __init__(self, vit: Any, eps: float = 1e-6):
        super().__init__()
        self.vit = vit
        self.fc_norm = nn.LayerNorm(vit.pos_embed.shape[-1], eps=eps)  # weight 1, bias 0: not from the checkpoint

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.vit.prepare_tokens(x)
        for blk in self.vit.blocks:
            t = blk(t)
        return self.fc_norm(t[:, 1:].mean(dim=1))
