"""Pretraining lab (issue #6, item 4): the paper's Table 1 protocol at small scale, with intervals.

    jerc-eval lab --out lab/                      # or: python -m jerc_eval.zoo.lab --out lab/

For every (corruption, severity, method, inject, seed) the zoo trainer (:func:`jerc_eval.zoo.pretrain.train_method`)
pretrains the method's encoder on PhotoDigits' train images corrupted at that severity (the paper's "fixed
corruption per image"); a linear probe is fitted on the same corrupted train images and tested on the test split
corrupted the same way (the paper's Table 1 reading: matched probe data). "inject" adds the corruption at severity 1
inside the augmentation pipeline, to each view with probability ``--inject-p`` (the paper's Appendix D.3 alignment
experiment). A clean-data pretraining per method and seed gives the clean baseline, and each architecture's random
initialisation goes through the same probe (the floor). Every method sees the same number of images.

Accuracies are means over training seeds with a 95 % interval that combines the seed-to-seed spread and the finite
test set; the paper's Drop = 100·(S1−S5)/S1 gets a delta-method interval and is flagged when S1 is near chance; the
inject effect and the JE-vs-RC comparison are tested (Welch t over seeds plus the paired test-set term). See
``docs/lab.md`` for the protocol, the statistics and their assumptions.

Only standard-library modules are imported at module level: the CLI imports this module to build its parser.
"""
from __future__ import annotations

import argparse
import base64
import copy
import datetime as dt
import difflib
import hashlib
import inspect
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import CheckpointError, JercError, UnknownNameError, UsageError

SCHEMA = "jerc-eval/lab"
SCHEMA_VERSION = 1

DEFAULT_CORRUPTIONS = ("gaussian_noise", "defocus_blur")
DEFAULT_SEVERITIES = (1, 3, 5)
DEFAULT_METHODS = ("mae", "dino", "byol")
DEFAULT_SEEDS = 3
DEFAULT_EPOCHS = 2
DEFAULT_TRAIN_SUBSET = 1000
DEFAULT_INJECT_P = 0.5
DEFAULT_OUT = "jerc-eval-lab"
INJECT_SEVERITY = 1          # injected corruption strength (the paper's D.3 appends strength 1-2)
BG_BANK_SIZE = 4000          # background crops for the background-swap augmentation (when a recipe uses it)
HOOK_ONLY = 1e-12            # bg_swap_p written into a view that only needs the lab's hook (no background swap)
NEAR_CHANCE_FACTOR = 1.5     # as the pipeline's summary: S1's interval must clear 1.5x chance
ALPHA = 0.05                 # two-sided significance level of every test
MIN_TRAIN = 64               # one batch


# ============================================================================================ configuration
@dataclass
class LabConfig:
    corruptions: list[str] = field(default_factory=lambda: list(DEFAULT_CORRUPTIONS))
    severities: list[int] = field(default_factory=lambda: list(DEFAULT_SEVERITIES))
    methods: list[str] = field(default_factory=lambda: list(DEFAULT_METHODS))
    seeds: int = DEFAULT_SEEDS
    seed: int = 0
    epochs: int = DEFAULT_EPOCHS
    train_subset: int | None = DEFAULT_TRAIN_SUBSET
    probe_train: int | None = None
    test_subset: int | None = None
    inject_p: float = DEFAULT_INJECT_P
    init: str = "zoo"
    threads: int = 1
    floors: bool = True
    out: str = DEFAULT_OUT
    quiet: bool = False


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The lab's flags (shared by ``jerc-eval lab`` and ``python -m jerc_eval.zoo.lab``)."""
    p.add_argument("-c", "--corruptions", metavar="LIST", default=",".join(DEFAULT_CORRUPTIONS),
                   help="comma-separated corruption or family names (default %(default)s)")
    p.add_argument("-s", "--severities", metavar="LIST", default=",".join(map(str, DEFAULT_SEVERITIES)),
                   help="comma-separated severities in 1..5; Drop needs 1 and 5 (default %(default)s)")
    p.add_argument("-m", "--methods", metavar="LIST", default=",".join(DEFAULT_METHODS),
                   help="zoo methods: mae (RC), dino (JE), byol (JE) (default %(default)s)")
    p.add_argument("--seeds", type=int, default=DEFAULT_SEEDS, metavar="N",
                   help="training seeds per cell (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="lab seed: every random draw derives from it (default 0)")
    p.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS,
                   help="pretraining epochs, the same for every method (default %(default)s)")
    p.add_argument("--train-subset", default=str(DEFAULT_TRAIN_SUBSET), metavar="N",
                   help="pretraining images: the first N of the corrupted train split ('all' = 6000; default "
                        "%(default)s)")
    p.add_argument("--probe-train", default="all", metavar="N",
                   help="probe-fitting images: the first N of the corrupted train split ('all' = 6000, the "
                        "default)")
    p.add_argument("--test-subset", default="all", metavar="N",
                   help="test images ('all' = 2000, the default)")
    p.add_argument("--inject-p", type=float, default=DEFAULT_INJECT_P, metavar="P",
                   help=f"probability that a view gets the corruption injected at severity {INJECT_SEVERITY} "
                        "(0 = no inject arm; default %(default)s)")
    p.add_argument("--init", choices=("zoo", "random"), default="zoo",
                   help="start every pretraining from the shipped zoo checkpoint of its method (continued "
                        "pretraining on the corrupted data; the default, CPU-feasible) or from random weights")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: reproducible anywhere)")
    p.add_argument("--no-floors", dest="floors", action="store_false",
                   help="skip the random-init floors (one probe per architecture and cell)")
    p.add_argument("--out", default=DEFAULT_OUT, metavar="DIR", help="writes lab.json and lab.md (default "
                   "%(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")


def _split_list(text: str) -> list[str]:
    return [t.strip() for t in str(text).split(",") if t.strip()]


def resolve_corruptions(tokens: list[str]) -> list[str]:
    """Corruption and family names -> corruption names (canonical order); unknown names fail with suggestions."""
    from ..corruptions import ALL, FAMILIES

    if not tokens:
        raise UsageError("no corruption given; pass e.g. --corruptions gaussian_noise,defocus_blur")
    chosen: list[str] = []
    for tok in tokens:
        if tok in ALL:
            chosen.append(tok)
        elif tok in FAMILIES:
            chosen.extend(FAMILIES[tok])
        else:
            known = list(ALL) + list(FAMILIES)
            close = difflib.get_close_matches(tok, known, n=3, cutoff=0.6)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise UnknownNameError(f"unknown corruption {tok!r}.{hint} Families: {', '.join(FAMILIES)}; names: "
                                   f"{', '.join(ALL)}")
    return sorted(set(chosen), key=list(ALL).index)


def resolve_methods(tokens: list[str]) -> list[str]:
    from .pretrain import CONFIGS

    if not tokens:
        raise UsageError("no method given; pass e.g. --methods mae,dino,byol")
    out = []
    for tok in tokens:
        if tok not in CONFIGS:
            close = difflib.get_close_matches(tok, list(CONFIGS), n=3, cutoff=0.6)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise UnknownNameError(f"unknown method {tok!r}.{hint} Available: {', '.join(CONFIGS)}")
        if tok not in out:
            out.append(tok)
    return [m for m in CONFIGS if m in out]


def _size(text: str, flag: str, full: int) -> int | None:
    if str(text).strip().lower() in ("all", "none", ""):
        return None
    try:
        n = int(text)
    except ValueError:
        raise UsageError(f"{flag} {text!r} is not an integer; pass a number of images or 'all'") from None
    if n > full:
        raise UsageError(f"{flag} {n} exceeds the split's {full} images; pass at most {full} or 'all'")
    return n


def config_from_args(args: argparse.Namespace) -> LabConfig:
    """Validate every flag before anything runs or is written."""
    from ..config import parse_severities
    from ..datasets.photodigits import DEFAULT_SIZES

    cfg = LabConfig(corruptions=resolve_corruptions(_split_list(args.corruptions)),
                    severities=parse_severities(_split_list(args.severities)),
                    methods=resolve_methods(_split_list(args.methods)), seeds=args.seeds, seed=args.seed,
                    epochs=args.epochs, train_subset=_size(args.train_subset, "--train-subset", DEFAULT_SIZES["train"]),
                    probe_train=_size(args.probe_train, "--probe-train", DEFAULT_SIZES["train"]),
                    test_subset=_size(args.test_subset, "--test-subset", DEFAULT_SIZES["test"]),
                    inject_p=args.inject_p, init=args.init, threads=args.threads, floors=args.floors, out=args.out,
                    quiet=args.quiet)
    if cfg.seeds < 1:
        raise UsageError(f"--seeds {cfg.seeds}: need at least 1 training seed (2 or more for intervals over seeds)")
    if cfg.epochs < 1:
        raise UsageError(f"--epochs {cfg.epochs}: need at least 1 epoch")
    if cfg.train_subset is not None and cfg.train_subset < MIN_TRAIN:
        raise UsageError(f"--train-subset {cfg.train_subset}: need at least {MIN_TRAIN} images (one batch)")
    if cfg.probe_train is not None and cfg.probe_train < 20:
        raise UsageError(f"--probe-train {cfg.probe_train}: need at least 20 images")
    if cfg.test_subset is not None and cfg.test_subset < 10:
        raise UsageError(f"--test-subset {cfg.test_subset}: need at least 10 images")
    if not 0.0 <= cfg.inject_p <= 1.0 or math.isnan(cfg.inject_p):
        raise UsageError(f"--inject-p {cfg.inject_p} is outside 0-1; it is a probability per view")
    if cfg.threads < 1:
        raise UsageError(f"--threads {cfg.threads}: need at least 1")
    if cfg.inject_p > 0 and not trainer_hooks():
        raise UsageError("the installed zoo trainer has no layers=/recipe= arguments, which injection needs; "
                         "pass --inject-p 0 for the no-inject arm only")
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {cfg.out!r} is a file; pass a folder")
    return cfg


def trainer_hooks() -> bool:
    """Whether ``train_method`` takes ``layers=`` and ``recipe=`` (the hooks injection and background swap use)."""
    from . import pretrain

    params = inspect.signature(pretrain.train_method).parameters
    return "layers" in params and "recipe" in params


def command_line(cfg: LabConfig) -> str:
    parts = ["jerc-eval lab", f"--corruptions {','.join(cfg.corruptions)}",
             f"--severities {','.join(map(str, cfg.severities))}", f"--methods {','.join(cfg.methods)}",
             f"--seeds {cfg.seeds}", f"--seed {cfg.seed}", f"--epochs {cfg.epochs}",
             f"--train-subset {cfg.train_subset or 'all'}", f"--probe-train {cfg.probe_train or 'all'}",
             f"--test-subset {cfg.test_subset or 'all'}",
             f"--inject-p {cfg.inject_p:g}", f"--init {cfg.init}", f"--threads {cfg.threads}"]
    if not cfg.floors:
        parts.append("--no-floors")
    return " ".join(parts + [f"--out {cfg.out}"])


# ============================================================================================ statistics
@dataclass(frozen=True)
class Estimate:
    """A value with independent variance components, each with its degrees of freedom (``inf``: a normal term).

    The interval is ``value ± t_{0.975, ν} · se`` with ν from the Welch–Satterthwaite formula,
    ``ν = (Σ v_k)² / Σ (v_k² / ν_k)``: seed terms carry ``R − 1`` degrees of freedom, test-set terms ``inf``.
    """

    value: float
    parts: tuple[tuple[float, float], ...] = ()

    @property
    def se(self) -> float:
        return math.sqrt(sum(v for v, _ in self.parts))

    @property
    def dof(self) -> float:
        tot = sum(v for v, _ in self.parts)
        den = sum(v * v / d for v, d in self.parts if math.isfinite(d) and d > 0)
        return math.inf if den == 0 else tot * tot / den

    @property
    def quantile(self) -> float:
        from scipy import stats

        nu = self.dof
        return float(stats.norm.ppf(1 - ALPHA / 2)) if math.isinf(nu) else float(stats.t.ppf(1 - ALPHA / 2, nu))

    @property
    def half95(self) -> float:
        return self.quantile * self.se

    @property
    def ci95(self) -> tuple[float, float]:
        h = self.half95
        return self.value - h, self.value + h

    def scaled(self, k: float) -> "Estimate":
        return Estimate(k * self.value, tuple((k * k * v, d) for v, d in self.parts))

    def p_value(self) -> float:
        """Two-sided p of ``value = 0``; NaN when there is no variance to test against (and value != 0)."""
        from scipy import stats

        se = self.se
        if se == 0:
            return 1.0 if self.value == 0 else math.nan
        t = abs(self.value) / se
        nu = self.dof
        return float(2 * (stats.norm.sf(t) if math.isinf(nu) else stats.t.sf(t, nu)))

    def record(self, scale: float = 1.0) -> dict[str, Any]:
        lo, hi = self.ci95
        return {"value": scale * self.value, "half95": scale * self.half95, "ci95": [scale * lo, scale * hi],
                "se": scale * self.se, "dof": None if math.isinf(self.dof) else self.dof}


def _var(xs: Sequence[float]) -> float:
    n = len(xs)
    m = sum(xs) / n
    return sum((x - m) ** 2 for x in xs) / (n - 1)


def _image_var(per_image) -> float:
    """Population variance over test images of a per-image quantity (a mean correctness or a paired difference)."""
    import numpy as np

    return float(np.var(np.asarray(per_image, dtype=np.float64)))


def cell_estimate(accuracies: Sequence[float], n_test: int, correct=None) -> Estimate:
    """Mean accuracy over R seeds with two variance terms.

    * seeds: ``s² / R`` (sample variance of the per-seed accuracies), ``R − 1`` degrees of freedom (none for
      R = 1);
    * test set: ``v / N``, v = variance over the N test images of the image's correctness averaged over seeds
      (``correct``: (R, N) booleans); without ``correct``, or for R = 1 where it is the same, the binomial
      ``ā(1 − ā)``. This is the finite test set's sampling error, which the seeds do not see (they share it).
    """
    r = len(accuracies)
    mean = sum(accuracies) / r
    parts = []
    if r >= 2:
        parts.append((_var(accuracies) / r, float(r - 1)))
    if correct is not None:
        import numpy as np

        v = _image_var(np.asarray(correct, dtype=np.float64).mean(0))
    else:
        v = mean * (1 - mean)
    parts.append((v / n_test, math.inf))
    return Estimate(mean, tuple(parts))


def difference(a: Sequence[float], b: Sequence[float], n_test: int, correct_a=None, correct_b=None) -> Estimate:
    """``mean(b) − mean(a)`` for two sets of seeds evaluated on the same N test images.

    Welch's seed terms ``s_a²/R_a`` and ``s_b²/R_b`` (R − 1 degrees of freedom each) plus the paired test-set
    term ``var_i(c̄_b,i − c̄_a,i) / N`` (c̄ = per-image correctness averaged over seeds); without per-image
    correctness the two binomial terms are added (conservative: it ignores the pairing).
    """
    import numpy as np

    ra, rb = len(a), len(b)
    ma, mb = sum(a) / ra, sum(b) / rb
    parts = []
    if ra >= 2:
        parts.append((_var(a) / ra, float(ra - 1)))
    if rb >= 2:
        parts.append((_var(b) / rb, float(rb - 1)))
    if correct_a is not None and correct_b is not None:
        ca = np.asarray(correct_a, dtype=np.float64).mean(0)
        cb = np.asarray(correct_b, dtype=np.float64).mean(0)
        parts.append((_image_var(cb - ca) / n_test, math.inf))
    else:
        parts.append(((ma * (1 - ma) + mb * (1 - mb)) / n_test, math.inf))
    return Estimate(mb - ma, tuple(parts))


def drop_estimate(s1: Estimate, s5: Estimate) -> Estimate | None:
    """The paper's Drop = 100·(S1 − S5)/S1 with its delta-method variance (S1 and S5 treated as independent:
    they come from different pretrainings; on the same test images they correlate positively, so this errs wide)."""
    m1, m5 = s1.value, s5.value
    if m1 <= 0:
        return None
    g1, g5 = 100.0 * m5 / (m1 * m1), -100.0 / m1
    parts = tuple((g1 * g1 * v, d) for v, d in s1.parts) + tuple((g5 * g5 * v, d) for v, d in s5.parts)
    return Estimate(100.0 * (m1 - m5) / m1, parts)


def combine_difference(a: Estimate, b: Estimate) -> Estimate:
    """``b − a`` for independent estimates (their variance components add)."""
    return Estimate(b.value - a.value, a.parts + b.parts)


def near_chance(ci_low: float, chance: float) -> bool:
    """The pipeline's rule (``summary.encoder_summary``): an S1 interval reaching below 1.5x chance makes Drop noise."""
    return ci_low < NEAR_CHANCE_FACTOR * chance


def significance(est: Estimate, comparisons: int = 1) -> dict[str, Any]:
    """Two-sided test of ``est.value = 0`` at ALPHA, Bonferroni-adjusted for ``comparisons``."""
    p = est.p_value()
    p_adj = p if math.isnan(p) else min(1.0, p * comparisons)
    return {"p": p, "p_adjusted": p_adj, "comparisons": comparisons,
            "significant": (not math.isnan(p_adj)) and p_adj < ALPHA}


def verdict(est: Estimate, sig: dict, positive: str, negative: str, n_seeds: Sequence[int] = ()) -> str:
    if n_seeds and min(n_seeds) < 2:
        return "n/a (1 seed)"
    if math.isnan(sig["p_adjusted"]):
        return "n/a (no spread)"
    if not sig["significant"]:
        return "not significant"
    return positive if est.value > 0 else negative


# ============================================================================================ data and training
def cell_seeds(seed: int, split: str, corruption: str, severity: int, n: int):
    """Per-image corruption seeds for one (split, corruption, severity): image i's depends on (seed, split, c, s, i)."""
    from ..seeding import derive_seed, image_seeds

    return image_seeds(derive_seed(seed, "lab", split), corruption, severity, n)


def training_seeds(seed: int, n: int) -> list[int]:
    from ..seeding import derive_seed

    return [derive_seed(seed, "lab-train", k) for k in range(n)]


def _fingerprint(images, labels) -> str:
    import numpy as np

    h = hashlib.sha256()
    h.update(np.ascontiguousarray(images).tobytes())
    h.update(np.ascontiguousarray(labels).tobytes())
    return h.hexdigest()


def load_splits(n_train: int | None, n_test: int | None):
    """PhotoDigits train/test at the requested sizes (rendered once and cached like ``jerc-eval run -d train_size``)."""
    from types import SimpleNamespace

    from ..datasets import photodigits as pd
    from ..default_plugins.datasets import _cached_render

    # the lab corrupts the 64 px render (its corruptions, injection and background swap act at the render size)
    opts = {"train_size": n_train or pd.DEFAULT_SIZES["train"], "test_size": n_test or pd.DEFAULT_SIZES["test"],
            "render_seed": 0, "image_size": pd.IMAGE_SIZE}
    arr = _cached_render(opts)
    train = SimpleNamespace(images=arr["x_train"], labels=arr["y_train"])
    test = SimpleNamespace(images=arr["x_test"], labels=arr["y_test"])
    return train, test, opts


def corrupt(images, corruption: str | None, severity: int, seed: int, split: str):
    if not corruption or severity == 0:
        return images
    from ..corruptions.reference import corrupt_batch

    return corrupt_batch(images, corruption, severity, cell_seeds(seed, split, corruption, severity, len(images)))


def recipe_uses_bg_swap(recipe: dict) -> bool:
    return any(float(v.get("bg_swap_p", 0.0) or 0.0) > 0 for v in recipe.get("views", []))


def hooked_recipe(recipe: dict) -> dict:
    """The method's recipe with every view routed through the lab's hook: ``_views`` calls ``layers.swap`` for a
    view whose ``bg_swap_p`` is truthy, so views without a background swap get the marker ``HOOK_ONLY``."""
    r = copy.deepcopy(recipe)
    for v in r["views"]:
        v["bg_swap_p"] = float(v.get("bg_swap_p", 0.0) or 0.0) or HOOK_ONLY
    return r


class ViewHook:
    """Stands in for ``pretrain.Layers`` (same ``swap(x, idx, p, gen, recolour_p)`` interface), called once per view and batch.

    Per image of the batch, with the trainer's generator: with probability ``p`` (a real ``bg_swap_p`` of the
    recipe; 0 for ``HOOK_ONLY``) the image is re-rendered over a random background crop at 64 px — digit layers of
    the dataset renderer — and corrupted like the cell's train images (same corruption and severity); then, with
    probability ``inject_p``, the corruption at ``inject_severity`` is applied on top. Both act on the 64 px uint8
    images, as the dataset's corruptions do, through the batched torch backend (``corruptions.fast``, fresh draws
    each time), and the result is resized to the input size like every training image. Other images pass through.
    """

    def __init__(self, images64, size: int, corruption: str | None, severity: int, inject_p: float,
                 inject_severity: int = INJECT_SEVERITY, layers: dict | None = None, bank=None):
        import torch

        self.images = torch.from_numpy(images64)
        self.size, self.corruption, self.severity = size, corruption, severity
        self.inject_p, self.inject_severity = float(inject_p), inject_severity
        self.cover = torch.from_numpy(layers["cover"]) if layers is not None else None
        self.colour = torch.from_numpy(layers["colour"]) if layers is not None else None
        self.bank = torch.from_numpy(bank) if bank is not None else None
        self.calls = self.views = self.injected = self.swapped = 0

    def swap(self, x, idx, p, gen, recolour_p: float = 0.0):
        import torch

        from ..corruptions import fast
        from ..features import resize

        self.calls += 1
        b = len(idx)
        self.views += b
        p_swap = 0.0 if p <= HOOK_ONLY else float(p)
        none = torch.zeros(b, dtype=torch.bool)
        if p_swap > 0:
            if self.bank is None:
                raise JercError("the recipe swaps backgrounds but the lab has no background layers")
            on_swap = torch.rand(b, generator=gen) < p_swap
            j = torch.randint(len(self.bank), (b,), generator=gen)
            colour = self.colour[idx]
            if recolour_p > 0:  # a new random digit colour, as pretrain.Layers.swap draws it
                new_col = torch.rand(b, 3, generator=gen)
                rec = (torch.rand(b, generator=gen) < recolour_p).view(b, 1)
                colour = torch.where(rec, new_col, colour)
        else:
            on_swap, j = none, None
        on_inj = torch.rand(b, generator=gen) < self.inject_p if self.inject_p > 0 and self.corruption else none
        seeds = torch.randint(0, 2**31 - 1, (b, 2), generator=gen).numpy()
        rows = (on_swap | on_inj).nonzero().flatten()
        if len(rows) == 0:
            return x
        img = self.images[idx[rows]].clone()
        sw, inj = on_swap[rows], on_inj[rows]
        if sw.any():
            k = rows[sw]
            a = self.cover[idx[k]].unsqueeze(-1)
            comp = (self.bank[j[k]] * (1 - a) + colour[k].view(-1, 1, 1, 3) * a)
            comp = (comp * 255).round().clamp(0, 255).to(torch.uint8)
            if self.corruption and self.severity > 0:
                comp = fast.corrupt_batch(comp, self.corruption, self.severity, seeds[k.numpy(), 0])
            img[sw] = comp
            self.swapped += int(sw.sum())
        if inj.any():
            img[inj] = fast.corrupt_batch(img[inj].contiguous(), self.corruption, self.inject_severity,
                                          seeds[rows[inj].numpy(), 1])
            self.injected += int(inj.sum())
        out = x.clone()
        out[rows] = resize(img.permute(0, 3, 1, 2).float().div(255.0), self.size)
        return out

    def counts(self) -> dict[str, Any]:
        v = max(1, self.views)
        return {"hook_calls": self.calls, "views": self.views, "injected_fraction": self.injected / v,
                "swapped_fraction": self.swapped / v}


def probe_predictions(*args: Any, **kwargs: Any):
    """:func:`jerc_eval.zoo.probe.probe_predictions` (imported lazily: the CLI imports this module for its flags)."""
    from .probe import probe_predictions as fit

    return fit(*args, **kwargs)


def _pack(correct) -> str:
    import numpy as np

    return base64.b64encode(np.packbits(np.asarray(correct, dtype=bool)).tobytes()).decode("ascii")


def unpack_correct(text: str, n: int):
    import numpy as np

    return np.unpackbits(np.frombuffer(base64.b64decode(text), dtype=np.uint8))[:n].astype(bool)


def zoo_init(method: str):
    """The shipped zoo checkpoint of ``method`` -> (state in train_method's ``init`` layout, {file, sha256})."""
    import torch

    from . import WEIGHTS_DIR
    from .pretrain import CONFIGS, _sha256

    path = Path(WEIGHTS_DIR) / CONFIGS[method]["file"]
    if not path.is_file():
        raise CheckpointError(f"--init zoo: the zoo checkpoint {path} is missing; reinstall jerc-eval or pass "
                              "--init random")
    return (torch.load(path, map_location="cpu", weights_only=True),
            {"file": path.name, "sha256": _sha256(path)})


def train_overrides(method: str, epochs: int) -> dict[str, int | str]:
    """Epochs for every method alike; warmup: the zoo's, or for short runs ``max(1, epochs // 5)`` as
    ``pretrain.py --epochs`` does, but never the whole run; the architecture the zoo ships (its last phase's), which
    ``--init zoo`` weights were trained in."""
    from .pretrain import CONFIGS, shipped_arch

    warm = CONFIGS[method]["warmup_epochs"]
    if epochs < 2 * warm:
        warm = min(max(1, epochs // 5), epochs - 1)
    return {"epochs": epochs, "warmup_epochs": warm, "arch": shipped_arch(method)}


# ============================================================================================ the lab
def run_lab(cfg: LabConfig, log: Callable[[str], None] = lambda _m: None) -> dict[str, Any]:
    """Run every cell; returns the lab document (``lab.json``). Writes nothing."""
    import torch

    from .. import __version__
    from ..corruptions.fast import FAST_VERSION
    from ..corruptions.reference import reference_version
    from ..datasets import photodigits as pd
    from ..models import ARCHS, build
    from ..results import environment
    from ..seeding import derive_seed
    from . import pretrain

    t_start = time.perf_counter()
    torch.set_num_threads(cfg.threads)
    full = pd.DEFAULT_SIZES["train"]
    n_pre, n_probe = cfg.train_subset or full, cfg.probe_train or full
    train, test, data_opts = load_splits(max(n_pre, n_probe), cfg.test_subset)
    n_te = len(test.labels)
    probe_labels = train.labels[:n_probe]
    chance = 1.0 / pd.NUM_CLASSES
    seeds = training_seeds(cfg.seed, cfg.seeds)
    recipes = {m: copy.deepcopy(pretrain.RECIPES[m]) for m in cfg.methods}
    bg_swap = {m: recipe_uses_bg_swap(recipes[m]) for m in cfg.methods}
    layers = bank = None
    if any(bg_swap.values()):
        if not (trainer_hooks() and hasattr(pd, "build_layers") and hasattr(pd, "background_bank")):
            raise JercError("a recipe uses bg_swap_p but the trainer or the dataset has no layers support")
        full_layers = pd.build_layers("train", n=data_opts["train_size"], seed=0)
        layers = {k: v[:n_pre] for k, v in full_layers.items()}
        bank = pd.background_bank(BG_BANK_SIZE)
    inits = {m: zoo_init(m) for m in cfg.methods} if cfg.init == "zoo" else {m: None for m in cfg.methods}
    arms = [False, True] if cfg.inject_p > 0 else [False]
    cells = [("clean", 0)] + [(c, s) for c in cfg.corruptions for s in cfg.severities]
    todo = sum(len(cfg.methods) * cfg.seeds * (1 if c == "clean" else len(arms)) for c, _ in cells)
    archs = sorted({pretrain.shipped_arch(m) for m in cfg.methods})
    runs: list[dict] = []
    floors: list[dict] = []
    data_fp: dict[str, dict] = {}
    done = 0
    train_time = 0.0

    for corruption, severity in cells:
        name = None if corruption == "clean" else corruption
        t0 = time.perf_counter()
        tr_x = corrupt(train.images, name, severity, cfg.seed, "train")
        te_x = corrupt(test.images, name, severity, cfg.seed, "test")
        pre_x, probe_x = tr_x[:n_pre], tr_x[:n_probe]
        data_fp[f"{corruption}@{severity}"] = {"train": _fingerprint(tr_x, train.labels)[:16],
                                               "test": _fingerprint(te_x, test.labels)[:16],
                                               "corrupt_seconds": round(time.perf_counter() - t0, 1)}
        if cfg.floors:
            for arch in archs:
                t1 = time.perf_counter()
                torch.manual_seed(derive_seed(cfg.seed, "lab-floor", arch))
                pred, conv = probe_predictions(build(arch).eval(), probe_x, probe_labels, te_x)
                correct = pred == test.labels
                floors.append({"corruption": corruption, "severity": severity, "arch": arch,
                               "accuracy": float(correct.mean()), "correct": int(correct.sum()), "n_test": n_te,
                               "probe_converged": conv, "correct_bits": _pack(correct),
                               "probe_seconds": round(time.perf_counter() - t1, 2)})
        for method in cfg.methods:
            mcfg = pretrain.CONFIGS[method]
            for inject in (arms if name else [False]):
                for k, ts in enumerate(seeds):
                    hook = None
                    kwargs: dict[str, Any] = {}
                    if inject or bg_swap[method]:
                        hook = ViewHook(pre_x, mcfg.get("input_size", 32), name, severity,
                                        cfg.inject_p if inject else 0.0, INJECT_SEVERITY, layers, bank)
                        kwargs = {"layers": hook, "recipe": hooked_recipe(recipes[method])}
                    if inits[method] is not None:
                        kwargs["init"] = inits[method][0]
                    enc, _sd, stats = pretrain.train_method(method, pre_x, ts, train_overrides(method, cfg.epochs),
                                                            log=lambda _m: None, **kwargs)
                    if hook is not None and hook.calls == 0:
                        raise JercError("the zoo trainer never called the lab's view hook: injection/background "
                                        "swap did not happen (pretrain._views changed?)")
                    t1 = time.perf_counter()
                    pred, conv = probe_predictions(enc, probe_x, probe_labels, te_x)
                    probe_s = time.perf_counter() - t1
                    correct = pred == test.labels
                    train_time += stats["wall_seconds"]
                    runs.append({
                        "corruption": corruption, "severity": severity, "method": method,
                        "paradigm": mcfg["paradigm"], "arch": pretrain.shipped_arch(method), "inject": inject,
                        "seed_index": k,
                        "train_seed": ts, "accuracy": float(correct.mean()), "correct": int(correct.sum()),
                        "n_test": n_te, "images_seen": stats["images_seen"], "epochs": stats["epochs"],
                        "steps": stats["steps"], "final_loss": stats["final_loss"],
                        "views": hook.counts() if hook is not None else None, "probe_converged": conv,
                        "train_seconds": stats["wall_seconds"], "probe_seconds": round(probe_s, 2),
                        "correct_bits": _pack(correct)})
                    done += 1
                    el = time.perf_counter() - t_start
                    log(f"[{done}/{todo}] {corruption}" + (f" s{severity}" if severity else "")
                        + f" {method}{' +inject' if inject else ''} seed#{k}: {100 * correct.mean():.1f} % "
                        f"(train {stats['wall_seconds']:.0f} s, probe {probe_s:.0f} s; {el / 60:.1f} min elapsed, "
                        f"~{el / done * (todo - done) / 60:.0f} min left)")

    seen = sorted({r["images_seen"] for r in runs})
    doc: dict[str, Any] = {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION, "jerc_eval_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command_line(cfg),
        "config": asdict(cfg),
        "seeds": {"lab": cfg.seed, "training": seeds,
                  "training_rule": "derive_seed(lab seed, 'lab-train', k), k = 0..seeds-1; the same seeds in "
                                   "every cell",
                  "corruption_rule": "image i of (split, corruption c, severity s): "
                                     "image_seeds(derive_seed(lab seed, 'lab', split), c, s, n)[i]",
                  "floor_rule": "torch.manual_seed(derive_seed(lab seed, 'lab-floor', arch)) before build(arch)"},
        "environment": environment("cpu"),
        "dataset": {"name": "photodigits", "version": pd.VERSION, "render_seed": 0,
                    "n_train_rendered": len(train.labels), "n_pretrain": n_pre, "n_probe_train": n_probe,
                    "n_test": n_te,
                    "num_classes": pd.NUM_CLASSES, "chance": chance,
                    "fingerprint": {"train": _fingerprint(train.images, train.labels),
                                    "test": _fingerprint(test.images, test.labels)},
                    "cells": data_fp},
        "corruption_backends": {"splits": reference_version(), "inside_augmentation": f"fast {FAST_VERSION}"},
        "trainer": {"function": "jerc_eval.zoo.pretrain.train_method",
                    "overrides": {m: train_overrides(m, cfg.epochs) for m in cfg.methods},
                    "configs": {m: pretrain.CONFIGS[m] for m in cfg.methods},
                    "recipes": recipes, "bg_swap": bg_swap,
                    "bg_swap_note": ("swapped views are re-rendered at 64 px from the dataset's digit layers over "
                                     f"{BG_BANK_SIZE} background crops and corrupted like the cell's train images"
                                     if any(bg_swap.values()) else None),
                    "inject": {"p": cfg.inject_p, "severity": INJECT_SEVERITY,
                               "how": "per view, before the view's crop: the (already corrupted) 64 px train image "
                                      "gets the same corruption at the inject severity with fresh draws "
                                      "(corruptions.fast), then is resized like every training image"},
                    "init": cfg.init,
                    "init_checkpoints": {m: inits[m][1] for m in cfg.methods if inits[m] is not None},
                    "images_seen": seen[0] if len(seen) == 1 else seen,
                    "equal_images_seen": len(seen) == 1},
        "probe": {"fit": "the first n_probe_train images of the cell's corrupted train split (they include the "
                         "n_pretrain pretraining images)",
                  "test": "test split corrupted the same way (matched, the paper's Table 1 reading)",
                  "classifier": "zoo probe: standardised features, sklearn LogisticRegression(lbfgs, C=0.5, "
                                "max_iter=2000)",
                  "features": "ViT: [CLS] after final norm; ResNet: global-average-pooled features"},
        "runs": runs,
        "floors": floors,
        "archs": {a: ARCHS[a]["kwargs"] for a in archs},
        "timing": {"total_seconds": round(time.perf_counter() - t_start, 1), "train_seconds": round(train_time, 1),
                   "threads": cfg.threads},
    }
    doc["summary"] = summarize(doc)
    doc["statistics"] = STATISTICS_NOTE
    return doc


STATISTICS_NOTE = {
    "cell": "mean over seeds; SE^2 = s^2/R (seed spread, R-1 dof) + v/N (test set: variance over the N test images "
            "of correctness averaged over seeds, = a(1-a) for R = 1); 95% interval mean ± t_{0.975,nu} SE, nu by "
            "Welch-Satterthwaite with the test-set term as infinite dof",
    "drop": "100 (S1-S5)/S1 of the seed means; delta-method variance from the components of S1 and S5, treated as "
            "independent; flagged near chance when S1's interval reaches below 1.5x chance (Drop is noise then)",
    "inject_effect": "mean(inject) - mean(no inject): Welch t over seeds plus the paired test-set term "
                     "var_i(cbar_inject,i - cbar_no,i)/N; two-sided, alpha 0.05",
    "je_vs_rc": "best JE method (highest mean; lowest Drop for Drops) vs MAE, same test as inject_effect; p "
                "Bonferroni-adjusted for choosing the best of the JE methods",
    "multiple_testing": "each row is its own test at alpha 0.05; over k rows about 0.05 k false positives are expected",
}


# ============================================================================================ summary
def summarize(doc: dict[str, Any]) -> dict[str, Any]:
    """All estimates and tests from ``doc['runs']`` and ``doc['floors']`` alone (pure; lab.json can be re-read)."""
    import numpy as np

    runs, floors = doc["runs"], doc.get("floors", [])
    chance = doc["dataset"]["chance"]
    methods = list(dict.fromkeys(r["method"] for r in runs))
    paradigm = {r["method"]: r["paradigm"] for r in runs}
    arch_of = {r["method"]: r["arch"] for r in runs}
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((r["corruption"], r["severity"], r["method"], r["inject"]), []).append(r)
    for g in groups.values():
        g.sort(key=lambda r: r["seed_index"])

    def corr_matrix(g):
        return np.stack([unpack_correct(r["correct_bits"], r["n_test"]) for r in g])

    est: dict[tuple, Estimate] = {}
    cells = []
    for key, g in groups.items():
        accs = [r["accuracy"] for r in g]
        e = cell_estimate(accs, g[0]["n_test"], corr_matrix(g))
        est[key] = e
        cells.append({"corruption": key[0], "severity": key[1], "method": key[2], "paradigm": paradigm[key[2]],
                      "inject": key[3], "n_seeds": len(g), "accuracies": accs, "mean": e.value,
                      "half95": e.half95, "ci95": list(e.ci95), "se": e.se,
                      "dof": None if math.isinf(e.dof) else e.dof})

    floor_est = {}
    floor_rows = []
    for f in floors:
        e = cell_estimate([f["accuracy"]], f["n_test"])
        floor_est[(f["corruption"], f["severity"], f["arch"])] = e
        floor_rows.append({"corruption": f["corruption"], "severity": f["severity"], "arch": f["arch"],
                           "accuracy": f["accuracy"], "half95": e.half95, "ci95": list(e.ci95)})
    for c in cells:
        fe = floor_est.get((c["corruption"], c["severity"], arch_of[c["method"]]))
        if fe is None:
            c["above_floor"] = c["vs_floor"] = None
            continue
        d = combine_difference(fe, est[(c["corruption"], c["severity"], c["method"], c["inject"])])
        sig = significance(d)
        c["minus_floor"] = {**d.record(), "p": sig["p"]}
        c["above_floor"] = bool(sig["significant"] and d.value > 0)
        c["vs_floor"] = ("above" if d.value > 0 else "below") if sig["significant"] else "not different"
    # drop vs clean (the clean-pretrained encoder on clean data is the reference)
    for c in cells:
        ref = est.get(("clean", 0, c["method"], False))
        if c["corruption"] != "clean" and ref is not None:
            d = drop_estimate(ref, est[(c["corruption"], c["severity"], c["method"], c["inject"])])
            c["drop_vs_clean"] = d.record() if d is not None else None

    corruptions = list(dict.fromkeys(r["corruption"] for r in runs if r["corruption"] != "clean"))
    arms = sorted({r["inject"] for r in runs if r["corruption"] != "clean"})
    drops = []
    drop_est: dict[tuple, Estimate] = {}
    for c in corruptions:
        for m in methods:
            for inj in arms:
                e1, e5 = est.get((c, 1, m, inj)), est.get((c, 5, m, inj))
                if e1 is None or e5 is None:
                    continue
                d = drop_estimate(e1, e5)
                nc = near_chance(e1.ci95[0], chance)
                if d is not None:
                    drop_est[(c, m, inj)] = d
                drops.append({"corruption": c, "method": m, "paradigm": paradigm[m], "inject": inj,
                              "drop": None if d is None else d.value, "half95": None if d is None else d.half95,
                              "ci95": None if d is None else list(d.ci95), "s1_ci95_low": e1.ci95[0],
                              "near_chance": nc})
    near = {(d["corruption"], d["method"], d["inject"]): d["near_chance"] for d in drops}

    def nseeds(key):
        return len(groups[key])

    inject_rows = []
    if True in arms:
        for (c, s, m, inj), g in groups.items():
            if c == "clean" or inj:
                continue
            gy = groups.get((c, s, m, True))
            if gy is None:
                continue
            d = difference([r["accuracy"] for r in g], [r["accuracy"] for r in gy], g[0]["n_test"],
                           corr_matrix(g), corr_matrix(gy))
            sig = significance(d)
            inject_rows.append({"corruption": c, "severity": s, "method": m, "paradigm": paradigm[m],
                                "no_inject": est[(c, s, m, False)].value, "inject": est[(c, s, m, True)].value,
                                "diff": d.value, "half95": d.half95, "ci95": list(d.ci95), "dof": _dof(d), **sig,
                                "verdict": verdict(d, sig, "inject higher", "inject lower",
                                                   (len(g), len(gy)))})
        for c in corruptions:
            for m in methods:
                a, b = drop_est.get((c, m, False)), drop_est.get((c, m, True))
                if a is None or b is None:
                    continue
                d = combine_difference(a, b)
                sig = significance(d)
                nc = near.get((c, m, False)) or near.get((c, m, True))
                inject_rows.append({"corruption": c, "severity": "Drop", "method": m, "paradigm": paradigm[m],
                                    "no_inject": a.value, "inject": b.value, "diff": d.value, "half95": d.half95,
                                    "ci95": list(d.ci95), "dof": _dof(d), **sig, "near_chance": nc,
                                    "verdict": "near chance: Drop is noise" if nc else
                                    verdict(d, sig, "inject: larger Drop", "inject: smaller Drop",
                                            (nseeds((c, 1, m, False)), nseeds((c, 1, m, True))))})

    je = [m for m in methods if paradigm[m] == "JE"]
    rc = [m for m in methods if paradigm[m] == "RC"]
    je_rc, je_rc_drop = [], []
    if je and rc:
        r_m = rc[0]
        for (c, s, m, inj), g in groups.items():
            if m != r_m:
                continue
            cands = [(est[(c, s, j, inj)].value, j) for j in je if (c, s, j, inj) in est]
            if not cands:
                continue
            best = max(cands)[1]
            gj = groups[(c, s, best, inj)]
            d = difference([r["accuracy"] for r in g], [r["accuracy"] for r in gj], g[0]["n_test"], corr_matrix(g),
                           corr_matrix(gj))
            sig = significance(d, comparisons=len(cands))
            je_rc.append({"corruption": c, "severity": s, "inject": inj, "rc_method": r_m,
                          "rc": est[(c, s, r_m, inj)].value,
                          "best_je": best, "je": est[(c, s, best, inj)].value, "diff_je_minus_rc": d.value,
                          "half95": d.half95, "ci95": list(d.ci95), "dof": _dof(d), **sig,
                          "verdict": verdict(d, sig, "JE higher", "RC higher", (len(g), len(gj)))})
        for c in corruptions:
            for inj in arms:
                rd = drop_est.get((c, r_m, inj))
                cands = [(drop_est[(c, j, inj)].value, j) for j in je if (c, j, inj) in drop_est]
                if rd is None or not cands:
                    continue
                best = min(cands)[1]
                jd = drop_est[(c, best, inj)]
                d = combine_difference(jd, rd)  # RC Drop - JE Drop: positive = JE degrades less
                sig = significance(d, comparisons=len(cands))
                nc = bool(near.get((c, r_m, inj)) or near.get((c, best, inj)))
                je_rc_drop.append({"corruption": c, "inject": inj, "rc_method": r_m, "rc_drop": rd.value,
                                   "best_je": best, "je_drop": jd.value, "diff_rc_minus_je": d.value,
                                   "half95": d.half95, "ci95": list(d.ci95), "dof": _dof(d), **sig,
                                   "near_chance": nc,
                                   "verdict": "near chance: Drop is noise" if nc else
                                   verdict(d, sig, "JE degrades less", "RC degrades less",
                                           (nseeds((c, 1, r_m, inj)), nseeds((c, 1, best, inj))))})

    def count(rows):
        out: dict[str, int] = {}
        for r in rows:
            out[r["verdict"]] = out.get(r["verdict"], 0) + 1
        return out

    return {"chance": chance, "near_chance_below": NEAR_CHANCE_FACTOR * chance, "alpha": ALPHA, "cells": cells,
            "floors": floor_rows, "drops": drops, "inject_effect": inject_rows, "je_vs_rc": je_rc,
            "je_vs_rc_drop": je_rc_drop,
            "counts": {"near_chance_drops": sum(d["near_chance"] for d in drops), "drops": len(drops),
                       "inject_effect": count(inject_rows), "je_vs_rc": count(je_rc),
                       "je_vs_rc_drop": count(je_rc_drop),
                       "cells_above_floor": sum(bool(c.get("above_floor")) for c in cells
                                                if c.get("above_floor") is not None),
                       "cells_below_floor": sum(c.get("vs_floor") == "below" for c in cells),
                       "cells_with_floor": sum(c.get("above_floor") is not None for c in cells)}}


def _dof(e: Estimate) -> float | None:
    return None if math.isinf(e.dof) else e.dof


# ============================================================================================ report
NAMES = {"mae": "MAE", "dino": "DINO", "byol": "BYOL"}


def _pm(value: float | None, half: float | None, scale: float = 100.0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if half is None or math.isnan(half):
        return f"{scale * value:.1f}"
    return f"{scale * value:.1f} ±{scale * half:.1f}"


def _p(p: float) -> str:
    if p is None or math.isnan(p):
        return "–"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def render_markdown(doc: dict[str, Any]) -> str:
    s = doc["summary"]
    cfg = doc["config"]
    ds = doc["dataset"]
    tr = doc["trainer"]
    seen = tr["images_seen"]
    cell = {(c["corruption"], c["severity"], c["method"], c["inject"]): c for c in s["cells"]}
    drop = {(d["corruption"], d["method"], d["inject"]): d for d in s["drops"]}
    floor = {(f["corruption"], f["severity"], f["arch"]): f for f in s["floors"]}
    methods = list(dict.fromkeys(c["method"] for c in s["cells"]))
    corruptions = list(dict.fromkeys(c["corruption"] for c in s["cells"] if c["corruption"] != "clean"))
    sevs = sorted({c["severity"] for c in s["cells"] if c["severity"]})
    arms = sorted({c["inject"] for c in s["cells"] if c["corruption"] != "clean"})
    arch_of = {r["method"]: r["arch"] for r in doc["runs"]}
    paradigm = {r["method"]: r["paradigm"] for r in doc["runs"]}
    t = doc["timing"]
    start = ("further from its shipped zoo checkpoint (continued pretraining)"
             if tr.get("init", "random") == "zoo" else "from random weights")
    L = ["# Pretraining lab: the paper's Table 1 protocol at small scale", "",
         f"`{doc['command']}`", "",
         f"Each method pretrained {start} on {ds['n_pretrain']} PhotoDigits train images corrupted at each "
         f"severity (fixed corruption per image), {cfg['epochs']} epoch{'s' if cfg['epochs'] > 1 else ''} = "
         f"**{seen} images seen per run, the same for every method** (DINO turns each image into 6 crops and BYOL "
         f"into 2 views: compute per image differs); {cfg['seeds']} training seed{'s' if cfg['seeds'] > 1 else ''} per "
         f"cell; linear probe (the zoo "
         f"probe) fitted on {ds['n_probe_train']} train images corrupted the same way (the pretraining images "
         f"among them) and tested on {ds['n_test']} test images corrupted the same way. "
         + (f"*inject*: the same corruption at severity {tr['inject']['severity']} applied to each view with "
            f"p = {tr['inject']['p']:g} inside the augmentations. " if True in arms else "")
         + (f"Recipes with background swap: {', '.join(m for m, v in tr['bg_swap'].items() if v)} (swapped views "
            "are corrupted like the cell). " if any(tr["bg_swap"].values()) else "")
         + f"Wall time {t['total_seconds'] / 60:.1f} min ({t['threads']} thread{'s' if t['threads'] > 1 else ''}); "
           f"dataset fingerprint {ds['fingerprint']['train'][:12]}/{ds['fingerprint']['test'][:12]}.", "",
         f"Accuracies in %, mean over seeds ±95 % half-width (seed spread and finite test set combined); chance "
         f"{100 * s['chance']:.0f} %. Drop = 100·(S1−S5)/S1 ±95 % (delta method); **near chance** = S1's interval "
         f"reaches below {100 * s['near_chance_below']:.0f} %: that Drop is noise. *floor* = the architecture with "
         "seeded random weights through the same probe; notes say where a mean is significantly below it or not "
         "different from it (≈floor). "
         "Statistics: docs/lab.md.", ""]
    if not tr["equal_images_seen"]:
        L += [f"**Warning: images seen differ between runs: {seen}.**", ""]
    for c in corruptions:
        L += [f"## {c}", ""]
        hdr = ["method", "paradigm", "inject", "clean"] + [f"S{v}" for v in sevs] + ["Drop ±95 %", "note"]
        L += ["| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
        for m in methods:
            for inj in arms:
                notes = []
                clean = cell.get(("clean", 0, m, False))
                row = [NAMES.get(m, m), paradigm[m], "yes" if inj else "no",
                       _pm(clean["mean"], clean["half95"]) if clean and not inj else "–"]
                vs: dict[str, list[str]] = {"below": [], "not different": []}
                if clean and not inj and clean.get("vs_floor") in vs:
                    vs[clean["vs_floor"]].append("clean")
                for v in sevs:
                    cc = cell.get((c, v, m, inj))
                    row.append(_pm(cc["mean"], cc["half95"]) if cc else "–")
                    if cc and cc.get("vs_floor") in vs:
                        vs[cc["vs_floor"]].append(f"S{v}")
                d = drop.get((c, m, inj))
                row.append(_pm(d["drop"], d["half95"], 1.0) if d else "–")
                if d and d["near_chance"]:
                    notes.append("near chance: Drop is noise")
                if vs["below"]:
                    notes.append("below floor at " + ", ".join(vs["below"]))
                if vs["not different"]:
                    notes.append("≈floor at " + ", ".join(vs["not different"]))
                row.append("; ".join(notes))
                L.append("| " + " | ".join(row) + " |")
        for a in sorted({arch_of[m] for m in methods}):
            if not any(k[2] == a for k in floor):
                continue
            fl = [floor.get((c, v, a)) for v in sevs]
            f0 = floor.get(("clean", 0, a))
            users = "/".join(NAMES.get(m, m) for m in methods if arch_of[m] == a)
            row = [f"floor: random {a} ({users})", "–", "–", _pm(f0["accuracy"], f0["half95"]) if f0 else "–"]
            row += [_pm(f["accuracy"], f["half95"]) if f else "–" for f in fl]
            L.append("| " + " | ".join(row + ["–", "1 init, test-set interval only"]) + " |")
        L.append("")

    if s["inject_effect"]:
        L += ["## Inject vs no inject", "",
              "Difference inject − no inject in accuracy points (Drop rows: in Drop points), ±95 %; p: Welch t over "
              "seeds with the paired test-set term (Drop rows: delta-method SEs), two-sided.", "",
              "| corruption | severity | method | no inject | inject | Δ ±95 % | p | verdict |",
              "|---|---|---|---|---|---|---|---|"]
        for r in s["inject_effect"]:
            sc = 1.0 if r["severity"] == "Drop" else 100.0
            sev = "Drop" if r["severity"] == "Drop" else f"S{r['severity']}"
            L.append(f"| {r['corruption']} | {sev} | {NAMES.get(r['method'], r['method'])} | "
                     f"{sc * r['no_inject']:.1f} | {sc * r['inject']:.1f} | {_pm(r['diff'], r['half95'], sc)} | "
                     f"{_p(r['p'])} | {r['verdict']} |")
        L.append("")
    if s["je_vs_rc"]:
        L += ["## JE vs RC", "",
              "Per cell: the best JE method (highest mean accuracy) against MAE; Δ = JE − RC in accuracy points; p "
              "Bonferroni-adjusted for picking the best of the JE methods. BYOL is a ResNet, MAE and DINO are ViTs: "
              "a BYOL-vs-MAE difference is also an architecture difference (compare the floors above); DINO vs MAE "
              "is the same-architecture comparison.", "",
              "| corruption | severity | inject | MAE (RC) | best JE | Δ JE−RC ±95 % | p (adj.) | verdict |",
              "|---|---|---|---|---|---|---|---|"]
        for r in s["je_vs_rc"]:
            sev = "clean" if r["corruption"] == "clean" else f"S{r['severity']}"
            L.append(f"| {r['corruption']} | {sev} | {'yes' if r['inject'] else 'no'} | {100 * r['rc']:.1f} | "
                     f"{NAMES.get(r['best_je'], r['best_je'])} {100 * r['je']:.1f} | "
                     f"{_pm(r['diff_je_minus_rc'], r['half95'])} | {_p(r['p_adjusted'])} | {r['verdict']} |")
        L.append("")
    if s["je_vs_rc_drop"]:
        L += ["Drop (the paper's comparison: RC degrades about 2× faster on ImageNet-100): best JE = lowest Drop; "
              "Δ = RC Drop − JE Drop (positive: JE degrades less).", "",
              "| corruption | inject | MAE Drop | best JE Drop | Δ RC−JE ±95 % | p (adj.) | verdict |",
              "|---|---|---|---|---|---|---|"]
        for r in s["je_vs_rc_drop"]:
            L.append(f"| {r['corruption']} | {'yes' if r['inject'] else 'no'} | {r['rc_drop']:.1f} | "
                     f"{NAMES.get(r['best_je'], r['best_je'])} {r['je_drop']:.1f} | "
                     f"{_pm(r['diff_rc_minus_je'], r['half95'], 1.0)} | {_p(r['p_adjusted'])} | {r['verdict']} |")
        L.append("")
    k = s["counts"]
    L += ["## What this run shows", ""]
    L.append(f"- Drops near chance (noise): {k['near_chance_drops']} of {k['drops']}." if k["drops"] else
             "- No Drop: it needs severities 1 and 5.")
    if k["cells_with_floor"]:
        L.append(f"- Cells against their random-init floor: {k['cells_above_floor']} significantly above, "
                 f"{k['cells_below_floor']} significantly below, of {k['cells_with_floor']}.")
    for label, key in (("Inject vs no inject", "inject_effect"), ("JE vs RC (accuracy)", "je_vs_rc"),
                       ("JE vs RC (Drop)", "je_vs_rc_drop")):
        if k[key]:
            L.append(f"- {label}: " + ", ".join(f"{n} {v}" for v, n in sorted(k[key].items())) + ".")
    unconverged = sum(not r.get("probe_converged", True) for r in doc["runs"] + doc.get("floors", []))
    if unconverged:
        L.append(f"- {unconverged} probe fits stopped at max_iter (lab.json: probe_converged).")
    n_tests = len(s["inject_effect"]) + len(s["je_vs_rc"]) + len(s["je_vs_rc_drop"])
    L.append(f"- {n_tests} tests at α = {s['alpha']}: about {s['alpha'] * n_tests:.1f} false positives are expected "
             "by chance alone; read single significant rows with that in mind.")
    return "\n".join(L) + "\n"


def write_outputs(doc: dict[str, Any], out: str | Path) -> list[Path]:
    from ..results import write_files_atomically

    out = Path(out)
    files = {out / "lab.json": json.dumps(doc, indent=1, default=_json_default) + "\n",
             out / "lab.md": render_markdown(doc)}
    write_files_atomically(files)
    return list(files)


def _json_default(o: Any) -> Any:
    if isinstance(o, (set, tuple)):
        return list(o)
    if hasattr(o, "item"):
        return o.item()
    return str(o)


# ============================================================================================ entry points
def run_from_args(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)

    def log(msg: str) -> None:
        if not cfg.quiet:
            print(msg, file=sys.stderr, flush=True)

    log(f"lab: {command_line(cfg)}")
    doc = run_lab(cfg, log)
    paths = write_outputs(doc, cfg.out)
    if not cfg.quiet:
        print(render_markdown(doc))
    print(f"wrote {paths[0]} and {paths[1]}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jerc-eval lab", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m jerc_eval.zoo.lab [flags]``: the same as ``jerc-eval lab [flags]`` (errors: one line + exit code)."""
    from ..cli import main as cli_main

    return cli_main(["lab", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
