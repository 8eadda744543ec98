"""The reference zoo: encoders pretrained on PhotoDigits' train split (see docs/zoo.md).

``load_index()`` returns ``weights/zoo.json``; ``load_encoder(name)`` rebuilds an encoder with its weights
(MAE checkpoints are ``{"model": sd}`` with decoder keys, which are dropped here). The pretraining recipes live
in ``jerc_eval.zoo.pretrain.RECIPES`` (import that module lazily: it is only needed to train).
"""
from __future__ import annotations

import json
from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def load_index(weights_dir: str | Path = WEIGHTS_DIR) -> dict:
    return json.loads((Path(weights_dir) / "zoo.json").read_text())


def load_encoder(name: str, weights_dir: str | Path = WEIGHTS_DIR, verify: bool = False):
    import hashlib

    import torch

    from ..models import build

    entry = load_index(weights_dir)["encoders"][name]
    path = Path(weights_dir) / entry["file"]
    if verify and hashlib.sha256(path.read_bytes()).hexdigest() != entry["sha256"]:
        raise ValueError(f"sha256 mismatch for {path}")
    sd = torch.load(path, map_location="cpu", weights_only=True)
    sd = sd.get("model", sd)
    model = build(entry["arch"])
    keys = model.state_dict().keys()
    model.load_state_dict({k: v for k, v in sd.items() if k in keys})
    return model.eval()


def recipe(name: str, weights_dir: str | Path = WEIGHTS_DIR) -> dict:
    """The augmentation recipe an encoder was pretrained with (from zoo.json)."""
    return load_index(weights_dir)["encoders"][name]["augmentation"]


__all__ = ["WEIGHTS_DIR", "load_encoder", "load_index", "recipe"]
