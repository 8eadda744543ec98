"""Run configuration: defaults < config file (TOML or YAML) < command-line flags. Unknown keys are errors."""
from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UsageError


@dataclass
class RunConfig:
    # what to evaluate: the zoo's reconstruction encoder against its two joint-embedding encoders
    encoders: list[str] = field(default_factory=lambda: ["zoo-mae", "zoo-dino", "zoo-byol"])
    # per-encoder typed options, e.g. {"mae": {"checkpoint": "mae_pretrain_vit_base.pth"}}
    encoder_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    # the embedded default needs no download
    dataset: str = "photodigits"
    dataset_options: dict[str, Any] = field(default_factory=dict)
    suite: str = "imagenet-c"
    suite_options: dict[str, Any] = field(default_factory=dict)
    # corruption code: "reference" (imagecorruptions, CPU process pool) or "fast" (batched torch, GPU when present)
    backend: str = "reference"
    # corruption names or family names (noise, blur, weather, digital, extra); empty means the suite's default
    corruptions: list[str] = field(default_factory=list)
    # add the suite's 4 extra corruptions (never part of mCE) to the default 15
    extra: bool = False
    severities: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5])
    probe: str = "logreg"
    probe_options: dict[str, Any] = field(default_factory=dict)
    # "clean": one probe fit on clean train features (how a released encoder holds up); "matched": a probe per
    # corruption and severity, fit on the train split under that corruption (the paper's Table 1 reading)
    probe_fit_on: str = "clean"
    reporters: list[str] = field(default_factory=lambda: ["json", "markdown", "html"])
    # every random draw (corruptions, probe split, random-init floors) derives from this
    seed: int = 0
    batch_size: int = 256
    # corruption processes; 0 uses every available core
    workers: int = 0
    # "auto" picks CUDA when present, else the CPU
    device: str = "auto"
    out: str = "jerc-eval-results"
    # where features and rendered datasets are cached; empty means $JERC_EVAL_CACHE or ~/.cache/jerc-eval
    cache_dir: str = ""
    no_cache: bool = False
    # estimate noise/augmentation spectra and alignment per corruption (the theory side of the recommendation)
    alignment: bool = True
    # also probe a random-initialised copy of each encoder (clean only) to show what pretraining adds
    floors: bool = True
    # a quick look: a subset (QUICK below) of the default comparison; every output says it is a subset
    quick: bool = False


# --quick: one corruption per family and contrast, severities 1, 3, 5, and for the embedded PhotoDigits 2,000
# train / 500 test images. Only keys left at their defaults change; the results carry config.quick = true.
QUICK = {"corruptions": ["gaussian_noise", "defocus_blur", "snow", "contrast", "jpeg_compression"],
         "severities": [1, 3, 5], "photodigits": {"train_size": 2000, "test_size": 500}}


def apply_quick(cfg: "RunConfig") -> "RunConfig":
    """``cfg`` with the quick preset filled in where the user left the defaults."""
    if not cfg.quick:
        return cfg
    if not cfg.corruptions:
        cfg.corruptions = list(QUICK["corruptions"])
    if cfg.severities == [1, 2, 3, 4, 5]:
        cfg.severities = list(QUICK["severities"])
    if cfg.dataset == "photodigits":
        for k, v in QUICK["photodigits"].items():
            cfg.dataset_options.setdefault(k, v)
    return cfg


FIELDS = {f.name: f for f in dataclasses.fields(RunConfig)}


def _type_error(key: str, value: Any, want: str) -> UsageError:
    return UsageError(f"config key {key!r} should be {want}, got {value!r}; fix the config file or flag")


def _check_value(key: str, value: Any) -> Any:
    default = getattr(RunConfig(), key)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise _type_error(key, value, "true or false")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise _type_error(key, value, "an integer")
        return value
    if isinstance(default, str):
        if not isinstance(value, (str, Path)):
            raise _type_error(key, value, "a string")
        return str(value)
    if isinstance(default, list):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise _type_error(key, value, "a list")
        return list(value)
    if isinstance(default, dict):
        if not isinstance(value, dict):
            raise _type_error(key, value, "a table of options")
        return {k: dict(v) if isinstance(v, dict) else v for k, v in value.items()}
    return value  # pragma: no cover


def from_mapping(data: dict[str, Any], base: RunConfig | None = None, source: str = "config") -> RunConfig:
    cfg = dataclasses.replace(base) if base else RunConfig()
    for key, value in data.items():
        if key not in FIELDS:
            close = difflib.get_close_matches(key, list(FIELDS), n=1)
            hint = f" Did you mean: {close[0]}?" if close else ""
            raise UsageError(f"unknown key {key!r} in {source}.{hint} Keys: {', '.join(FIELDS)}")
        setattr(cfg, key, _check_value(key, value))
    return cfg


def load_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"config file {str(path)!r} is a folder; pass the TOML or YAML file to --config")
    if not path.is_file():
        raise UsageError(f"config file {str(path)!r} does not exist; check the path given to --config")
    text = path.read_text()
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            import tomllib

            data = tomllib.loads(text)
    except Exception as exc:  # both parsers raise their own error types
        raise UsageError(f"config file {path.name!r} does not parse ({str(exc).splitlines()[0]}); fix its syntax") from None
    if not isinstance(data, dict):
        raise UsageError(f"config file {path.name!r} must hold a table of keys at the top level")
    return data


def encoder_aliases(entries: list[str]) -> dict[str, str]:
    """``ALIAS=NAME`` or ``NAME`` per entry -> {alias: registered name}, in order. An alias names the encoder in
    rows, reports, gates and ``-o ALIAS.KEY``; the same adapter may appear under several aliases (two releases of
    one family). A repeated alias is an error."""
    out: dict[str, str] = {}
    for entry in entries:
        alias, eq, name = entry.partition("=")
        alias, name = alias.strip(), name.strip()
        if not eq:
            name = alias
        if not alias or not name or any(ch in alias for ch in ".,= "):
            raise UsageError(f"encoder {entry!r}: write NAME or ALIAS=NAME with an alias of letters, digits, - or "
                             f"_ (e.g. -e new=mae -e old=mae)")
        if alias in out:
            raise UsageError(f"encoder {alias!r} is given twice; give each its own alias, e.g. -e new={name} "
                             f"-e old={name} with -o new.checkpoint A -o old.checkpoint B")
        out[alias] = name
    return out


def split_encoder_options(pairs: list[tuple[str, str]], encoders: list[str]) -> dict[str, dict[str, str]]:
    """``-o KEY VALUE`` applies to every listed encoder; ``-o ENCODER.KEY VALUE`` to one of them."""
    out: dict[str, dict[str, str]] = {}
    for key, value in pairs:
        head, dot, rest = key.partition(".")
        if dot and head in encoders:
            out.setdefault(head, {})[rest] = value
            continue
        for enc in encoders:
            out.setdefault(enc, {})[key] = value
    return out


def parse_severities(values: list[Any]) -> list[int]:
    out = []
    for v in values:
        try:
            s = int(v)
        except (TypeError, ValueError):
            raise UsageError(f"severity {v!r} is not an integer; use values from 1 to 5") from None
        if not 1 <= s <= 5:
            raise UsageError(f"severity {s} is outside 1-5; ImageNet-C defines severities 1, 2, 3, 4, 5")
        out.append(s)
    if not out:
        raise UsageError("no severities given; use values from 1 to 5")
    return sorted(set(out))
