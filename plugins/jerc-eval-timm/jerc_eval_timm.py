"""jerc-eval plugin: any timm model as an encoder (``-e timm -o model ID``).

Features are timm's own pre-logits: ``model.forward_head(model.forward_features(x), pre_logits=True)`` with the
classifier removed (``reset_classifier(0)``), so each architecture pools the way its authors defined (``[CLS]``
after the final norm, global average, ...). Preprocessing (input size, mean/std, interpolation) comes from the
model's ``pretrained_cfg``. Weights come from a local file (never a silent download), or from the Hugging Face
Hub for ``hf-hub:`` ids when online; offline such an id fails at once with exit code 8.

timm is imported only when an encoder loads: without it the plugin still registers, and using it says
``pip install timm``.
"""
from __future__ import annotations

import difflib
import json
import sys
from pathlib import Path
from typing import Any

from jerc_eval.api import EncoderAdapter, LoadedEncoder, Option, Preprocess
from jerc_eval.checkpoints import find_state_dict, read_checkpoint, sha256_file, sha256_state_dict, strict_load
from jerc_eval.errors import CheckpointError, OfflineError, PluginError, UsageError
from jerc_eval.hookspecs import hookimpl

__version__ = "0.1.0"

HUB_PREFIX = "hf-hub:"
# pretrained tags -> paradigm (``-o paradigm auto``); the first matching fragment wins
TAG_PARADIGMS = (("mae", "RC"), ("beit", "RC"), ("eva", "RC"), ("simmim", "RC"),
                 ("dinov2", "JE"), ("dino", "JE"), ("ibot", "JE"), ("byol", "JE"), ("simclr", "JE"), ("moco", "JE"),
                 ("swav", "JE"), ("barlow", "JE"), ("vicreg", "JE"), ("ijepa", "JE"), ("jepa", "JE"),
                 ("in1k", "SL"), ("in21k", "SL"), ("in22k", "SL"), ("augreg", "SL"), ("tv_", "SL"), ("a1_", "SL"),
                 ("clip", "SL"), ("laion", "SL"), ("openai", "SL"))


def import_timm() -> Any:
    try:
        import timm
    except ImportError:
        raise PluginError("the timm encoder needs timm: pip install timm") from None
    return timm


def offline_reason(host: str = "huggingface.co") -> str | None:
    """Why the hub cannot be reached (see jerc_eval.offline), else None."""
    from jerc_eval.offline import offline_reason as check

    return check(host)


def paradigm_from_tag(model_id: str, tag: str | None) -> str | None:
    text = f"{model_id} {tag or ''}".lower()
    for fragment, paradigm in TAG_PARADIGMS:
        if fragment in text:
            return paradigm
    return None


def _prelogits_module(model: Any) -> Any:
    from torch import nn

    class TimmPreLogits(nn.Module):
        def __init__(self, m: Any):
            super().__init__()
            self.model = m

        def forward(self, x: Any) -> Any:
            return self.model.forward_head(self.model.forward_features(x), pre_logits=True)

    return TimmPreLogits(model)


class TimmEncoder(EncoderAdapter):
    name = "timm"
    paradigm = "SL"
    description = "Any timm model: local weights (or hf-hub: ids online); timm pre-logits features"
    version = "1"
    options = {
        "model": Option(str, help="timm model id (e.g. vit_base_patch16_224.mae) or hf-hub:ORG/NAME"),
        "checkpoint": Option(Path, None, "local weights (.pth/.bin/.safetensors); required unless model is an "
                             "hf-hub: id", must_exist=True),
        "paradigm": Option(str, "auto", "JE, RC or SL; auto infers it from the pretrained tag (mae -> RC, dino "
                           "-> JE, in1k -> SL ...)", choices=("auto", "JE", "RC", "SL")),
        "image_size": Option(int, 0, "input size; 0 uses the model's pretrained_cfg input_size"),
        "model_kwargs": Option(str, "{}", "JSON object of extra timm.create_model arguments, e.g. "
                               "'{\"img_size\": 112}'"),
    }

    # ------------------------------------------------------------------------------------------ helpers
    def _kwargs(self) -> dict:
        try:
            kw = json.loads(self.opts["model_kwargs"])
        except json.JSONDecodeError as exc:
            raise UsageError(f"option model_kwargs of encoder 'timm' is not JSON ({exc.msg}); pass e.g. "
                             f"-o model_kwargs '{{\"img_size\": 112}}'") from None
        if not isinstance(kw, dict):
            raise UsageError("option model_kwargs of encoder 'timm' must be a JSON object, e.g. '{\"img_size\": 112}'")
        return kw

    def _is_hub(self) -> bool:
        return self.opts["model"].startswith(HUB_PREFIX)

    def _create(self, pretrained: bool) -> Any:
        timm = import_timm()
        model_id = self.opts["model"]
        if self._is_hub():
            reason = offline_reason()
            if reason:
                raise OfflineError(f"timm model {model_id!r} needs the Hugging Face Hub but this machine is "
                                   f"offline ({reason}); download the weights elsewhere and pass the local file: "
                                   f"-o model {model_id[len(HUB_PREFIX):].split('/')[-1]} -o checkpoint FILE")
        try:
            model = timm.create_model(model_id, pretrained=pretrained, **self._kwargs())
            if self._needs_dynamic_size(model):  # a ViT fed another size: position embeddings interpolated
                model = timm.create_model(model_id, pretrained=pretrained,
                                          **{**self._kwargs(), "dynamic_img_size": True})
            return model
        except RuntimeError as exc:
            if "Unknown model" in str(exc):
                base = model_id.split(".")[0]
                close = difflib.get_close_matches(base, timm.list_models(), n=1)
                hint = f" Did you mean: {close[0]}?" if close else ""
                raise UsageError(f"timm has no model {model_id!r}.{hint} List them with "
                                 f"python -c \"import timm; print(timm.list_models('*vit*'))\"") from None
            raise
        except OSError as exc:  # huggingface_hub connection / cache errors
            raise OfflineError(f"could not fetch {model_id!r} from the Hub ({str(exc).splitlines()[0][:120]}); "
                               f"pass a local file with -o checkpoint FILE") from None
        except TypeError as exc:
            raise UsageError(f"timm.create_model({model_id!r}) rejected model_kwargs ({exc})") from None

    def _needs_dynamic_size(self, model: Any) -> bool:
        """A ViT asked for an input size (-o image_size) other than the one it was built for (its default, or
        model_kwargs' img_size) and not told how to handle it (model_kwargs' dynamic_img_size)."""
        size, kw = self.opts["image_size"], self._kwargs()
        native = getattr(getattr(model, "patch_embed", None), "img_size", None)
        if not size or native is None or "dynamic_img_size" in kw:
            return False
        return tuple(native) != (size, size)

    def _features(self, model: Any, weights_sha: str | None, paradigm: str, meta: dict) -> LoadedEncoder:
        cfg = dict(getattr(model, "pretrained_cfg", None) or {})
        size = self.opts["image_size"] or int((cfg.get("input_size") or (3, 224, 224))[-1])
        interp = cfg.get("interpolation", "bicubic")
        pre = Preprocess(size, tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
                         tuple(cfg.get("std", (0.229, 0.224, 0.225))),
                         interp if interp in ("bilinear", "bicubic", "nearest") else "bicubic")
        pool = getattr(model, "global_pool", None)
        protocol = "timm-pre-logits" + (f"(global_pool={pool})" if isinstance(pool, str) else "")
        arch = cfg.get("architecture") or self.opts["model"].split(".")[0]
        meta = {"model": self.opts["model"], "pretrained_tag": cfg.get("tag"), "crop_pct_ignored": cfg.get("crop_pct"),
                **meta}
        if getattr(model, "dynamic_img_size", False) and "dynamic_img_size" not in self._kwargs():
            meta["dynamic_img_size"] = (f"-o image_size {size}: the position embeddings are interpolated from the "
                                        f"model's {tuple(model.patch_embed.img_size)} grid at run time (timm)")
        return LoadedEncoder(module=_prelogits_module(model).eval(), preprocess=pre, arch=f"timm:{arch}",
                             paradigm=paradigm, feature_protocol=protocol, weights_sha256=weights_sha, meta=meta)

    def _paradigm(self, model: Any) -> str:
        if self.opts["paradigm"] != "auto":
            return self.opts["paradigm"]
        tag = (getattr(model, "pretrained_cfg", None) or {}).get("tag")
        found = paradigm_from_tag(self.opts["model"], tag)
        if found is None:
            raise UsageError(f"cannot tell the pretraining paradigm of timm model {self.opts['model']!r} (tag "
                             f"{tag!r}); pass -o paradigm JE, RC or SL")
        return found

    @staticmethod
    def _drop_classifier(model: Any) -> list[str]:
        """Remove the classifier (``reset_classifier(0)``); return the state-dict keys it had."""
        before = set(model.state_dict())
        model.reset_classifier(0)
        return sorted(before - set(model.state_dict()))

    # --------------------------------------------------------------------------------------------- load
    def load(self) -> LoadedEncoder:
        path = self.opts["checkpoint"]
        if path is None and not self._is_hub():
            raise UsageError(f"encoder 'timm' needs -o checkpoint FILE for {self.opts['model']!r} (only hf-hub: ids "
                             f"download weights); timm's own download is never used silently")
        if path is None:  # hf-hub: id, online
            model = self._create(pretrained=True)
            self._drop_classifier(model)
            return self._features(model, sha256_state_dict(model.state_dict()), self._paradigm(model),
                                  {"source": "hf-hub"})
        model = self._create(pretrained=False)
        head_keys = self._drop_classifier(model)
        owner = f"timm {Path(path).name}"
        raw = find_state_dict(read_checkpoint(path), ("state_dict_ema", "model_ema", "model", "state_dict"), path)
        if raw and all(k.startswith("module.") for k in raw):
            raw = {k[len("module."):]: v for k, v in raw.items()}
        sd = {k: v for k, v in raw.items() if k not in head_keys}
        dropped = sorted(set(raw) - set(sd))
        try:
            strict_load(model, sd, owner)
        except CheckpointError as first:
            filter_fn = getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)
            if filter_fn is None:
                raise
            try:  # the original release's layout (e.g. official MAE/DINO keys), converted by timm itself
                converted = {k: v for k, v in filter_fn(dict(raw), model).items() if k not in head_keys}
                strict_load(model, converted, owner)
            except Exception:
                raise first from None
            dropped = sorted(set(raw) - set(converted))
        meta = {"checkpoint": str(path), "dropped_keys": dropped[:20]} if dropped else {"checkpoint": str(path)}
        return self._features(model, sha256_file(path), self._paradigm(model), meta)

    def random_init(self, seed: int) -> LoadedEncoder | None:
        if self._is_hub():
            return None  # building the architecture would need the Hub's config
        import torch

        torch.manual_seed(seed)
        model = self._create(pretrained=False)
        self._drop_classifier(model)
        return self._features(model, None, "random", {"random_init_seed": seed, "like": self.name})


@hookimpl
def register_encoders(register: Any) -> None:
    register(TimmEncoder)
