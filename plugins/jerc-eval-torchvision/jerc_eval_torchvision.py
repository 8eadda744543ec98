"""jerc-eval plugin: torchvision models, local torch.hub directories and your own model code as encoders.

- ``torchvision``: any ``torchvision.models`` name, built with ``weights=None`` (torchvision's download is never
  used) and loaded strictly from a local state dict; the classifier's last Linear is replaced by identity, so the
  features are the penultimate activations (ResNet: global average pool).
- ``hub``: ``torch.hub.load(DIR, ENTRY, source="local")`` on a local directory with a ``hubconf.py`` (a clone, or
  ``~/.cache/torch/hub/OWNER_REPO_REF``), then an optional local checkpoint. A GitHub id ``OWNER/REPO[:REF]``
  works online (with ``-o trust_repo true``) and fails at once offline (exit code 8).
- ``factory``: ``module:callable`` (or ``path/to/file.py:callable``) returning an ``nn.Module`` whose output is
  the feature vector, plus a checkpoint: for custom code.

Checkpoints are read weights-only (the core's ``read_checkpoint``), found under ``model``/``state_dict``/...,
DDP's ``module.`` is stripped, and ``-o prefix backbone.`` / ``-o drop projector.,predictor.`` select the
backbone out of a training checkpoint; anything else unexpected is an error.
"""
from __future__ import annotations

import ast
import contextlib
import difflib
import importlib
import json
import os
import sys
from pathlib import Path
from typing import Any, ClassVar

from jerc_eval.api import EncoderAdapter, LoadedEncoder, Option, Preprocess
from jerc_eval.checkpoints import find_state_dict, read_checkpoint, sha256_file, split_keys, strict_load
from jerc_eval.errors import OfflineError, UsageError
from jerc_eval.hookspecs import hookimpl

__version__ = "0.1.0"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
STATE_DICT_KEYS = ("state_dict", "model", "teacher", "model_ema", "state_dict_ema", "net", "network")
CLASSIFIER_ATTRS = ("fc", "heads", "head", "classifier")


def offline_reason(host: str = "github.com") -> str | None:
    """Why the hub cannot be reached (see jerc_eval.offline), else None."""
    from jerc_eval.offline import offline_reason as check

    return check(host)


def _json_kwargs(owner: str, raw: str) -> dict:
    try:
        kw = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise UsageError(f"option kwargs of {owner} is not JSON ({exc.msg}); pass e.g. -o kwargs '{{\"a\": 1}}'") from None
    if not isinstance(kw, dict):
        raise UsageError(f"option kwargs of {owner} must be a JSON object, e.g. '{{\"a\": 1}}'")
    return kw


_COMMON = {
    "paradigm": Option(str, help="pretraining paradigm: JE (joint embedding), RC (reconstruction) or SL "
                       "(supervised)", choices=("JE", "RC", "SL")),
    "image_size": Option(int, 224, "input size fed to the encoder"),
    "interpolation": Option(str, "bilinear", "resize interpolation", choices=("bilinear", "bicubic", "nearest")),
    "prefix": Option(str, "", "keep only the checkpoint keys under this prefix (removed), e.g. backbone."),
    "drop": Option(str, "", "comma-separated key prefixes to drop explicitly, e.g. projector.,predictor."),
}


class _LocalModelAdapter(EncoderAdapter):
    """Shared steps: build (subclass), optionally load a local checkpoint strictly, wrap, hash."""

    needs_checkpoint: ClassVar[bool] = True

    def build(self) -> tuple[Any, str, str, list[str]]:
        """(module, arch, feature protocol, state-dict keys of removed classifier layers)."""
        raise NotImplementedError

    def owner(self) -> str:
        ckpt = self.opts.get("checkpoint")
        return f"{self.name} {Path(ckpt).name}" if ckpt else self.name

    def read_weights(self, path: Path, removed: list[str]) -> tuple[dict, list[str]]:
        sd = find_state_dict(read_checkpoint(path), STATE_DICT_KEYS, path)
        if all(k.startswith("module.") for k in sd):
            sd = {k[len("module."):]: v for k, v in sd.items()}
        drop = tuple(d.strip() for d in self.opts["drop"].split(",") if d.strip())
        dropped: list[str] = []
        if self.opts["prefix"]:
            sd, dropped = split_keys(sd, self.opts["prefix"], drop, self.owner(), f"{self.opts['prefix']}*")
        elif drop:
            dropped = [k for k in sd if k.startswith(drop)]
            sd = {k: v for k, v in sd.items() if not k.startswith(drop)}
        head = [k for k in sd if k in removed]
        return {k: v for k, v in sd.items() if k not in removed}, dropped + head

    def preprocess(self) -> Preprocess:
        return Preprocess(self.opts["image_size"], IMAGENET_MEAN, IMAGENET_STD, self.opts["interpolation"])

    def load(self) -> LoadedEncoder:
        path = self.opts.get("checkpoint")
        if path is None and self.needs_checkpoint:
            raise UsageError(f"encoder {self.name!r} needs -o checkpoint FILE (weights are never random silently)")
        module, arch, protocol, removed = self.build()
        meta: dict[str, Any] = {}
        sha = None
        if path is not None:
            sd, dropped = self.read_weights(Path(path), removed)
            strict_load(module, sd, self.owner())
            sha = sha256_file(path)
            meta = {"checkpoint": str(path)}
            if dropped:
                meta["dropped_keys"] = dropped[:20]
        else:
            sha = self.builtin_weights_sha(module)
            meta = {"weights": "from the hub entry itself"}
        check_output(module, self.preprocess().input_size, self.owner())
        return LoadedEncoder(module=module.eval(), preprocess=self.preprocess(), arch=arch,
                             paradigm=self.opts["paradigm"], feature_protocol=protocol, weights_sha256=sha, meta=meta)

    def builtin_weights_sha(self, module: Any) -> str:
        from jerc_eval.checkpoints import sha256_state_dict

        return sha256_state_dict(module.state_dict())

    def random_init(self, seed: int) -> LoadedEncoder | None:
        import torch

        torch.manual_seed(seed)
        module, arch, protocol, _ = self.build()
        return LoadedEncoder(module=module.eval(), preprocess=self.preprocess(), arch=arch, paradigm="random",
                             feature_protocol=protocol, weights_sha256=None,
                             meta={"random_init_seed": seed, "like": self.name})


def check_output(module: Any, size: int, owner: str) -> None:
    """One forward on a blank image: the encoder must return a (1, ...) tensor (features), not a dict/tuple."""
    import torch

    was = module.training
    module.eval()
    with torch.inference_mode():
        out = module(torch.zeros(1, 3, size, size))
    module.train(was)
    if not isinstance(out, torch.Tensor) or out.shape[0] != 1:
        raise UsageError(f"{owner}: the model returns {type(out).__name__}, not a (batch, features) tensor; wrap it "
                         f"so that forward(images) returns the feature tensor")


def replace_classifier(model: Any) -> tuple[str, list[str]]:
    """Replace the last Linear of ``fc``/``heads``/``head``/``classifier`` by identity; (protocol, removed keys)."""
    from torch import nn

    for attr in CLASSIFIER_ATTRS:
        head = getattr(model, attr, None)
        if not isinstance(head, nn.Module):
            continue
        if isinstance(head, nn.Linear):
            setattr(model, attr, nn.Identity())
            return f"penultimate ({attr} -> identity)", [f"{attr}.weight", f"{attr}.bias"]
        linears = [(n, m) for n, m in head.named_modules() if isinstance(m, nn.Linear)]
        if linears:
            name, _ = linears[-1]
            parent = head.get_submodule(name.rsplit(".", 1)[0]) if "." in name else head
            setattr(parent, name.rsplit(".", 1)[-1], nn.Identity())
            full = f"{attr}.{name}"
            return f"penultimate ({full} -> identity)", [f"{full}.weight", f"{full}.bias"]
    return "model output (no classifier found)", []


class TorchvisionEncoder(_LocalModelAdapter):
    name = "torchvision"
    paradigm = "SL"
    description = "Any torchvision.models architecture + a local state dict (classifier -> identity; never downloads)"
    version = "1"
    options = {
        "model": Option(str, help="torchvision.models name, e.g. resnet50, vit_b_16, convnext_tiny"),
        "checkpoint": Option(Path, help="local state dict (.pth/.pt/.safetensors; 'state_dict'/'model' keys ok)",
                             must_exist=True),
        **_COMMON,
    }

    def build(self) -> tuple[Any, str, str, list[str]]:
        import torchvision

        names = torchvision.models.list_models(module=torchvision.models)
        name = self.opts["model"]
        if name not in names:
            close = difflib.get_close_matches(name, names, n=1)
            hint = f" Did you mean: {close[0]}?" if close else ""
            raise UsageError(f"torchvision has no classification model {name!r}.{hint} See "
                             f"torchvision.models.list_models()")
        model = torchvision.models.get_model(name, weights=None)
        protocol, removed = replace_classifier(model)
        return model, f"torchvision:{name}", protocol, removed


def _hub_entries(hubconf: Path) -> dict[str, list[str]]:
    """Top-level public functions of a hubconf.py and their parameter names (parsed, not executed)."""
    try:
        tree = ast.parse(hubconf.read_text(), filename=str(hubconf))
    except SyntaxError as exc:
        raise UsageError(f"{hubconf} does not parse ({exc.msg}, line {exc.lineno})") from None
    out = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
            a = node.args
            out[node.name] = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs]
    return out


@contextlib.contextmanager
def no_hub_downloads(owner: str):
    """Make torch.hub's download helpers fail loudly while a local entry runs (weights come from -o checkpoint)."""
    import torch.hub as hub

    def refuse(url: str, *args: Any, **kwargs: Any) -> Any:
        raise UsageError(f"{owner}: the hub entry tried to download {url}; pass -o kwargs '{{\"pretrained\": "
                         f"false}}' (or the entry's own switch) and the weights with -o checkpoint FILE")

    saved = hub.load_state_dict_from_url, hub.download_url_to_file
    hub.load_state_dict_from_url, hub.download_url_to_file = refuse, refuse
    try:
        yield
    finally:
        hub.load_state_dict_from_url, hub.download_url_to_file = saved


class HubEncoder(_LocalModelAdapter):
    name = "hub"
    paradigm = "JE"
    description = "torch.hub entry from a LOCAL directory with hubconf.py (GitHub ids only online) + checkpoint"
    version = "1"
    needs_checkpoint = False
    options = {
        "repo": Option(str, help="local directory holding hubconf.py, or OWNER/REPO[:REF] on GitHub (online only)"),
        "entry": Option(str, help="hubconf entry point, e.g. dino_vits16"),
        "checkpoint": Option(Path, None, "local weights loaded strictly after the entry builds the model; without "
                             "it the entry must load its own weights from local files", must_exist=True),
        "kwargs": Option(str, "{}", "JSON object of keyword arguments for the entry"),
        "trust_repo": Option(bool, False, "GitHub ids only: allow running that repository's hubconf.py",
                             affects_result=False),
        **_COMMON,
    }

    def cache_parts(self) -> dict[str, Any]:
        """A local hub repository's code (hubconf.py and the files beside it) is part of the features' key."""
        local = Path(self.opts["repo"]).expanduser()
        return {"repo": Path(local)} if local.is_dir() else {}

    def build(self) -> tuple[Any, str, str, list[str]]:
        import torch

        repo, entry = self.opts["repo"], self.opts["entry"]
        kw = _json_kwargs("encoder 'hub'", self.opts["kwargs"])
        local = Path(repo).expanduser()
        if local.is_dir():
            hubconf = local / "hubconf.py"
            if not hubconf.is_file():
                raise UsageError(f"{repo!r} has no hubconf.py; pass the directory of a torch.hub repository")
            entries = _hub_entries(hubconf)
            if entry not in entries:
                close = difflib.get_close_matches(entry, list(entries), n=1)
                hint = f" Did you mean: {close[0]}?" if close else ""
                raise UsageError(f"{hubconf} has no entry {entry!r}.{hint} Entries: {', '.join(sorted(entries))}")
            if self.opts["checkpoint"] is not None and "pretrained" in entries[entry] and "pretrained" not in kw:
                kw["pretrained"] = False  # the weights come from -o checkpoint, not from the entry's URL
            with no_hub_downloads(self.owner()):
                model = torch.hub.load(str(local), entry, source="local", **kw)
            where = f"hub:{local.name}:{entry}"
        else:
            if "/" not in repo or repo.startswith((".", "/", "~")):
                raise UsageError(f"hub repo {repo!r} is neither a local directory nor OWNER/REPO[:REF]")
            reason = offline_reason()
            if reason:
                cache = Path(torch.hub.get_dir()) / repo.replace("/", "_").replace(":", "_")
                raise OfflineError(f"torch.hub id {repo!r} needs GitHub but this machine is offline ({reason}); "
                                   f"pass a local clone instead: -o repo DIR (a previous download lives in "
                                   f"{cache}_<ref>) and the weights with -o checkpoint FILE")
            if not self.opts["trust_repo"]:
                raise UsageError(f"running {repo!r}'s hubconf.py executes its code; confirm with -o trust_repo true")
            if self.opts["checkpoint"] is not None and "pretrained" not in kw:
                kw["pretrained"] = False
            model = torch.hub.load(repo, entry, source="github", trust_repo=True, **kw)
            where = f"hub:{repo}:{entry}"
        if not isinstance(model, torch.nn.Module):
            raise UsageError(f"hub entry {entry!r} returned {type(model).__name__}, not a torch.nn.Module")
        return model, where, "hub entry output", []


def import_callable(spec: str) -> Any:
    """``package.module:function`` or ``path/to/file.py:function``."""
    if ":" not in spec:
        raise UsageError(f"factory {spec!r} must be MODULE:CALLABLE, e.g. mypkg.models:build_encoder")
    mod_name, _, attr = spec.rpartition(":")
    if mod_name.endswith(".py") or "/" in mod_name or os.sep in mod_name:
        path = Path(mod_name)
        if not path.is_file():
            raise UsageError(f"factory file {mod_name!r} does not exist")
        from jerc_eval.plugins import import_file

        module = import_file(path, "jerc_eval_factory")
    else:
        added = os.getcwd() not in sys.path
        if added:
            sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(mod_name)
        except ImportError as exc:
            raise UsageError(f"cannot import {mod_name!r} for the factory ({exc}); install it or run from its "
                             f"directory") from None
        finally:
            if added:
                sys.path.remove(os.getcwd())
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise UsageError(f"{mod_name!r} has no callable {attr!r}")
    return fn


class FactoryEncoder(_LocalModelAdapter):
    name = "factory"
    paradigm = "JE"
    description = "Your own code: MODULE:CALLABLE returning an nn.Module (image -> features) + a local checkpoint"
    version = "1"
    options = {
        "callable": Option(str, help="MODULE:CALLABLE or path/to/file.py:CALLABLE returning an nn.Module"),
        "checkpoint": Option(Path, help="local weights for the module", must_exist=True),
        "kwargs": Option(str, "{}", "JSON object of keyword arguments for the callable"),
        **_COMMON,
    }

    def cache_parts(self) -> dict[str, Any]:
        """The content of a path/to/file.py:CALLABLE file is part of the features' key (an edit refreshes it)."""
        file = self.opts["callable"].rsplit(":", 1)[0]
        return {"callable_file": Path(file)} if file.endswith(".py") and Path(file).is_file() else {}

    def build(self) -> tuple[Any, str, str, list[str]]:
        from torch import nn

        fn = import_callable(self.opts["callable"])
        model = fn(**_json_kwargs("encoder 'factory'", self.opts["kwargs"]))
        if not isinstance(model, nn.Module):
            raise UsageError(f"{self.opts['callable']} returned {type(model).__name__}, not a torch.nn.Module")
        return model, f"factory:{self.opts['callable']}", "factory module output", []


@hookimpl
def register_encoders(register: Any) -> None:
    for cls in (TorchvisionEncoder, HubEncoder, FactoryEncoder):
        register(cls)
