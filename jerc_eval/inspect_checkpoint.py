"""What is this checkpoint file, and which adapter loads it? (``jerc-eval inspect-checkpoint FILE``)

:func:`inspect` reads a file with the same safe readers the adapters use (weights-only ``torch.load``,
safetensors, the restricted Haiku unpickler) and never builds a model. It reports the container, the top-level
keys, where the state dict lives, key prefixes, an architecture guess (ViT width/depth/patch/heads or ResNet block
type/layers/widths), which non-backbone parts are present (decoder, head, projector, predictor, classifier,
momentum/target copies), and which adapter and options load it. :func:`format_report` renders that as text.
A missing, truncated or unsafe file raises :class:`~jerc_eval.errors.CheckpointError`, as loading it would.
"""
from __future__ import annotations

import shlex
import zipfile
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .checkpoints import (haiku_online_tree, haiku_resnet_to_torchvision, read_checkpoint, read_haiku_pickle,
                          resnet_kwargs, vit_kwargs)
from .errors import CheckpointError

# where training frameworks keep the weights, most specific first
STATE_DICT_KEYS = ("model", "state_dict", "teacher", "student", "model_ema", "state_dict_ema", "module", "net",
                   "network", "encoder", "backbone", "params")
# prefixes in front of the backbone's own keys, outermost first
WRAPPER_PREFIXES = ("module.", "online_encoder.net.", "backbone.", "encoder.", "model.", "net.")
PARTS = {
    "decoder": ("decoder_", "mask_token", "decoder."),
    "head": ("head.", "heads."),
    "fc": ("fc.",),
    "projector": ("projector.", "projection_head.", "online_encoder.projector.", "projector/"),
    "predictor": ("predictor.", "prediction_head.", "online_predictor.", "predictor/"),
    "classifier": ("classifier.", "classifier/"),
    "momentum/target copy": ("momentum_", "target_encoder.", "backbone_momentum.", "projection_head_momentum."),
}
_RESNET_NAMES = {(True, (3, 4, 6, 3)): "resnet50", (True, (3, 4, 23, 3)): "resnet101",
                 (True, (3, 8, 36, 3)): "resnet152", (True, (3, 24, 36, 3)): "resnet200",
                 (False, (2, 2, 2, 2)): "resnet18", (False, (3, 4, 6, 3)): "resnet34"}
_VIT_NAMES = {192: "ViT-Ti", 384: "ViT-S", 768: "ViT-B", 1024: "ViT-L", 1280: "ViT-H"}


def container_of(path: Path) -> str:
    if path.suffix == ".safetensors":
        return "safetensors"
    if path.suffix.lower() in (".pkl", ".pickle"):
        return "pickle (JAX/Haiku, numpy arrays)"
    if zipfile.is_zipfile(path):
        return "torch zip (torch.save)"
    return "torch legacy / other pickle"


def _is_tensor_map(obj: Any) -> bool:
    import torch

    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def locate_state_dict(obj: Any) -> tuple[str, dict | None, list[str]]:
    """(location, state dict, every location that holds one); location ``"(top level)"`` or ``"['model']"``."""
    if _is_tensor_map(obj):
        return "(top level)", dict(obj), ["(top level)"]
    if not isinstance(obj, Mapping):
        return "", None, []
    found = [k for k in obj if _is_tensor_map(obj[k])]
    ordered = [k for k in STATE_DICT_KEYS if k in found] + [k for k in found if k not in STATE_DICT_KEYS]
    if not ordered:
        return "", None, []
    return f"[{ordered[0]!r}]", dict(obj[ordered[0]]), [f"[{k!r}]" for k in ordered]


def prefixes(keys: list[str], depth: int = 1) -> dict[str, int]:
    """How many keys start with each first dotted component (or first ``depth`` components)."""
    count = Counter(".".join(k.split(".")[:depth]) + ("." if k.count(".") >= depth else "") for k in keys)
    return dict(count.most_common(12))


def _backbone_view(sd: dict) -> tuple[str, dict]:
    """Peel wrapper prefixes (``module.``, ``backbone.``, ...) off the keys where most keys carry them."""
    peeled = ""
    changed = True
    while changed:
        changed = False
        for pre in WRAPPER_PREFIXES:
            inside = {k[len(pre):]: v for k, v in sd.items() if k.startswith(pre)}
            if inside and ("conv1.weight" in inside or "patch_embed.proj.weight" in inside
                           or any(k.startswith(WRAPPER_PREFIXES) for k in inside)
                           or "4.0.conv1.weight" in inside or "0.weight" in inside):
                sd, peeled, changed = inside, peeled + pre, True
                break
    if "4.0.conv1.weight" in sd and "0.weight" in sd:  # lightly: nn.Sequential(*resnet.children())
        names = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}
        sd = {names.get(k.split(".", 1)[0], k.split(".", 1)[0]) + "." + k.split(".", 1)[1]: v
              for k, v in sd.items() if "." in k}
    return peeled, sd


def architecture(sd: dict) -> dict[str, Any]:
    """A ViT or ResNet guess from key names and shapes (no model is built)."""
    if "patch_embed.proj.weight" in sd and "pos_embed" in sd:
        try:
            kw = vit_kwargs(sd)
        except (CheckpointError, KeyError, ValueError):
            return {"kind": "vit (unreadable shapes)"}
        name = f"{_VIT_NAMES.get(kw['embed_dim'], 'ViT')}/{kw['patch_size']}"
        return {"kind": "vit", "name": name, "embed_dim": kw["embed_dim"], "depth": kw["depth"],
                "patch_size": kw["patch_size"], "img_size": kw["img_size"], "num_heads_guess": kw["num_heads"],
                "mlp_ratio": kw["mlp_ratio"]}
    if "conv1.weight" in sd and "layer1.0.conv1.weight" in sd:
        try:
            kw = resnet_kwargs(sd)
        except (CheckpointError, KeyError):
            return {"kind": "resnet (unreadable shapes)"}
        base = _RESNET_NAMES.get((kw["bottleneck"], tuple(kw["layers"])), "resnet")
        mult = kw["stem_width"] / 64
        if mult != 1 and mult > 0:
            base += f"x{mult:g}"
        return {"kind": "resnet", "name": base, "block": "bottleneck" if kw["bottleneck"] else "basic",
                "layers": list(kw["layers"]), "widths": list(kw["widths"]), "stem_width": kw["stem_width"],
                "stem_kernel": kw["stem_kernel"]}
    return {"kind": "unknown"}


def mae_sincos_pos_embed(embed_dim: int, grid: int) -> Any:
    """MAE's fixed 2-d sin-cos position embedding with a zero [CLS] row (``util/pos_embed.py``
    ``get_2d_sincos_pos_embed(embed_dim, grid, cls_token=True)``): (1 + grid**2, embed_dim)."""
    import numpy as np

    def one_d(dim: int, pos: Any) -> Any:
        omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    g = np.arange(grid, dtype=np.float32)
    gw, gh = np.meshgrid(g, g)  # MAE: np.meshgrid(grid_w, grid_h), w first
    emb = np.concatenate([one_d(embed_dim // 2, gw), one_d(embed_dim // 2, gh)], axis=1)
    return np.concatenate([np.zeros((1, embed_dim)), emb], axis=0)


def has_mae_pos_embed(sd: dict) -> bool:
    """Whether ``pos_embed`` is MAE's fixed sin-cos table (MAE never trains it; DINO and timm learn theirs)."""
    import numpy as np

    pe = sd.get("pos_embed")
    if pe is None or pe.ndim != 3 or pe.shape[-1] % 4:
        return False
    n, d = int(pe.shape[1]), int(pe.shape[2])
    grid = int(round((n - 1) ** 0.5))
    if grid * grid != n - 1:
        return False
    return bool(np.allclose(pe[0].float().numpy(), mae_sincos_pos_embed(d, grid), atol=1e-4))


def _mae_args(obj: Any) -> bool:
    """A training script's argparse namespace saved beside the weights that says MAE (mask_ratio, norm_pix_loss)."""
    args = obj.get("args") if isinstance(obj, Mapping) else None
    return args is not None and hasattr(args, "mask_ratio") and hasattr(args, "norm_pix_loss")


def _parts(keys: list[str]) -> dict[str, int]:
    out = {}
    for part, pres in PARTS.items():
        n = sum(1 for k in keys if any(k.startswith(p) or f".{p}" in k or f"/{p}" in k or k == p.rstrip("./")
                                       for p in pres))
        if n:
            out[part] = n
    return out


def _suggest(path: Path, info: dict) -> tuple[dict | None, list[dict], str]:
    """(suggestion, alternatives, format name)."""
    q = shlex.quote(str(path))
    arch, has, layout = info["architecture"], info["parts"], info.get("layout", "")
    stem = path.name.lower()

    def cmd(enc: str, **opts: Any) -> dict:
        o = {"checkpoint": str(path), **opts}
        text = " ".join(f"-o {k} {q if k == 'checkpoint' else shlex.quote(str(v))}" for k, v in o.items())
        return {"encoder": enc, "options": o, "command": f"jerc-eval run -e {enc} {text}"}

    kind = arch.get("kind")
    if layout == "haiku":
        return cmd("byol"), [], "official BYOL JAX/Haiku checkpoint (experiment_state.online_params)"
    if kind == "resnet":
        wrapper = info.get("wrapper_prefix", "")
        if "online_encoder.net." in wrapper:
            return cmd("byol"), [], "lucidrains byol-pytorch learner state dict"
        if info["top_level_keys"] and {"teacher", "student"} <= set(info["top_level_keys"]):
            return cmd("dino", checkpoint_key="teacher"), [], "DINO training checkpoint (ResNet)"
        if "backbone." in wrapper:
            if info.get("lightly"):
                name = "lightly"
            elif info.get("lightning"):
                name = "solo-learn / PyTorch Lightning"
            else:
                name = "solo-learn / Lightning-style"
            return cmd("byol"), [], f"{name} checkpoint (backbone + heads)"
        tv = cmd("torchvision", model=arch["name"] if arch["name"].startswith("resnet") and "x" not in arch["name"]
                 else "resnet50", paradigm="SL")
        if "dino" in stem:
            return cmd("dino"), [cmd("byol")], "DINO ResNet backbone (torchvision layout)"
        if has.get("fc") and "byol" not in stem:
            return tv, [cmd("byol")], "torchvision ResNet with its classifier (fc) - supervised, or converted SSL"
        return cmd("byol"), [cmd("dino"), tv], "torchvision-layout ResNet backbone"
    if kind == "vit":
        # DINO's linear evaluation (eval_linear.py): the [CLS] of the last 4 blocks for ViT-S, the last block's
        # [CLS] + mean patch token for ViT-B
        readout = {384: {"n_last_blocks": 4}, 768: {"n_last_blocks": 1, "avgpool": "true"}}.get(arch["embed_dim"], {})
        note = {384: "; DINO's ViT-S linear-eval readout (n_last_blocks 4)",
                768: "; DINO's ViT-B linear-eval readout (last block + avgpool)"}.get(arch["embed_dim"], "")
        if has.get("decoder"):
            return cmd("mae"), [], "MAE pretraining checkpoint (encoder + decoder)"
        if info["top_level_keys"] and {"teacher", "student"} <= set(info["top_level_keys"]):
            return cmd("dino", checkpoint_key="teacher", **readout), [], f"DINO training checkpoint (ViT){note}"
        if has.get("head") and "backbone." not in info.get("wrapper_prefix", ""):
            return ({"encoder": "timm", "options": {"model": "<timm model id>", "checkpoint": str(path)},
                     "command": f"jerc-eval run -e timm -o model <timm model id> -o checkpoint {q} -o paradigm SL"},
                    [], "ViT with a classifier head (fine-tuned / supervised)")
        if info.get("mae_content"):  # by content: MAE's fixed sin-cos position table or its training args
            return cmd("mae"), [cmd("dino", **readout)], ("MAE encoder (fixed sin-cos position embedding: MAE "
                                                          "pretraining)")
        return cmd("dino", **readout), [cmd("mae")], (f"timm-layout ViT encoder with learned position embeddings "
                                                       f"(DINO-style; not MAE's fixed sin-cos table){note}")
    return None, [], "unrecognised layout"


def inspect(path: str | Path) -> dict[str, Any]:
    """Describe a checkpoint file and suggest the adapter that loads it (raises CheckpointError if unreadable)."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {str(path)!r} is a folder; pass the checkpoint file inside it")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist; pass an existing file")
    info: dict[str, Any] = {"path": str(path), "size_bytes": path.stat().st_size, "container": container_of(path)}
    if path.suffix.lower() in (".pkl", ".pickle"):
        obj = read_haiku_pickle(path)
        info["top_level_keys"] = [str(k) for k in obj][:20] if isinstance(obj, Mapping) else []
        params, state = haiku_online_tree(obj, path)
        sd, dropped = haiku_resnet_to_torchvision(params, state, "inspect")
        info.update(layout="haiku", state_dict_location="['experiment_state'].online_params (+ online_state)",
                    state_dict_candidates=["['experiment_state'].online_params"],
                    num_tensors=sum(len(v) for v in params.values() if isinstance(v, Mapping)),
                    key_prefixes=dict(Counter(str(m).split("/")[0] for m in params).most_common(12)),
                    parts=_parts([str(m) for m in params]), wrapper_prefix="")
        backbone = sd
    else:
        obj = read_checkpoint(path)
        info["top_level_keys"] = [str(k) for k in obj][:20] if isinstance(obj, Mapping) else []
        loc, sd, candidates = locate_state_dict(obj)
        info.update(state_dict_location=loc or None, state_dict_candidates=candidates)
        if sd is None:
            info.update(num_tensors=0, key_prefixes={}, parts={}, architecture={"kind": "unknown"},
                        format="no state dict found", suggestion=None, alternatives=[])
            return info
        keys = list(sd)
        peeled, backbone = _backbone_view(sd)
        info.update(num_tensors=len(keys), num_params=int(sum(v.numel() for v in sd.values())),
                    key_prefixes=prefixes(keys, 2 if peeled else 1), parts=_parts(keys), wrapper_prefix=peeled,
                    # lightly keeps nn.Sequential(*resnet.children()): backbone.4.0.* (not solo-learn's
                    # backbone.layer4.0.*, which also ends in 4.0.conv1.weight)
                    lightly=any(k.endswith("backbone.4.0.conv1.weight") for k in keys),
                    lightning=isinstance(obj, Mapping) and any(str(k).startswith("pytorch-lightning") or
                                                               k in ("hyper_parameters", "callbacks", "global_step")
                                                               for k in obj),
                    mae_content=has_mae_pos_embed(backbone) or _mae_args(obj))
        info["example_keys"] = keys[:5]
    info["architecture"] = architecture(backbone)
    suggestion, alternatives, fmt = _suggest(path, info)
    info.update(format=fmt, suggestion=suggestion, alternatives=alternatives)
    for k in ("lightly", "lightning", "mae_content"):
        info.pop(k, None)
    return info


def format_report(info: dict[str, Any]) -> str:
    """Human-readable report of :func:`inspect`'s result (ends with the command that loads the file)."""
    lines = [f"file:        {info['path']} ({info['size_bytes'] / 1e6:.1f} MB)",
             f"container:   {info['container']}",
             f"format:      {info.get('format', '?')}"]
    if info.get("top_level_keys"):
        lines.append(f"top level:   {', '.join(info['top_level_keys'])}")
    lines.append(f"weights at:  {info.get('state_dict_location') or '(none found)'}"
                 + (f"  (also: {', '.join(info['state_dict_candidates'][1:])})"
                    if len(info.get("state_dict_candidates") or []) > 1 else ""))
    if info.get("num_tensors"):
        extra = f", {info['num_params'] / 1e6:.2f} M values" if "num_params" in info else ""
        lines.append(f"tensors:     {info['num_tensors']}{extra}")
    if info.get("wrapper_prefix"):
        lines.append(f"prefix:      {info['wrapper_prefix']} (stripped by the adapter)")
    if info.get("key_prefixes"):
        lines.append("key groups:  " + ", ".join(f"{k}{'*' if k.endswith('.') else ''} ({n})"
                                              for k, n in info["key_prefixes"].items()))
    arch = info.get("architecture", {})
    if arch.get("kind") == "vit":
        lines.append(f"architecture: {arch['name']} - width {arch['embed_dim']}, depth {arch['depth']}, patch "
                     f"{arch['patch_size']}, {arch['img_size']} px, heads {arch['num_heads_guess']} (guess; "
                     f"-o num_heads N overrides), mlp ratio {arch['mlp_ratio']:g}")
    elif arch.get("kind") == "resnet":
        lines.append(f"architecture: {arch['name']} - {arch['block']} blocks {arch['layers']}, widths "
                     f"{arch['widths']}, stem {arch['stem_width']}ch {arch['stem_kernel']}x{arch['stem_kernel']}")
    else:
        lines.append(f"architecture: {arch.get('kind', 'unknown')}")
    parts = info.get("parts") or {}
    lines.append("also holds:  " + (", ".join(f"{p} ({n} keys)" for p, n in parts.items()) if parts else "nothing "
                                    "beside the backbone"))
    if info.get("suggestion"):
        lines.append(f"load it with: {info['suggestion']['command']}")
        for alt in info.get("alternatives") or []:
            lines.append(f"   or:       {alt['command']}")
    else:
        lines.append("load it with: no built-in adapter recognises this layout; write a plugin "
                     "(plugins/custom_encoder_template.py) or use -e factory (jerc-eval-torchvision)")
    return "\n".join(lines)


__all__ = ["architecture", "format_report", "inspect", "locate_state_dict"]


def _main(argv: list[str] | None = None) -> int:  # python -m jerc_eval.inspect_checkpoint FILE [--json]
    import json
    import sys

    args = sys.argv[1:] if argv is None else argv
    if not args:
        print("usage: python -m jerc_eval.inspect_checkpoint FILE [--json]", file=sys.stderr)
        return 2
    try:
        info = inspect(args[0])
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(json.dumps(info, indent=2, default=str) if "--json" in args else format_report(info))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
