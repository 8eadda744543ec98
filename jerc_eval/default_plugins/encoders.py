"""Built-in encoder adapters: MAE, DINO and BYOL checkpoints in their official layouts, and the reference zoo.

The zoo encoders (``zoo-mae``, ``zoo-dino``, ``zoo-byol``) are the same adapters pointed at checkpoints that
ship inside the package, so the zoo exercises exactly the code that loads third-party files.
"""
from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

from ..api import EncoderAdapter, LoadedEncoder, Option, Preprocess
from ..checkpoints import (fill_bn_counters, find_state_dict, haiku_online_tree, haiku_resnet_to_torchvision,
                           read_checkpoint, read_haiku_pickle, resnet_kwargs, sha256_file, split_keys, strict_load,
                           summarize_dropped, vit_kwargs)
from ..errors import CheckpointError, UsageError
from ..hookspecs import hookimpl

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Official pretraining augmentation recipes (from the papers / reference code), used by the recommendation.
MAE_RECIPE = {"random_resized_crop_scale": [0.2, 1.0], "hflip_p": 0.5, "color_jitter_p": 0.0, "grayscale_p": 0.0,
              "blur_p": 0.0, "solarize_p": 0.0, "masking_ratio": 0.75, "source": "MAE (He et al. 2022) main_pretrain.py"}
DINO_RECIPE = {"random_resized_crop_scale": [0.4, 1.0], "local_crops_scale": [0.05, 0.4], "hflip_p": 0.5,
               "color_jitter_p": 0.8, "brightness": 0.4, "contrast": 0.4, "saturation": 0.2, "hue": 0.1,
               "grayscale_p": 0.2, "blur_p": [1.0, 0.1], "solarize_p": [0.0, 0.2],
               "source": "DINO (Caron et al. 2021) DataAugmentationDINO"}
BYOL_RECIPE = {"random_resized_crop_scale": [0.08, 1.0], "hflip_p": 0.5, "color_jitter_p": 0.8, "brightness": 0.4,
               "contrast": 0.4, "saturation": 0.2, "hue": 0.1, "grayscale_p": 0.2, "blur_p": [1.0, 0.1],
               "solarize_p": [0.0, 0.2], "source": "BYOL (Grill et al. 2020) Table 6"}


# --------------------------------------------------------------------------------------- architectures
def _build_vit(sd: dict, num_heads: int) -> tuple[Any, dict]:
    from ..models import VisionTransformer

    kw = vit_kwargs(sd, num_heads)
    if kw["embed_dim"] % kw["num_heads"]:
        raise UsageError(f"num_heads {kw['num_heads']} does not divide the ViT's width {kw['embed_dim']}; pass "
                         f"-o num_heads N with N dividing {kw['embed_dim']} (0 infers it)")
    return VisionTransformer(**kw), kw


def _build_resnet(sd: dict, stem_stride: Any = 1) -> tuple[Any, dict]:
    """The ResNet a state dict describes; ``stem_stride`` (a small 3x3 stem's stride, which the weights do not
    record: an int, or a callable asked only when the stem is a small one) comes from whoever knows it -- the
    user's option, or the zoo manifest for the zoo's own files."""
    kw = resnet_kwargs(sd)
    if kw["bottleneck"]:
        return _bottleneck_resnet(kw), kw
    from ..models import ResNet

    stem = "imagenet" if kw["stem_kernel"] == 7 else "small"
    if callable(stem_stride):
        stem_stride = stem_stride() if stem == "small" else 1
    if stem == "small" and stem_stride != 1:
        kw["stem_stride"] = stem_stride
    return ResNet(layers=kw["layers"], widths=kw["widths"], stem=stem, stem_stride=stem_stride), kw


def _bottleneck_resnet(kw: dict) -> Any:
    """torchvision's Bottleneck ResNet (its own classes, so its key layout), fc replaced by identity.

    Standard widths give exactly ``torchvision.models.resnet50`` & co.; other widths (a stem of ``stem_width``
    and stages of ``widths``, as in BYOL/SimCLR ResNet-50 x2/x4) are built with torchvision's ``_make_layer``.
    """
    import torchvision
    from torch import nn

    tv = torchvision.models.resnet
    layers = list(kw["layers"])
    model = tv.ResNet(tv.Bottleneck, layers)
    if kw["stem_width"] != 64 or tuple(kw["widths"]) != (64, 128, 256, 512):
        model.conv1 = nn.Conv2d(3, kw["stem_width"], kernel_size=7, stride=2, padding=3, bias=False)
        model.bn1 = nn.BatchNorm2d(kw["stem_width"])
        model.inplanes = kw["stem_width"]
        for i, (n, w) in enumerate(zip(layers, kw["widths"])):
            setattr(model, f"layer{i + 1}", model._make_layer(tv.Bottleneck, w, n, stride=1 if i == 0 else 2))
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    model.fc = nn.Identity()
    return model


def tf_same_padding(model: Any) -> Any:
    """Give every strided conv / max-pool TensorFlow's ``SAME`` padding (extra row/column at the end).

    Haiku (the official BYOL code) pads a stride-2 3x3 conv by (0, 1) and the 7x7 stem by (2, 3); torchvision pads
    symmetrically. The weights are identical either way; this makes the arithmetic identical too. Hooks only:
    the state-dict keys do not change.
    """
    import math

    import torch.nn.functional as F
    from torch import nn

    def pads(n: int, k: int, s: int) -> tuple[int, int]:
        total = max((math.ceil(n / s) - 1) * s + k - n, 0)
        return total // 2, total - total // 2

    def hook_for(k: tuple[int, int], st: tuple[int, int], value: float):
        def hook(_mod: Any, inputs: tuple) -> tuple:
            x = inputs[0]
            top, bottom = pads(x.shape[-2], k[0], st[0])
            left, right = pads(x.shape[-1], k[1], st[1])
            return (F.pad(x, (left, right, top, bottom), value=value),)
        return hook

    for m in model.modules():
        if isinstance(m, nn.Conv2d) and max(m.stride) > 1:
            m.padding = (0, 0)
            m.register_forward_pre_hook(hook_for(m.kernel_size, m.stride, 0.0))
        elif isinstance(m, nn.MaxPool2d):
            k = m.kernel_size if isinstance(m.kernel_size, tuple) else (m.kernel_size, m.kernel_size)
            st = m.stride if isinstance(m.stride, tuple) else (m.stride, m.stride)
            if max(st) > 1:
                m.padding = 0
                m.register_forward_pre_hook(hook_for(k, st, float("-inf")))
    return model


def _arch_name(kind: str, kw: dict) -> str:
    if kind == "vit":
        return f"vit-d{kw['embed_dim']}-L{kw['depth']}-p{kw['patch_size']}-{kw['img_size']}px"
    block = "bottleneck" if kw["bottleneck"] else "basic"
    stride = f"-stem-s{kw['stem_stride']}" if kw.get("stem_stride", 1) != 1 else ""
    return f"resnet-{block}-{'-'.join(map(str, kw['layers']))}-w{kw['widths'][0]}{stride}"


def _strip_all(sd: dict, prefix: str) -> dict:
    """Remove ``prefix`` (e.g. DDP's ``module.``) when every key has it; a partial prefix is left for strict_load."""
    if sd and all(k.startswith(prefix) for k in sd):
        return {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def _drop(sd: dict, drop: tuple[str, ...]) -> tuple[dict, list[str]]:
    """Drop keys on the list (entries ending in ``.`` are prefixes, others exact names); return (kept, dropped)."""
    def listed(k: str) -> bool:
        return any(k == d or (d.endswith(".") and k.startswith(d)) for d in drop)
    return {k: v for k, v in sd.items() if not listed(k)}, [k for k in sd if listed(k)]


def _drop_head(sd: dict) -> dict:
    """Drop a classifier/projection head that some releases keep beside the backbone (``fc.*``, ``head.*``)."""
    return _drop(sd, ("fc.", "head."))[0]


# --------------------------------------------------------------------------------------------- adapters
_VIT_OPTIONS = {
    "num_heads": Option(int, 0, "attention heads; 0 infers them from the width (ViT-S/B/L/H table)", minimum=0),
    "image_size": Option(int, 0, "input size fed to the encoder; 0 uses the checkpoint's native size", minimum=0),
}


class _CheckpointAdapter(EncoderAdapter):
    """Shared loading steps: read, pick the state dict, map its keys, build, strict-load, hash.

    ``convert`` returns the backbone's state dict; keys it leaves out on purpose go to ``self.dropped`` and the
    detected file layout to ``self.layout``: both are recorded in ``LoadedEncoder.meta`` (nothing is dropped
    silently).
    """

    checkpoint_keys: ClassVar[tuple[str, ...]] = ("model", "state_dict")
    recipe: ClassVar[dict] = {}
    dropped: list[str]
    layout: str

    def checkpoint_path(self) -> Path:
        return Path(self.opts["checkpoint"])

    def state_dict(self) -> dict:
        path = self.checkpoint_path()
        self.dropped, self.layout = [], "state dict"
        return self.convert(find_state_dict(read_checkpoint(path), self.checkpoint_keys, path))

    def owner(self) -> str:
        return f"{self.name} {self.checkpoint_path().name}"

    def convert(self, sd: dict) -> dict:
        """Map the file's keys onto the backbone's (strip prefixes, drop heads)."""
        return sd

    def build(self, sd: dict) -> tuple[Any, Any, str, str, Preprocess]:
        raise NotImplementedError

    def manifest(self) -> dict:
        """The zoo.json entry of the checkpoint when it is one of the zoo's files (matched by sha256), else {}:
        a zoo file loaded through a generic adapter then runs as the zoo built it (stem stride, heads, size)."""
        if not hasattr(self, "_manifest"):
            sha = sha256_file(self.weights_file())
            self._manifest = next((e for e in zoo_manifest().get("encoders", {}).values()
                                   if e.get("sha256") == sha), {})
        return self._manifest

    def guess(self, option: str, value: Any, why: str) -> Any:
        """Record an architecture detail the weights do not carry, inferred rather than known; the run records
        it (``meta.guessed``) and prints one warning naming the option that overrides it."""
        self.guessed[option] = {"value": value, "why": why, "override": f"-o {option} N"}
        return value

    def stem_stride(self) -> int:
        """The stride of a small 3x3 ResNet stem, which the weights do not record: ``-o stem_stride``, else the
        zoo manifest's for a zoo file, else 1 (the CIFAR ResNets' convention) -- recorded as a guess."""
        explicit = int(self.opts.get("stem_stride") or 0)
        if explicit:
            return explicit
        known = self.manifest().get("arch_kwargs", {}).get("stem_stride")
        if known:
            return int(known)
        return self.guess("stem_stride", 1, "a 3x3 ResNet stem's stride is not in the weights; 1 is the CIFAR "
                                            "ResNets' convention (the zoo's own ResNets use 2)")

    def declared_size(self, kw: dict) -> int:
        """The input size the weights were pretrained at, which a run uses unless ``-o image_size N`` overrides it:
        224 for an ImageNet ResNet (7x7 stem), as every ImageNet-pretrained adapter; a zoo file's pretraining size
        (zoo.json); else 0 (the dataset's own size) for a small 3x3-stem ResNet, which has no ImageNet size --
        recorded as a guess. ViTs declare their checkpoint's size."""
        if kw.get("stem_kernel") == 7:
            return 224
        size = self.manifest().get("hyperparameters", {}).get("input_size")
        if size:
            return int(size)
        self.guess("image_size", 0, "a small-stem ResNet has no declared input size; it runs at the dataset's own "
                                    "image size")
        return 0

    def input_size(self, kw: dict) -> int:
        return self.opts.get("image_size") or self.declared_size(kw)

    def _build(self, sd: dict) -> tuple[Any, Any, str, str, Preprocess]:
        """``build``, with a state dict of another architecture named as such: the file, the adapter, the fix."""
        try:
            return self.build(sd)
        except CheckpointError as exc:
            if self.checkpoint_path().name in str(exc):
                raise
            from ..inspect_checkpoint import architecture

            kind = architecture(sd).get("kind", "unknown")
            hint = {"vit": "it holds a ViT: load it with -e dino or -e mae",
                    "resnet": "it holds a ResNet: load it with -e byol or -e dino"}.get(kind, "")
            raise CheckpointError(f"-e {self.name} cannot load {self.checkpoint_path().name}: {exc}"
                                  + (f" ({hint})" if hint else "")) from None

    def load(self) -> LoadedEncoder:
        self.guessed = {}
        sd = self.state_dict()
        backbone, features, arch, protocol, pre = self._build(sd)
        sd, filled = fill_bn_counters(backbone, sd)
        strict_load(backbone, sd, self.owner(), allowed_missing=self.allowed_missing(sd))
        meta = {"checkpoint": str(self.checkpoint_path()), "layout": self.layout}
        if self.guessed:
            meta["guessed"] = dict(self.guessed)
        if self.manifest() and not isinstance(self, _ZooMixin):
            meta["zoo_manifest"] = {"file": self.manifest().get("file"), "arch_kwargs":
                                    self.manifest().get("arch_kwargs", {}),
                                    "why": "the checkpoint is a zoo file (sha256 in zoo.json): its architecture "
                                           "details come from the manifest"}
        if self.dropped:
            meta["dropped_keys"] = summarize_dropped(self.dropped)
        if filled:  # files saved without BatchNorm's step counters (byol-convert, pre-1.0 torch): filled with 0
            meta["filled_keys"] = {"num_batches_tracked": len(filled), "value": 0,
                                   "why": "absent from the file; eval-mode BatchNorm does not read it"}
        return LoadedEncoder(module=features.eval(), preprocess=pre, arch=arch, paradigm=self.paradigm,
                             feature_protocol=protocol, weights_sha256=sha256_file(self.weights_file()),
                             augmentation=self.augmentation(), meta=meta)

    def weights_file(self) -> Path:
        """The file whose sha256 identifies the weights (the checkpoint itself, or the file inside a folder)."""
        return self.checkpoint_path()

    def allowed_missing(self, sd: dict) -> tuple[str, ...]:
        return ()

    def augmentation(self) -> dict:
        return dict(self.recipe)

    def random_init(self, seed: int) -> LoadedEncoder:
        import torch

        self.guessed = {}
        sd = self.state_dict()  # only its shapes: the architecture must be the one being evaluated
        torch.manual_seed(seed)
        backbone, features, arch, protocol, pre = self._build(sd)
        return LoadedEncoder(module=features.eval(), preprocess=pre, arch=arch, paradigm="random",
                             feature_protocol=protocol, weights_sha256=None, augmentation={},
                             meta={"random_init_seed": seed, "like": self.name})


class _ViTAdapter(_CheckpointAdapter):
    def features(self, vit: Any) -> tuple[Any, str]:
        from ..feature_heads import ViTFeatures

        return ViTFeatures(vit), "cls-after-final-norm"

    def build(self, sd: dict) -> tuple[Any, Any, str, str, Preprocess]:
        heads = self.opts["num_heads"] or int(self.manifest().get("arch_kwargs", {}).get("num_heads", 0))
        vit, kw = _build_vit(sd, heads)
        if not heads:
            self.guess("num_heads", kw["num_heads"], f"a ViT's head count is not in the weights; "
                                                     f"{kw['num_heads']} inferred from the width {kw['embed_dim']}")
        feats, protocol = self.features(vit)
        size = self.opts["image_size"] or kw["img_size"]
        return vit, feats, _arch_name("vit", kw), protocol, self.preprocess(size)

    def preprocess(self, size: int) -> Preprocess:
        return Preprocess(size, IMAGENET_MEAN, IMAGENET_STD, "bicubic")


# MAE pretraining keys that are not the encoder: exactly these, nothing else (models_mae.MaskedAutoencoderViT).
MAE_DECODER_KEYS = ("mask_token", "decoder_pos_embed", "decoder_embed.", "decoder_blocks.", "decoder_norm.",
                    "decoder_pred.")


class MAEAdapter(_ViTAdapter):
    name = "mae"
    paradigm = "RC"
    description = ("Masked autoencoder ViT (official mae_pretrain_vit_*.pth {'model': ...}, decoder dropped; "
                   "timm vit_*_patch16_224.mae weights, .pth/.bin/.safetensors)")
    version = "2"
    options = {
        "checkpoint": Option(Path, help="MAE checkpoint (.pth with a 'model' key, a plain state dict, timm's "
                             ".mae weights in .safetensors/.bin, or a Hugging Face ViTMAE folder)", must_exist=True),
        "pool": Option(str, "cls", "features: 'cls' ([CLS] after the final norm, MAE's linear probe), 'avg' "
                       "(mean of patch tokens after the final norm), 'global' (MAE fine-tuning's global pool: mean "
                       "of the last block's patch tokens before the final norm, then a fresh fc_norm LayerNorm) or "
                       "'grid' ([CLS] + patch tokens pooled to a grid x grid map)",
                       choices=("cls", "avg", "grid", "global")),
        "grid": Option(int, 2, "side of the pooled patch-token map of pool 'grid'"),
        **_VIT_OPTIONS,
    }
    recipe = MAE_RECIPE

    def state_dict(self) -> dict:
        path = self.checkpoint_path()
        if not path.is_dir():
            return super().state_dict()
        from ..checkpoints import read_hf_vit_mae

        sd, cfg, self._weights = read_hf_vit_mae(path)
        if not self.opts["num_heads"]:
            self.opts["num_heads"] = int(cfg.get("num_attention_heads", 0))
        self._ln_eps = float(cfg.get("layer_norm_eps", 1e-12))
        self.layout, self.dropped = "Hugging Face ViTMAE folder (masking disabled)", []
        return sd

    def weights_file(self) -> Path:
        return getattr(self, "_weights", None) or self.checkpoint_path()

    def build(self, sd: dict) -> tuple[Any, Any, str, str, Preprocess]:
        out = super().build(sd)
        eps = getattr(self, "_ln_eps", None)
        if eps is not None:  # HF ViTMAE uses LayerNorm eps 1e-12, timm 1e-6
            for m in out[0].modules():
                if m.__class__.__name__ == "LayerNorm":
                    m.eps = eps
        return out

    def convert(self, sd: dict) -> dict:
        sd = _strip_all(sd, "module.")
        kept, self.dropped = _drop(sd, MAE_DECODER_KEYS)
        self.layout = "MAE pretraining (encoder + decoder)" if self.dropped else "timm ViT encoder"
        extra = [k for k in kept if k.startswith(("head.", "fc_norm."))]
        if extra:
            raise CheckpointError(f"mae {self.checkpoint_path().name}: the file has a classifier ({extra[0]}): it "
                                  f"is a fine-tuned MAE, not the pretrained encoder; evaluate the pretrained "
                                  f"mae_pretrain_vit_*.pth, or use -e timm for a fine-tuned model")
        return kept

    def features(self, vit: Any) -> tuple[Any, str]:
        from ..feature_heads import ViTFeatures

        if self.opts["pool"] == "avg":
            return ViTFeatures(vit, 1, avgpool=True, cls=False), "avg-patch-tokens-after-final-norm"
        if self.opts["pool"] == "global":
            from ..feature_heads import MAEGlobalPool

            return MAEGlobalPool(vit), "mae-global-pool-patch-tokens-before-final-norm+fc_norm(w=1,b=0)"
        if self.opts["pool"] == "grid":
            g = _grid_side(vit, self.opts["grid"])
            return ViTFeatures(vit, grid=g), f"cls+patch-grid-{g}x{g}-after-final-norm"
        return ViTFeatures(vit), "cls-after-final-norm"


class DINOAdapter(_ViTAdapter):
    name = "dino"
    paradigm = "JE"
    description = ("DINO backbone (official dino_*_pretrain.pth plain state dict, ViT or ResNet-50, or a full "
                   "training checkpoint with teacher/student; DINO head dropped)")
    version = "2"
    options = {
        "checkpoint": Option(Path, help="DINO backbone or training checkpoint", must_exist=True, path_kind="file"),
        "checkpoint_key": Option(str, "teacher", "which network of a full training checkpoint",
                                 choices=("teacher", "student")),
        "n_last_blocks": Option(int, 1, "concatenate the [CLS] of the last n blocks (DINO: 4 for ViT-S, 1 for ViT-B)"),
        "avgpool": Option(bool, False, "also append the mean of the last block's patch tokens (DINO ViT-B)"),
        "stem_stride": Option(int, 0, "stride of a small 3x3 ResNet stem, which the weights do not record: 1 "
                              "(CIFAR ResNets) or 2; 0 takes the zoo manifest's for a zoo file, else 1 (a guess, "
                              "recorded and warned about)", choices=(0, 1, 2)),
        "grid": Option(int, 0, "also append the last block's patch tokens pooled to a grid x grid map (0: no)"),
        **_VIT_OPTIONS,
    }
    recipe = DINO_RECIPE

    @property
    def checkpoint_keys(self) -> tuple[str, ...]:  # type: ignore[override]
        return (self.opts["checkpoint_key"], "model", "state_dict")

    def convert(self, sd: dict) -> dict:
        sd = _strip_all(sd, "module.")
        if any(k.startswith("backbone.") for k in sd):  # a training checkpoint's teacher/student: backbone + head
            self.layout = f"DINO training checkpoint ({self.opts['checkpoint_key']})"
            sd, self.dropped = split_keys(sd, "backbone.", ("head.",), self.owner(), "DINO training")
            return sd
        self.layout = "DINO backbone"
        sd, self.dropped = _drop(sd, ("head.", "fc."))
        return sd

    def build(self, sd: dict) -> tuple[Any, Any, str, str, Preprocess]:
        if "conv1.weight" in sd:  # dino_resnet50_pretrain.pth
            vit_only = [f"-o {k} {self.opts[k]}" for k in ("n_last_blocks", "avgpool", "grid")
                        if self.opts[k] != self.options[k].default]
            if vit_only:
                raise UsageError(f"{', '.join(vit_only)} reads out a ViT, but this DINO checkpoint is a ResNet "
                                 f"(read out by global average pooling); drop the option")
            model, kw = _build_resnet(sd, self.stem_stride)
            return model, model, _arch_name("resnet", kw), "global-avgpool", self.preprocess(self.input_size(kw))
        return super().build(sd)

    def features(self, vit: Any) -> tuple[Any, str]:
        from ..feature_heads import ViTFeatures

        n, avg = self.opts["n_last_blocks"], self.opts["avgpool"]
        if n < 1 or n > len(vit.blocks):
            raise CheckpointError(f"n_last_blocks={n} but the ViT has {len(vit.blocks)} blocks; pass -o n_last_blocks 1..{len(vit.blocks)}")
        g = _grid_side(vit, self.opts["grid"]) if self.opts["grid"] else 0
        return ViTFeatures(vit, n, avg, grid=g), (f"cls-last-{n}-blocks" + ("+avgpool" if avg else "")
                                                   + (f"+patch-grid-{g}x{g}" if g else ""))


def _grid_side(vit: Any, grid: int) -> int:
    side = int(round(vit.patch_embed.num_patches ** 0.5))
    if grid < 1 or grid > side:
        raise UsageError(f"grid {grid} does not fit the ViT's {side}x{side} patch map; pass -o grid 1..{side}")
    return grid


# BYOL layouts: (name, how to recognise it, backbone prefix, keys dropped explicitly)
BYOL_LAYOUTS: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("lucidrains byol-pytorch BYOL learner", "online_encoder.net.", "online_encoder.net.",
     ("net.", "online_encoder.projector.", "online_predictor.", "target_encoder.")),
    ("lightly BYOL (backbone = nn.Sequential of resnet children)", "backbone.4.0.", "backbone.",
     ("projection_head.", "prediction_head.", "backbone_momentum.", "projection_head_momentum.")),
    ("solo-learn / Lightning BYOL", "backbone.", "backbone.",
     ("projector.", "predictor.", "classifier.", "momentum_backbone.", "momentum_projector.",
      "momentum_classifier.")),
    ("encoder-prefixed ResNet", "encoder.", "encoder.", ()),
    ("net-prefixed ResNet", "net.", "net.", ()),
)
_LIGHTLY_CHILDREN = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}
HAIKU_SUFFIXES = (".pkl", ".pickle")


class BYOLAdapter(_CheckpointAdapter):
    name = "byol"
    paradigm = "JE"
    description = ("BYOL ResNet (torchvision-layout state dict; Lightning/solo-learn or lightly 'state_dict' with "
                   "'backbone.'; lucidrains byol-pytorch 'online_encoder.net.'; official JAX/Haiku .pkl)")
    version = "2"
    options = {
        "checkpoint": Option(Path, help="BYOL ResNet checkpoint (.pth/.ckpt/.pt/.safetensors, or the official "
                             "Haiku .pkl)", must_exist=True, path_kind="file"),
        "image_size": Option(int, 0, "input size fed to the encoder; 0 uses the declared size: 224 for an ImageNet "
                             "ResNet (7x7 stem), the dataset's own size for a small 3x3-stem ResNet", minimum=0),
        "stem_stride": Option(int, 0, "stride of a small 3x3 ResNet stem, which the weights do not record: 1 "
                              "(CIFAR ResNets) or 2; 0 takes the zoo manifest's for a zoo file, else 1 (a guess, "
                              "recorded and warned about)", choices=(0, 1, 2)),
        "haiku_padding": Option(str, "same", "Haiku .pkl only: 'same' reproduces TensorFlow SAME padding of the "
                                "strided convs/max-pool (exact); 'torchvision' pads symmetrically, as the usual "
                                "converted ResNet-50 does", choices=("same", "torchvision")),
    }
    recipe = BYOL_RECIPE

    def is_haiku(self) -> bool:
        return self.checkpoint_path().suffix.lower() in HAIKU_SUFFIXES

    def state_dict(self) -> dict:
        if not self.is_haiku():
            return super().state_dict()
        path = self.checkpoint_path()
        params, state = haiku_online_tree(read_haiku_pickle(path), path)
        sd, dropped = haiku_resnet_to_torchvision(params, state, self.owner())
        self.dropped, self.layout = dropped, "BYOL JAX/Haiku pickle (online network)"
        return sd

    def convert(self, sd: dict) -> dict:
        sd = _strip_all(sd, "module.")
        if "conv1.weight" in sd:
            self.layout = "torchvision ResNet"
        else:
            for layout, marker, prefix, drop in BYOL_LAYOUTS:
                if any(k.startswith(marker) for k in sd):
                    self.layout = layout
                    sd, self.dropped = split_keys(sd, prefix, drop, self.owner(), layout)
                    if marker == "backbone.4.0.":
                        sd = {_LIGHTLY_CHILDREN.get(k.split(".", 1)[0], k.split(".", 1)[0]) + "." + k.split(".", 1)[1]: v
                              for k, v in sd.items()}
                    break
        sd, fc = _drop(sd, ("fc.",))  # the supervised classifier some releases keep: not the representation
        self.dropped += fc
        return sd

    def build(self, sd: dict) -> tuple[Any, Any, str, str, Preprocess]:
        model, kw = _build_resnet(sd, self.stem_stride)
        protocol = "global-avgpool"
        if self.is_haiku() and self.opts["haiku_padding"] == "same":
            tf_same_padding(model)
            protocol += "+tf-same-padding"
        return model, model, _arch_name("resnet", kw), protocol, Preprocess(self.input_size(kw), IMAGENET_MEAN,
                                                                            IMAGENET_STD, "bicubic")


# ------------------------------------------------------------------------------------------------ the zoo
@lru_cache(maxsize=1)
def zoo_manifest() -> dict:
    path = resources.files("jerc_eval.zoo") / "weights" / "zoo.json"
    if not path.is_file():
        return {}
    return json.loads(path.read_text())


def zoo_file(filename: str) -> Path:
    path = Path(str(resources.files("jerc_eval.zoo") / "weights" / filename))
    if not path.is_file():
        raise CheckpointError(f"zoo checkpoint {filename!r} is missing from the package; reinstall jerc-eval or "
                              f"rebuild the zoo with `python -m jerc_eval.zoo.pretrain`")
    return path


class _ZooMixin:
    """A built-in adapter bound to a checkpoint shipped with the package."""

    zoo_key: ClassVar[str]
    zoo_filename: ClassVar[str]

    def __init__(self, **options: Any):
        super().__init__(**options)  # type: ignore[call-arg]
        heads = self.entry().get("arch_kwargs", {}).get("num_heads")
        if "num_heads" in self.opts and not self.opts["num_heads"] and heads:
            self.opts["num_heads"] = int(heads)  # heads leave no trace in the weights: the manifest says

    def entry(self) -> dict:
        return zoo_manifest().get("encoders", {}).get(self.zoo_key, {})

    def manifest(self) -> dict:
        return self.entry()

    def checkpoint_path(self) -> Path:
        return zoo_file(self.zoo_filename)

    def native_size(self) -> int:
        """The input size the zoo encoder was pretrained at (zoo.json)."""
        return int(self.entry().get("hyperparameters", {}).get("input_size", 32))

    def declared_size(self, kw: dict) -> int:
        """A zoo ResNet declares the size it was pretrained at (zoo.json), as an ImageNet one declares 224."""
        return self.native_size()

    def augmentation(self) -> dict:
        return dict(self.entry().get("augmentation", {}), source="jerc-eval zoo (jerc_eval/zoo/weights/zoo.json)")


def _zoo_options(options: dict) -> dict:
    return {k: v for k, v in options.items() if k != "checkpoint"}


class ZooMAE(_ZooMixin, MAEAdapter):
    name = "zoo-mae"
    description = "Reference zoo: MAE ViT pretrained on PhotoDigits (ships with jerc-eval)"
    # the zoo MAE is read out by its [CLS] plus its patch tokens pooled to a 2x2 map: the reconstruction loss
    # trains the patch tokens, not the [CLS], and a global mean throws away where a stroke is (docs/zoo.md)
    options = {**_zoo_options(MAEAdapter.options),
               "pool": Option(str, "grid", "features: 'grid' ([CLS] + patch tokens pooled to a grid x grid map), "
                              "'avg' (mean of patch tokens after the final norm), 'global' (MAE fine-tuning's "
                              "global pool, see -e mae) or 'cls'", choices=("cls", "avg", "grid", "global"))}
    zoo_key, zoo_filename = "mae_vit_zoo", "mae_pretrain_vit_zoo.pth"


class ZooDINO(_ZooMixin, DINOAdapter):
    name = "zoo-dino"
    description = "Reference zoo: DINO ResNet pretrained on PhotoDigits (ships with jerc-eval)"
    # a ResNet, like DINO's ResNet-50 release: the ViT-only readout options stay (they fail on a ResNet with a
    # one-line error), so a zoo built with a DINO ViT loads through the same class
    options = _zoo_options(DINOAdapter.options)
    zoo_key, zoo_filename = "dino_resnet_zoo", "dino_resnetzoo_pretrain.pth"


class ZooBYOL(_ZooMixin, BYOLAdapter):
    name = "zoo-byol"
    description = "Reference zoo: BYOL ResNet pretrained on PhotoDigits (ships with jerc-eval)"
    options = _zoo_options(BYOLAdapter.options)
    zoo_key, zoo_filename = "byol_resnet_zoo", "byol_resnet_zoo.pth"


@hookimpl
def register_encoders(register: Any) -> None:
    for cls in (MAEAdapter, DINOAdapter, BYOLAdapter, ZooMAE, ZooDINO, ZooBYOL):
        register(cls)
