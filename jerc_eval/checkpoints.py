"""Loading checkpoints loudly: safe unpickling, strict key matching, readable diffs, hashes.

Rules: ``torch.load(..., weights_only=True)`` always (a pickle that needs code is refused); safetensors when
installed; strict key matching, or an exact allow-list of keys that may be absent; never random weights.
"""
from __future__ import annotations

import difflib
import hashlib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import CheckpointError


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_checkpoint(path: str | Path) -> Any:
    """Read a ``.pth``/``.pt``/``.bin``/``.ckpt`` (weights only) or ``.safetensors`` file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist; pass an existing file with -o checkpoint PATH")
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    import pickle

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"checkpoint {path.name!r} is a pickle that needs code to load ({first[:160]}); jerc-eval only loads "
            f"weights (torch.load weights_only=True). Re-save it as a plain state_dict or safetensors") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"checkpoint {path.name!r} is truncated or not a torch file ({msg[:160]}); "
                              f"download or copy it again") from None


def _read_safetensors(path: Path) -> dict:
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise CheckpointError(f"{path.name!r} is a safetensors file but the safetensors package is missing; "
                              f"pip install safetensors") from None
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"safetensors file {path.name!r} is unreadable ({exc}); copy it again") from None


def find_state_dict(obj: Any, keys: tuple[str, ...], path: str | Path) -> dict:
    """Return the first tensor mapping found under ``keys`` (or ``obj`` itself if it is one)."""
    if _is_state_dict(obj):
        return dict(obj)
    if isinstance(obj, Mapping):
        for key in keys:
            if key in obj and _is_state_dict(obj[key]):
                return dict(obj[key])
        found = ", ".join(map(str, list(obj)[:8]))
        raise CheckpointError(f"{Path(path).name!r} holds no weights under {', '.join(keys)} (top-level keys: "
                              f"{found}); choose the right adapter (jerc-eval inspect-checkpoint)")
    raise CheckpointError(f"{Path(path).name!r} is a {type(obj).__name__}, not a state dict; re-save the weights")


def _is_state_dict(obj: Any) -> bool:
    import torch

    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def strip_prefix(sd: dict, prefix: str) -> dict:
    """Keep keys under ``prefix`` with it removed, if any key has it; otherwise return ``sd`` unchanged."""
    if not any(k.startswith(prefix) for k in sd):
        return sd
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def strict_load(module: Any, sd: dict, owner: str, allowed_missing: tuple[str, ...] = ()) -> None:
    """Load ``sd`` into ``module``; any missing (beyond the allow-list), unexpected or mis-shaped key is an error."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in sd and k not in allowed_missing]
    unexpected = [k for k in sd if k not in expected]
    shapes = [f"{k} {tuple(sd[k].shape)} vs {tuple(expected[k].shape)}" for k in expected
              if k in sd and tuple(sd[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or shapes:
        raise CheckpointError(f"{owner}: checkpoint does not fit the architecture: {key_diff(missing, unexpected, shapes)}; "
                              f"check the encoder and its options (jerc-eval inspect-checkpoint FILE)")
    module.load_state_dict(sd, strict=not allowed_missing)


def key_diff(missing: list[str], unexpected: list[str], shapes: list[str]) -> str:
    parts = []
    if missing:
        hint = ""
        close = difflib.get_close_matches(missing[0], unexpected, n=1, cutoff=0.5)
        if close:
            hint = f" (closest unexpected key: {close[0]})"
        parts.append(f"{len(missing)} missing, e.g. {', '.join(missing[:3])}{hint}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected, e.g. {', '.join(unexpected[:3])}")
    if shapes:
        parts.append(f"{len(shapes)} with other shapes, e.g. {shapes[0]}")
    return "; ".join(parts)


# ------------------------------------------------------------------------------- architecture inference
_VIT_HEADS = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16}


def vit_kwargs(sd: dict, num_heads: int = 0) -> dict:
    """Infer timm-layout ViT hyperparameters from a state dict (heads from the standard table, or given)."""
    try:
        proj = sd["patch_embed.proj.weight"]
        dim, chans, patch = int(proj.shape[0]), int(proj.shape[1]), int(proj.shape[2])
        tokens = int(sd["pos_embed"].shape[1])
    except KeyError as exc:
        raise CheckpointError(f"not a ViT state dict (no {exc.args[0]}); use an adapter for this architecture") from None
    depth = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k)))
    side = int(round((tokens - 1) ** 0.5)) * patch
    hidden = int(sd["blocks.0.mlp.fc1.weight"].shape[0])
    heads = num_heads or _VIT_HEADS.get(dim) or max(1, dim // 64)
    return {"img_size": side, "patch_size": patch, "in_chans": chans, "embed_dim": dim, "depth": depth,
            "num_heads": heads, "mlp_ratio": hidden / dim}


def resnet_kwargs(sd: dict) -> dict:
    """Infer torchvision-layout ResNet blocks per stage, widths and block type from a state dict."""
    if "conv1.weight" not in sd or "layer1.0.conv1.weight" not in sd:
        raise CheckpointError("not a torchvision-layout ResNet state dict (no conv1/layer1 keys); "
                              "use an adapter for this architecture")
    layers, widths = [], []
    for stage in range(1, 5):
        blocks = {int(m.group(1)) for k in sd if (m := re.match(rf"layer{stage}\.(\d+)\.", k))}
        layers.append(1 + max(blocks) if blocks else 0)
        widths.append(int(sd[f"layer{stage}.0.conv1.weight"].shape[0]) if blocks else 0)
    bottleneck = "layer1.0.conv3.weight" in sd
    return {"layers": tuple(layers), "widths": tuple(widths), "bottleneck": bottleneck,
            "stem_width": int(sd["conv1.weight"].shape[0]), "stem_kernel": int(sd["conv1.weight"].shape[-1])}
