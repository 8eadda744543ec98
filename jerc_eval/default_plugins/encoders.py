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
from ..checkpoints import (find_state_dict, read_checkpoint, resnet_kwargs, sha256_file, strict_load, strip_prefix,
                           vit_kwargs)
from ..errors import CheckpointError
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
    return VisionTransformer(**kw), kw


def _build_resnet(sd: dict) -> tuple[Any, dict]:
    kw = resnet_kwargs(sd)
    if kw["bottleneck"]:
        import torchvision
        from torch import nn

        model = torchvision.models.resnet.ResNet(torchvision.models.resnet.Bottleneck, list(kw["layers"]))
        model.fc = nn.Identity()
        return model, kw
    from ..models import ResNet

    stem = "imagenet" if kw["stem_kernel"] == 7 else "small"
    return ResNet(layers=kw["layers"], widths=kw["widths"], stem=stem), kw


def _arch_name(kind: str, kw: dict) -> str:
    if kind == "vit":
        return f"vit-d{kw['embed_dim']}-L{kw['depth']}-p{kw['patch_size']}-{kw['img_size']}px"
    block = "bottleneck" if kw["bottleneck"] else "basic"
    return f"resnet-{block}-{'-'.join(map(str, kw['layers']))}-w{kw['widths'][0]}"


def _drop_head(sd: dict) -> dict:
    """Drop a classifier/projection head that some releases keep beside the backbone (``fc.*``, ``head.*``)."""
    return {k: v for k, v in sd.items() if not (k.startswith("fc.") or k.startswith("head."))}


# --------------------------------------------------------------------------------------------- adapters
_VIT_OPTIONS = {
    "num_heads": Option(int, 0, "attention heads; 0 infers them from the width (ViT-S/B/L/H table)"),
    "image_size": Option(int, 0, "input size fed to the encoder; 0 uses the checkpoint's native size"),
}


class _CheckpointAdapter(EncoderAdapter):
    """Shared loading steps: read, pick the state dict, build, strict-load, hash."""

    checkpoint_keys: ClassVar[tuple[str, ...]] = ("model", "state_dict")
    recipe: ClassVar[dict] = {}

    def checkpoint_path(self) -> Path:
        return Path(self.opts["checkpoint"])

    def state_dict(self) -> dict:
        path = self.checkpoint_path()
        return self.convert(find_state_dict(read_checkpoint(path), self.checkpoint_keys, path))

    def convert(self, sd: dict) -> dict:
        """Map the file's keys onto the backbone's (strip prefixes, drop heads)."""
        return sd

    def build(self, sd: dict) -> tuple[Any, Any, str, str, Preprocess]:
        raise NotImplementedError

    def load(self) -> LoadedEncoder:
        sd = self.state_dict()
        backbone, features, arch, protocol, pre = self.build(sd)
        strict_load(backbone, sd, f"{self.name} {self.checkpoint_path().name}",
                    allowed_missing=self.allowed_missing(sd))
        return LoadedEncoder(module=features.eval(), preprocess=pre, arch=arch, paradigm=self.paradigm,
                             feature_protocol=protocol, weights_sha256=sha256_file(self.checkpoint_path()),
                             augmentation=self.augmentation(), meta={"checkpoint": str(self.checkpoint_path())})

    def allowed_missing(self, sd: dict) -> tuple[str, ...]:
        return ()

    def augmentation(self) -> dict:
        return dict(self.recipe)

    def random_init(self, seed: int) -> LoadedEncoder:
        import torch

        sd = self.state_dict()  # only its shapes: the architecture must be the one being evaluated
        torch.manual_seed(seed)
        backbone, features, arch, protocol, pre = self.build(sd)
        return LoadedEncoder(module=features.eval(), preprocess=pre, arch=arch, paradigm="random",
                             feature_protocol=protocol, weights_sha256=None, augmentation={},
                             meta={"random_init_seed": seed, "like": self.name})


class _ViTAdapter(_CheckpointAdapter):
    def features(self, vit: Any) -> tuple[Any, str]:
        from ..feature_heads import ViTFeatures

        return ViTFeatures(vit), "cls-after-final-norm"

    def build(self, sd: dict) -> tuple[Any, Any, str, str, Preprocess]:
        vit, kw = _build_vit(sd, self.opts["num_heads"])
        feats, protocol = self.features(vit)
        size = self.opts["image_size"] or kw["img_size"]
        return vit, feats, _arch_name("vit", kw), protocol, self.preprocess(size)

    def preprocess(self, size: int) -> Preprocess:
        return Preprocess(size, IMAGENET_MEAN, IMAGENET_STD, "bicubic")


class MAEAdapter(_ViTAdapter):
    name = "mae"
    paradigm = "RC"
    description = "Masked autoencoder ViT (official mae_pretrain_vit_*.pth: {'model': ...}; decoder dropped)"
    version = "1"
    options = {
        "checkpoint": Option(Path, help="MAE checkpoint (.pth with a 'model' key, or a plain state dict)",
                             must_exist=True),
        "pool": Option(str, "cls", "features: 'cls' ([CLS] after the final norm, MAE's linear probe) or 'avg' "
                       "(mean of patch tokens after the final norm)", choices=("cls", "avg")),
        **_VIT_OPTIONS,
    }
    recipe = MAE_RECIPE

    def convert(self, sd: dict) -> dict:
        sd = strip_prefix(sd, "module.")
        return {k: v for k, v in sd.items() if not (k.startswith("decoder_") or k == "mask_token")}

    def features(self, vit: Any) -> tuple[Any, str]:
        from ..feature_heads import ViTFeatures

        if self.opts["pool"] == "avg":
            return ViTFeatures(vit, 1, avgpool=True, cls=False), "avg-patch-tokens-after-final-norm"
        return ViTFeatures(vit), "cls-after-final-norm"


class DINOAdapter(_ViTAdapter):
    name = "dino"
    paradigm = "JE"
    description = ("DINO backbone (official dino_*_pretrain.pth plain state dict, or a full training checkpoint "
                   "with teacher/student); ViT or ResNet")
    version = "1"
    options = {
        "checkpoint": Option(Path, help="DINO backbone or training checkpoint", must_exist=True),
        "checkpoint_key": Option(str, "teacher", "which network of a full training checkpoint",
                                 choices=("teacher", "student")),
        "n_last_blocks": Option(int, 1, "concatenate the [CLS] of the last n blocks (DINO: 4 for ViT-S, 1 for ViT-B)"),
        "avgpool": Option(bool, False, "also append the mean of the last block's patch tokens (DINO ViT-B)"),
        **_VIT_OPTIONS,
    }
    recipe = DINO_RECIPE

    @property
    def checkpoint_keys(self) -> tuple[str, ...]:  # type: ignore[override]
        return (self.opts["checkpoint_key"], "model", "state_dict")

    def convert(self, sd: dict) -> dict:
        sd = strip_prefix(strip_prefix(sd, "module."), "backbone.")
        return _drop_head(sd)

    def build(self, sd: dict) -> tuple[Any, Any, str, str, Preprocess]:
        if "conv1.weight" in sd:  # dino_resnet50_pretrain.pth
            model, kw = _build_resnet(sd)
            return model, model, _arch_name("resnet", kw), "global-avgpool", self.preprocess(self.opts["image_size"] or 224)
        return super().build(sd)

    def features(self, vit: Any) -> tuple[Any, str]:
        from ..feature_heads import ViTFeatures

        n, avg = self.opts["n_last_blocks"], self.opts["avgpool"]
        if n < 1 or n > len(vit.blocks):
            raise CheckpointError(f"n_last_blocks={n} but the ViT has {len(vit.blocks)} blocks; pass -o n_last_blocks 1..{len(vit.blocks)}")
        return ViTFeatures(vit, n, avg), f"cls-last-{n}-blocks" + ("+avgpool" if avg else "")


class BYOLAdapter(_CheckpointAdapter):
    name = "byol"
    paradigm = "JE"
    description = ("BYOL ResNet (torchvision-layout state dict; Lightning/solo-learn 'state_dict' with 'backbone.'; "
                   "lucidrains byol-pytorch 'online_encoder.net.')")
    version = "1"
    options = {
        "checkpoint": Option(Path, help="BYOL ResNet checkpoint", must_exist=True),
        "image_size": Option(int, 0, "input size fed to the encoder; 0 means the dataset's native size"),
    }
    recipe = BYOL_RECIPE

    def convert(self, sd: dict) -> dict:
        for prefix in ("module.", "online_encoder.net.", "backbone.", "encoder.", "net."):
            if any(k.startswith(prefix) for k in sd) and not any(k.startswith("conv1.") for k in sd):
                sd = strip_prefix(sd, prefix)
        return _drop_head(sd)

    def build(self, sd: dict) -> tuple[Any, Any, str, str, Preprocess]:
        model, kw = _build_resnet(sd)
        return model, model, _arch_name("resnet", kw), "global-avgpool", self.preprocess()

    def preprocess(self) -> Preprocess:
        return Preprocess(self.opts["image_size"] or 0, IMAGENET_MEAN, IMAGENET_STD, "bicubic")


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

    def checkpoint_path(self) -> Path:
        return zoo_file(self.zoo_filename)

    def augmentation(self) -> dict:
        entry = zoo_manifest().get("encoders", {}).get(self.zoo_key, {})
        return dict(entry.get("augmentation", {}), source="jerc-eval zoo (jerc_eval/zoo/weights/zoo.json)")


def _zoo_options(options: dict) -> dict:
    return {k: v for k, v in options.items() if k != "checkpoint"}


class ZooMAE(_ZooMixin, MAEAdapter):
    name = "zoo-mae"
    description = "Reference zoo: MAE ViT pretrained on PhotoDigits (ships with jerc-eval)"
    options = _zoo_options(MAEAdapter.options)
    zoo_key, zoo_filename = "mae", "mae_pretrain_vit_zoo.pth"


class ZooDINO(_ZooMixin, DINOAdapter):
    name = "zoo-dino"
    description = "Reference zoo: DINO ViT pretrained on PhotoDigits (ships with jerc-eval)"
    options = _zoo_options(DINOAdapter.options)
    zoo_key, zoo_filename = "dino", "dino_vitzoo_pretrain.pth"


class ZooBYOL(_ZooMixin, BYOLAdapter):
    name = "zoo-byol"
    description = "Reference zoo: BYOL ResNet pretrained on PhotoDigits (ships with jerc-eval)"
    options = _zoo_options(BYOLAdapter.options)
    zoo_key, zoo_filename = "byol", "byol_resnet_zoo.pth"

    def preprocess(self) -> Preprocess:
        return Preprocess(self.opts["image_size"] or 64, IMAGENET_MEAN, IMAGENET_STD, "bicubic")


@hookimpl
def register_encoders(register: Any) -> None:
    for cls in (MAEAdapter, DINOAdapter, BYOLAdapter, ZooMAE, ZooDINO, ZooBYOL):
        register(cls)
