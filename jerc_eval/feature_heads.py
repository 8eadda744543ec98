"""Feature protocols as small modules on top of a backbone (imported lazily: it pulls in torch)."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn


class ViTFeatures(nn.Module):
    """[CLS] of the last ``n_last`` blocks (each through the final norm), optionally + mean of patch tokens.

    ``n_last=1, avgpool=False`` is MAE's linear-probe feature; ``n_last=4`` is DINO's ViT-S protocol and
    ``n_last=1, avgpool=True`` its ViT-B protocol; ``cls=False, avgpool=True`` is the global average pool.
    """

    def __init__(self, vit: Any, n_last: int = 1, avgpool: bool = False, cls: bool = True):
        super().__init__()
        self.vit, self.n_last, self.avgpool, self.cls = vit, n_last, avgpool, cls

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layers = self.vit.get_intermediate_layers(x, self.n_last)
        parts = [t[:, 0] for t in layers] if self.cls else []
        if self.avgpool:
            parts.append(layers[-1][:, 1:].mean(1))
        return torch.cat(parts, dim=-1)
