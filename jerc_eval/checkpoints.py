"""Loading checkpoints loudly: safe unpickling, strict key matching, readable diffs, hashes.

Rules: ``torch.load(..., weights_only=True)`` always (a pickle that needs code is refused); safetensors when
installed; strict key matching, or an exact allow-list of keys that may be absent; never random weights.
"""
from __future__ import annotations

import argparse
import difflib
import hashlib
import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import CheckpointError


def sha256_file(path: str | Path) -> str:
    """sha256 of a file's bytes (memoised per path, size and modification time: cache keys hash it too)."""
    from .cache import file_digest

    return file_digest(Path(path))


# Plain-data classes a weights-only torch.load may rebuild: training scripts (DINO, MAE, ...) save their
# argparse namespace beside the weights. Rebuilding one only sets attributes; it runs no code of the file's.
_SAFE_GLOBALS: tuple = (argparse.Namespace,)


def read_checkpoint(path: str | Path) -> Any:
    """Read a ``.pth``/``.pt``/``.bin``/``.ckpt`` (weights only) or ``.safetensors`` file."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {str(path)!r} is a folder, not a file; pass the weights file with "
                              f"-o checkpoint PATH")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist; pass an existing file with -o checkpoint PATH")
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    import torch

    try:
        with torch.serialization.safe_globals(list(_SAFE_GLOBALS)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc).strip()
        # torch words it "Unsupported global: GLOBAL x.Y was not an allowed global" or, for a blocked module,
        # "Trying to load unsupported GLOBAL x.Y whose module x is blocked"
        found = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)", text)
        if not found and re.search(r"Unsupported operand \d+|invalid load key|could not find MARK|pickle data was "
                                   r"truncated|EOF", text):
            # not a pickle at all (a text file, an .npz, half a download): no code was asked for
            raise CheckpointError(f"checkpoint {path.name!r} is truncated or not a torch file (its bytes are not a "
                                  f"pickle); download or copy it again, or pass the right file with -o checkpoint "
                                  f"PATH") from None
        first = f"it needs {found.group(1)}" if found else (text.splitlines()[-1][:160] if text else type(exc).__name__)
        hint = "Re-save it as a plain state_dict or safetensors"
        if found and found.group(1).startswith("numpy") and not zipfile.is_zipfile(path):
            hint = ("If it is an official BYOL JAX/Haiku checkpoint, name it *.pkl and use -e byol; otherwise "
                    "re-save it as a plain state_dict or safetensors")
        raise CheckpointError(
            f"checkpoint {path.name!r} is a pickle that needs code to load ({first}); jerc-eval only loads "
            f"weights (torch.load weights_only=True). {hint}") from None
    except (RuntimeError, EOFError, OSError, ValueError, IndexError, KeyError, AttributeError, TypeError) as exc:
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


def split_keys(sd: dict, prefix: str, drop: tuple[str, ...], owner: str, layout: str) -> tuple[dict, list[str]]:
    """Keys under ``prefix`` (removed); every other key must start with one of ``drop`` (dropped, and returned).

    ``drop`` entries ending in ``.`` are prefixes, others exact key names. A key that is neither under ``prefix``
    nor on the drop list is an error: a file is never loaded by silently ignoring part of it.
    """
    kept, dropped, stray = {}, [], []
    for key, value in sd.items():
        if key.startswith(prefix):
            kept[key[len(prefix):]] = value
        elif any(key == d or (d.endswith(".") and key.startswith(d)) for d in drop):
            dropped.append(key)
        else:
            stray.append(key)
    if stray:
        allowed = ", ".join(d + ("*" if d.endswith(".") else "") for d in drop) or "nothing"
        raise CheckpointError(f"{owner}: {len(stray)} unexpected key(s) for a {layout} checkpoint, e.g. "
                              f"{', '.join(stray[:3])} (expected {prefix or 'backbone '}* and only {allowed} "
                              f"beside); check the file with jerc-eval inspect-checkpoint FILE")
    if not kept:
        raise CheckpointError(f"{owner}: no {prefix}* keys in this {layout} checkpoint; check the file with "
                              f"jerc-eval inspect-checkpoint FILE")
    return kept, dropped


def summarize_dropped(dropped: list[str]) -> dict[str, int]:
    """``{first two dotted components + '*': count}``: what was dropped, compactly, for ``LoadedEncoder.meta``."""
    out: dict[str, int] = {}
    for key in dropped:
        parts = key.split(".")
        head = ".".join(parts[:2]) + ".*" if len(parts) > 2 else key
        out[head] = out.get(head, 0) + 1
    return out


def sha256_state_dict(sd: Mapping) -> str:
    """A hash of tensors' names, dtypes, shapes and bytes (for weights that come from a hub, not a file)."""
    import torch

    h = hashlib.sha256()
    for key in sorted(sd):
        t = sd[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def fill_bn_counters(module: Any, sd: dict) -> tuple[dict, list[str]]:
    """``sd`` with BatchNorm's ``num_batches_tracked`` buffers filled (0) when the file has none of them.

    torchvision-layout files saved without these step counters (the usual JAX->PyTorch BYOL conversion,
    ``pretrain_res50x1.pth.tar``; files from torch < 0.4.1) load strictly this way, as torchvision itself loads
    them; the filled keys are returned so the adapter records them. A file that has some counters but lacks
    others is left alone (strict loading then reports the missing ones), and every other key must still match.
    """
    import torch

    counters = [k for k in module.state_dict() if k.endswith("num_batches_tracked")]
    if not counters or any(k in sd for k in counters):
        return sd, []
    filled = dict(sd)
    for k in counters:
        filled[k] = torch.tensor(0, dtype=torch.long)
    return filled, counters


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
    check_finite(sd, owner)
    module.load_state_dict(sd, strict=not allowed_missing)


def check_finite(sd: Mapping, owner: str) -> None:
    """Every floating-point tensor is finite; the first one with a NaN or Inf is named (a diverged run's file)."""
    import torch

    for key, t in sd.items():
        if isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            kind = "NaN" if bool(torch.isnan(t).any()) else "Inf"
            raise CheckpointError(f"{owner}: tensor {key} holds {bad} {kind} value(s) of {t.numel()}; the weights "
                                  f"are broken (a diverged run?): use an earlier checkpoint")


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


# ------------------------------------------------------------------------ official BYOL (JAX/Haiku) pickles
# deepmind-research/byol saves ``pickle.dump({"experiment_state": _ByolExperimentState(online_params,
# target_params, online_state, target_state, opt_state), "step": int, "rng": ndarray}, protocol=2)`` after
# ``jax.device_get``: numpy arrays in nested dicts, inside NamedTuples defined by byol (and optax/haiku).
#
# Unpickling runs whatever callables a pickle names, so the reader below resolves only an allow-list: the numpy
# functions that rebuild arrays and dtypes, ``_codecs.encode`` (protocol 2 writes bytes with it), and plain
# containers. NamedTuples from the ``byol``/``optax``/``haiku`` namespaces become inert local records (never the
# real classes, which are not even imported). Any other global (``os.system``, ``builtins.eval``, a class of
# yours) is refused with a CheckpointError before anything is called.

class _Record(tuple):
    """An inert stand-in for a NamedTuple (or a FlatMapping) of a trusted namespace: it only stores its fields."""

    _qualname = "record"

    def __new__(cls, *args: Any, **kwargs: Any) -> "_Record":
        return tuple.__new__(cls, args + tuple(kwargs.values()))

    def __setstate__(self, state: Any) -> None:  # BUILD: keep the state as data, run nothing
        self.__dict__["state"] = state

    def __repr__(self) -> str:
        return f"<{self._qualname} record of {len(self)} fields>"


class _ByolExperimentState(_Record):
    _qualname = "byol.byol_experiment._ByolExperimentState"
    FIELDS = ("online_params", "target_params", "online_state", "target_state", "opt_state")

    def __getattr__(self, name: str) -> Any:
        if name in self.FIELDS and self.FIELDS.index(name) < len(self):
            return self[self.FIELDS.index(name)]
        raise AttributeError(name)


def _flat_mapping(*args: Any) -> dict:
    """haiku's old ``FlatMapping``/``FlatMap`` (params before haiku 0.0.6): rebuilt as a plain dict."""
    if len(args) == 1 and isinstance(args[0], Mapping):
        return dict(args[0])
    if len(args) == 1 and isinstance(args[0], (list, tuple)):
        return dict(args[0])
    raise pickle.UnpicklingError("haiku FlatMapping with an unexpected payload")


def _numpy_allow_list() -> dict[tuple[str, str], Any]:
    import codecs

    import numpy as np

    try:
        from numpy._core import multiarray as ma
        from numpy._core import numeric as nm
    except ImportError:  # numpy < 2
        from numpy.core import multiarray as ma  # type: ignore[no-redef]
        from numpy.core import numeric as nm  # type: ignore[no-redef]

    def reconstruct(subtype: Any, shape: Any, dtype: Any) -> Any:
        if subtype is not np.ndarray:
            raise pickle.UnpicklingError("only plain numpy arrays may be rebuilt")
        return ma._reconstruct(subtype, shape, dtype)

    def encode(text: Any, encoding: str = "utf-8") -> bytes:
        if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
            raise pickle.UnpicklingError("_codecs.encode is only allowed for protocol-2 bytes")
        return codecs.encode(text, encoding)

    table: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
                                         ("_codecs", "encode"): encode,
                                         ("collections", "OrderedDict"): dict, ("builtins", "set"): set,
                                         ("builtins", "frozenset"): frozenset, ("builtins", "complex"): complex,
                                         ("__builtin__", "set"): set, ("__builtin__", "frozenset"): frozenset}
    for mod in ("numpy.core", "numpy._core"):
        table[(f"{mod}.multiarray", "_reconstruct")] = reconstruct
        table[(f"{mod}.multiarray", "scalar")] = ma.scalar
        table[(f"{mod}.numeric", "_frombuffer")] = nm._frombuffer
    for name in ("FlatMapping", "FlatMap"):
        for mod in ("haiku._src.data_structures", "haiku.data_structures"):
            table[(mod, name)] = _flat_mapping
    table[("byol.byol_experiment", "_ByolExperimentState")] = _ByolExperimentState
    return table


_RECORD_NAMESPACES = ("byol.", "optax.", "haiku.")


class _HaikuUnpickler(pickle.Unpickler):
    """Resolves only the allow-list above; everything else is refused (see the block comment)."""

    def __init__(self, fh: Any):
        super().__init__(fh)
        self.table = _numpy_allow_list()

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.table:
            return self.table[(module, name)]
        if module.startswith(_RECORD_NAMESPACES) and name[:1].isupper() and name.replace("_", "").isalnum():
            return type(name, (_Record,), {"_qualname": f"{module}.{name}"})  # inert: stores fields only
        raise pickle.UnpicklingError(f"refused to load {module}.{name}: only numpy arrays and plain containers "
                                     f"are allowed")


def read_haiku_pickle(path: str | Path) -> Any:
    """Unpickle an official BYOL JAX/Haiku checkpoint with the restricted unpickler (numpy arrays only)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist; pass an existing file with -o checkpoint PATH")
    try:
        with open(path, "rb") as fh:
            return _HaikuUnpickler(fh).load()
    except pickle.UnpicklingError as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else "unreadable"
        if msg.startswith("refused"):
            raise CheckpointError(f"pickle {path.name!r} carries code or objects ({msg}); jerc-eval never "
                                  f"unpickles objects. Export the arrays (numpy) and try again") from None
        raise CheckpointError(f"pickle {path.name!r} is truncated or not a pickle ({msg[:160]}); copy it again") from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, MemoryError, OSError) as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"pickle {path.name!r} is truncated or malformed ({msg[:160]}); copy it again") from None


def haiku_online_tree(obj: Any, path: str | Path) -> tuple[dict, dict]:
    """``(params, state)`` of the online network from a BYOL pickle (several historical nestings accepted)."""
    name = Path(path).name
    node = obj
    if isinstance(node, Mapping) and "experiment_state" in node:
        node = node["experiment_state"]
    if isinstance(node, _ByolExperimentState):
        params, state = node.online_params, node.online_state
    elif isinstance(node, Mapping) and "online_params" in node:
        params, state = node["online_params"], node.get("online_state", {})
    elif isinstance(node, Mapping) and "params" in node:
        params, state = node["params"], node.get("state", {})
    else:
        keys = ", ".join(map(str, list(node)[:6])) if isinstance(node, Mapping) else type(node).__name__
        raise CheckpointError(f"{name!r} is not a BYOL Haiku checkpoint (no experiment_state.online_params; "
                              f"found {keys}); check the file with jerc-eval inspect-checkpoint FILE")
    if not isinstance(params, Mapping) or not isinstance(state, Mapping):
        raise CheckpointError(f"{name!r}: online_params/online_state are not mappings of module -> arrays")
    return dict(params), dict(state)


_HAIKU_HEADS = ("projector", "predictor", "classifier")
_HK_STEM = re.compile(r"^(res_net\d+)/~/initial_(conv|batchnorm)(?:_1)?$")
_HK_BLOCK = re.compile(r"^(res_net\d+)/~/block_group_(\d+)/~/block_(\d+)/~/(conv|batchnorm)_(\d+)$")
_HK_SHORTCUT = re.compile(r"^(res_net\d+)/~/block_group_(\d+)/~/block_(\d+)/~/shortcut_(conv|batchnorm)$")


def _haiku_module_to_torch(module: str) -> tuple[str, str] | None:
    """Haiku module path -> (torchvision module path, 'conv' | 'bn'), or None if it is not the ResNet torso."""
    if m := _HK_STEM.match(module):
        return ("conv1", "conv") if m.group(2) == "conv" else ("bn1", "bn")
    if m := _HK_BLOCK.match(module):
        g, b, kind, i = int(m.group(2)), int(m.group(3)), m.group(4), int(m.group(5))
        return (f"layer{g + 1}.{b}.{'conv' if kind == 'conv' else 'bn'}{i + 1}", "conv" if kind == "conv" else "bn")
    if m := _HK_SHORTCUT.match(module):
        g, b, kind = int(m.group(2)), int(m.group(3)), m.group(4)
        return (f"layer{g + 1}.{b}.downsample.{0 if kind == 'conv' else 1}", "conv" if kind == "conv" else "bn")
    return None


def haiku_resnet_to_torchvision(params: Mapping, state: Mapping, owner: str = "byol") -> tuple[dict, list[str]]:
    """Map Haiku ResNet parameters/batch-norm statistics (deepmind byol layout) to a torchvision state dict.

    - conv ``w`` HWIO -> ``weight`` OIHW; batchnorm ``scale``/``offset`` (shape (1,1,1,C) or (C,)) ->
      ``weight``/``bias``; state ``.../~/mean_ema`` and ``var_ema`` ``average`` -> ``running_mean``/``running_var``;
      ``num_batches_tracked`` (which Haiku does not keep) is set to 0.
    - ``res_net50/~/initial_conv[_1]`` -> ``conv1``; ``initial_batchnorm[_1]`` -> ``bn1``;
      ``block_group_G/~/block_B/~/conv_I`` -> ``layer{G+1}.B.conv{I+1}`` (and ``batchnorm_I`` -> ``bn{I+1}``);
      ``shortcut_conv``/``shortcut_batchnorm`` -> ``downsample.0``/``downsample.1``.
    - top-level ``projector*``/``predictor*``/``classifier*`` modules are dropped (returned); anything else is an error.
    """
    import numpy as np
    import torch

    sd: dict[str, Any] = {}
    dropped: list[str] = []
    stray: list[str] = []

    def tensor(arr: Any, where: str) -> Any:
        if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "fiu":
            raise CheckpointError(f"{owner}: {where} is not a numeric array ({type(arr).__name__}); not a BYOL "
                                  f"Haiku checkpoint")
        return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))

    for module, leaves in params.items():
        if str(module).split("/")[0].startswith(_HAIKU_HEADS):
            dropped.extend(f"{module}:{k}" for k in (leaves or {}))
            continue
        target = _haiku_module_to_torch(str(module))
        if target is None or not isinstance(leaves, Mapping):
            stray.append(str(module))
            continue
        path, kind = target
        for leaf, arr in leaves.items():
            if kind == "conv" and leaf == "w":
                t = tensor(arr, f"{module}:{leaf}")
                if t.ndim != 4:
                    raise CheckpointError(f"{owner}: {module}:w has shape {tuple(t.shape)}, expected HWIO (4-d)")
                sd[f"{path}.weight"] = t.permute(3, 2, 0, 1).contiguous()
            elif kind == "bn" and leaf in ("scale", "offset"):
                sd[f"{path}.{'weight' if leaf == 'scale' else 'bias'}"] = tensor(arr, f"{module}:{leaf}").reshape(-1)
            else:
                stray.append(f"{module}:{leaf}")
    for module, leaves in state.items():
        top = str(module).split("/")[0]
        if top.startswith(_HAIKU_HEADS):
            dropped.append(str(module))
            continue
        base, _, stat = str(module).rpartition("/~/")
        target = _haiku_module_to_torch(base)
        if target is None or target[1] != "bn" or stat not in ("mean_ema", "var_ema") \
                or not isinstance(leaves, Mapping) or "average" not in leaves:
            stray.append(str(module))
            continue
        name = "running_mean" if stat == "mean_ema" else "running_var"
        sd[f"{target[0]}.{name}"] = tensor(leaves["average"], f"{module}:average").reshape(-1)
        sd[f"{target[0]}.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
    if stray:
        raise CheckpointError(f"{owner}: {len(stray)} Haiku entr(y/ies) that are not the ResNet torso nor a "
                              f"projector/predictor/classifier head, e.g. {', '.join(stray[:3])}; this converter "
                              f"knows deepmind byol's ResNet layout only")
    if "conv1.weight" not in sd:
        raise CheckpointError(f"{owner}: no res_net*/~/initial_conv in the Haiku parameters; not a BYOL ResNet")
    return sd, dropped


# ------------------------------------------------------------------------- Hugging Face ViTMAE directories
_HF_VIT_LAYER = {
    "layernorm_before": "norm1", "layernorm_after": "norm2", "attention.output.dense": "attn.proj",
    "intermediate.dense": "mlp.fc1", "output.dense": "mlp.fc2",
}


def read_hf_vit_mae(folder: str | Path) -> tuple[dict, dict, Path]:
    """Read a Hugging Face ``ViTMAEModel``/``ViTMAEForPreTraining`` folder (config.json + model.safetensors or
    pytorch_model.bin) and return (timm-layout encoder state dict, config, weights file).

    The HF model masks 75 % of the patches at every forward, eval mode included; loaded into jerc-eval's ViT the
    encoder always sees every patch (masking disabled). q/k/v are concatenated into timm's ``qkv``; the decoder
    (``decoder.*``) is dropped.
    """
    import json

    import torch

    folder = Path(folder)
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise CheckpointError(f"{folder} has no config.json; pass a Hugging Face ViTMAE folder or a .pth file")
    cfg = json.loads(cfg_path.read_text())
    if cfg.get("model_type") not in (None, "vit_mae"):
        raise CheckpointError(f"{folder} holds a {cfg.get('model_type')!r} model, not vit_mae; use -e timm or -e hub")
    weights = next((folder / n for n in ("model.safetensors", "pytorch_model.bin") if (folder / n).is_file()), None)
    if weights is None:
        raise CheckpointError(f"{folder} has no model.safetensors or pytorch_model.bin; copy the weights file too")
    hf = read_checkpoint(weights)
    hf = {k[len("vit."):] if k.startswith("vit.") else k: v for k, v in hf.items() if not k.startswith("decoder.")}
    sd: dict = {}
    try:
        sd["cls_token"] = hf.pop("embeddings.cls_token")
        sd["pos_embed"] = hf.pop("embeddings.position_embeddings")
        sd["patch_embed.proj.weight"] = hf.pop("embeddings.patch_embeddings.projection.weight")
        sd["patch_embed.proj.bias"] = hf.pop("embeddings.patch_embeddings.projection.bias")
        sd["norm.weight"], sd["norm.bias"] = hf.pop("layernorm.weight"), hf.pop("layernorm.bias")
        for i in range(int(cfg.get("num_hidden_layers", 0))):
            pre = f"encoder.layer.{i}."
            for part in ("weight", "bias"):
                sd[f"blocks.{i}.attn.qkv.{part}"] = torch.cat(
                    [hf.pop(f"{pre}attention.attention.{n}.{part}") for n in ("query", "key", "value")])
                for src, dst in _HF_VIT_LAYER.items():
                    sd[f"blocks.{i}.{dst}.{part}"] = hf.pop(f"{pre}{src}.{part}")
    except KeyError as exc:
        raise CheckpointError(f"{weights.name} lacks {exc.args[0]!r}: not a ViTMAE encoder in the Hugging Face "
                              f"layout") from None
    if hf:
        raise CheckpointError(f"{weights.name} has {len(hf)} unexpected keys, e.g. {next(iter(hf))}; "
                              f"not a ViTMAE checkpoint this adapter knows")
    return sd, cfg, weights
