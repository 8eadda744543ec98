"""A ready ``torch.nn.Module`` as an encoder, for notebooks: ``jerc_eval.evaluate(modules={...})``.

    import jerc_eval
    enc = jerc_eval.ModuleEncoder(my_backbone, paradigm="JE", input_size=224)
    results = jerc_eval.evaluate(modules={"mine": enc}, corruptions=["noise"])

The module maps normalised (B, 3, S, S) float tensors to (B, D) features (or anything that flattens to that).
Its weights are identified by the sha256 of its state dict, its architecture by its class, its source file and
its ``repr``: all of it is in the feature-cache key.
"""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from .api import EncoderAdapter, LoadedEncoder, Preprocess
from .errors import UsageError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ModuleEncoder(EncoderAdapter):
    name = "module"
    description = "A ready torch.nn.Module given to jerc_eval.evaluate(modules={alias: ModuleEncoder(...)})"
    version = "1"

    def __init__(self, module: Any, paradigm: str, input_size: int = 0, mean: tuple = IMAGENET_MEAN,
                 std: tuple = IMAGENET_STD, interpolation: str = "bicubic", augmentation: dict | None = None):
        import torch

        super().__init__()
        if not isinstance(module, torch.nn.Module):
            raise UsageError(f"ModuleEncoder needs a torch.nn.Module, not {type(module).__name__}")
        if paradigm not in ("JE", "RC", "SL"):
            raise UsageError(f"paradigm {paradigm!r} of ModuleEncoder must be JE, RC or SL")
        if input_size < 0 or interpolation not in ("bilinear", "bicubic", "nearest"):
            raise UsageError("ModuleEncoder needs input_size >= 0 (0: the dataset's size) and interpolation "
                             "bilinear, bicubic or nearest")
        self.module = module
        self.paradigm = paradigm
        self.opts = {"paradigm": paradigm, "input_size": int(input_size), "mean": tuple(mean), "std": tuple(std),
                     "interpolation": interpolation}
        self._augmentation = dict(augmentation or {})

    def cache_parts(self) -> dict[str, Any]:
        cls = type(self.module)
        try:
            source = Path(inspect.getfile(cls))
        except (TypeError, OSError):
            source = None
        return {"class": f"{cls.__module__}.{cls.__qualname__}", "structure": repr(self.module),
                "source": source if source and source.is_file() else None}

    def _preprocess(self) -> Preprocess:
        o = self.opts
        return Preprocess(o["input_size"], o["mean"], o["std"], o["interpolation"])

    def _arch(self) -> str:
        return f"module:{type(self.module).__qualname__}"

    def load(self) -> LoadedEncoder:
        from .checkpoints import sha256_state_dict

        return LoadedEncoder(module=self.module.eval(), preprocess=self._preprocess(), arch=self._arch(),
                             paradigm=self.paradigm, feature_protocol="module output (flattened)",
                             weights_sha256=sha256_state_dict(self.module.state_dict()),
                             augmentation=self._augmentation, meta={"source": "jerc_eval.evaluate(modules=...)"})

    def random_init(self, seed: int) -> LoadedEncoder | None:
        """A copy with every layer's ``reset_parameters()`` run under ``seed``; None when no layer has one."""
        import copy

        import torch

        twin = copy.deepcopy(self.module)
        layers = [m for m in twin.modules() if callable(getattr(m, "reset_parameters", None))]
        if not layers:
            return None
        torch.manual_seed(seed)
        for m in layers:
            m.reset_parameters()
        return LoadedEncoder(module=twin.eval(), preprocess=self._preprocess(), arch=self._arch(),
                             paradigm="random", feature_protocol="module output (flattened)", weights_sha256=None,
                             meta={"random_init_seed": seed, "like": "module"})
