"""Extension base classes. Capabilities are class attributes; each class has one abstract method.

Batching, devices, no-grad, eval mode, caching and seeding live in the core, so an adapter stays short.
"""
from __future__ import annotations

import abc
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterator

import numpy as np

from .errors import CheckpointError, DataError, UsageError

PARADIGMS = ("JE", "RC", "SL", "random")
_REQUIRED = object()


@dataclass(frozen=True)
class Option:
    """A typed option of an extension (``-o KEY VALUE`` on the command line)."""

    type: type = str
    default: Any = _REQUIRED
    help: str = ""
    choices: tuple[Any, ...] | None = None
    must_exist: bool = False  # for Path options: the file must exist (checked before any compute)
    # False for an option that cannot change what the extension computes (a download switch, a verbosity):
    # it is then left out of every cache key (jerc_eval.cache.identity); everything else is in the key
    affects_result: bool = True
    # for must_exist Path options: "file" or "folder" (a folder where a file is expected is an error); None: either
    path_kind: str | None = None
    minimum: float | None = None  # for numbers: the smallest valid value (inclusive)

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED

    def convert(self, owner: str, key: str, raw: Any, flag: str = "-o",
                missing: type[Exception] = CheckpointError) -> Any:
        """``raw`` as this option's type, checked; ``flag`` is the command-line flag that carries the option (named
        in hints) and ``missing`` the error a missing path raises (its kind's exit code)."""
        value = _coerce(owner, key, self.type, raw, flag)
        if self.choices is not None and value not in self.choices:
            raise UsageError(f"option {key}={raw!r} of {owner} must be one of {', '.join(map(str, self.choices))}; "
                             f"pass {flag} {key} {self.choices[0]}")
        if self.minimum is not None and value is not None and value < self.minimum:
            raise UsageError(f"option {key}={raw!r} of {owner} must be at least {self.minimum:g}; "
                             f"pass {flag} {key} N with N >= {self.minimum:g}")
        if self.must_exist and value is not None:
            check_path(Path(value), f"{key} {'folder' if self.path_kind == 'folder' else 'file'}", owner,
                       f"{flag} {key} PATH", self.path_kind, missing)
        return value


def check_path(path: Path, what: str, owner: str, hint: str, kind: str | None,
               missing: type[Exception]) -> None:
    """A path option that must exist, and be a file or a folder as ``kind`` says; ``missing`` is raised if not."""
    if not path.exists():
        raise missing(f"{what} {str(path)!r} of {owner} does not exist; check the path ({hint})")
    if kind == "file" and path.is_dir():
        raise missing(f"{what} {str(path)!r} of {owner} is a folder, not a file; pass the file itself ({hint})")
    if kind == "folder" and not path.is_dir():
        raise missing(f"{what} {str(path)!r} of {owner} is a file, not a folder; pass the folder ({hint})")


def _coerce(owner: str, key: str, typ: type, raw: Any, flag: str = "-o") -> Any:
    if raw is None or isinstance(raw, typ) and not (typ is int and isinstance(raw, bool)):
        return raw
    try:
        if typ is bool:
            text = str(raw).strip().lower()
            if text not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError(raw)
            return text in ("1", "true", "yes", "on")
        if typ is int and isinstance(raw, float) and not raw.is_integer():
            raise ValueError(raw)
        return typ(raw)
    except (TypeError, ValueError):
        raise UsageError(f"option {key}={raw!r} of {owner} is not a valid {typ.__name__}; "
                         f"pass e.g. {flag} {key} <{typ.__name__}>") from None


def validate_options(owner: str, declared: dict[str, Option], given: dict[str, Any], flag: str = "-o",
                     missing: type[Exception] = CheckpointError) -> dict[str, Any]:
    """Check option names, convert values to their types, fill defaults; unknown or missing keys are errors."""
    for key in given:
        if key not in declared:
            close = difflib.get_close_matches(key, list(declared), n=1)
            hint = f" Did you mean: {close[0]}?" if close else ""
            known = ", ".join(sorted(declared)) or "(it takes no options)"
            raise UsageError(f"unknown option {key!r} for {owner} ({flag} {key}).{hint} Options: {known}")
    out = {}
    for key, opt in declared.items():
        if key in given:
            out[key] = opt.convert(owner, key, given[key], flag, missing)
        elif opt.required:
            raise UsageError(f"{owner} needs option {key!r} ({opt.help}); pass {flag} {key} VALUE")
        else:
            out[key] = opt.default
    return out


class Configurable:
    """An extension with a registry name, a description and typed options."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    options: ClassVar[dict[str, Option]] = {}
    # the command-line flag that carries this kind's options, named in hints (-o encoders, -d datasets, ...)
    option_flag: ClassVar[str] = "-o"
    # what a missing path option raises: its kind's exit code (5 checkpoints; 6 data files; 2 otherwise)
    missing_path_error: ClassVar[type[Exception]] = UsageError

    def __init__(self, **options: Any):
        self.opts = validate_options(f"{self.kind_label()} {self.name!r}", self.options, options, self.option_flag,
                                     self.missing_path_error)

    @classmethod
    def kind_label(cls) -> str:
        return "extension"

    def cache_parts(self) -> dict[str, Any]:
        """Inputs besides the options that can change what this extension computes (e.g. a file an option names
        inside a string); they join its cache identity (``jerc_eval.cache.identity``). Paths are hashed by
        content. The options, the class, its version and its source file are always in the key already."""
        return {}


# ----------------------------------------------------------------------------------------------- encoders
@dataclass(frozen=True)
class Preprocess:
    """How uint8 images become the encoder's input (travels with the weights, like timm's pretrained_cfg)."""

    input_size: int
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    interpolation: str = "bicubic"


@dataclass
class LoadedEncoder:
    """A ready encoder: ``module`` maps normalised (B, 3, S, S) float tensors to (B, D) features."""

    module: Any  # torch.nn.Module
    preprocess: Preprocess
    arch: str
    paradigm: str
    feature_protocol: str
    weights_sha256: str | None  # None only for an explicitly requested random-initialised floor
    augmentation: dict[str, Any] = field(default_factory=dict)  # pretraining recipe (the recommendation needs it)
    meta: dict[str, Any] = field(default_factory=dict)


class EncoderAdapter(Configurable):
    """Loads one family of pretrained encoders. Implement :meth:`load`; optionally :meth:`random_init`."""

    paradigm: ClassVar[str] = "JE"
    missing_path_error = CheckpointError

    @classmethod
    def kind_label(cls) -> str:
        return "encoder"

    @abc.abstractmethod
    def load(self) -> LoadedEncoder:
        """Return the encoder with its weights loaded strictly. Never fall back to random weights."""

    def random_init(self, seed: int) -> LoadedEncoder | None:
        """The same architecture with seeded random weights (the floor a probe reaches without pretraining)."""
        return None


# ----------------------------------------------------------------------------------------- corruptions
class CorruptionSuite(Configurable):
    """A set of named corruptions with severities. Implement :meth:`corrupt` for one chunk of images."""

    corruptions: ClassVar[dict[str, str]] = {}  # name -> family
    default: ClassVar[tuple[str, ...]] = ()  # what runs when no subset is asked for
    severities: ClassVar[tuple[int, ...]] = (1, 2, 3, 4, 5)
    min_size: ClassVar[int] = 32
    backends: ClassVar[tuple[str, ...]] = ("reference",)  # the first is the default
    backend: str = "reference"  # set by the core from the run's ``backend`` key
    device: str = "cpu"  # where an in-process (torch) backend runs
    prerendered: ClassVar[bool] = False  # True: corrupted images are read from files (implement load_cell/iter_cell)
    option_flag = "-S"
    missing_path_error = DataError

    @classmethod
    def kind_label(cls) -> str:
        return "corruption suite"

    @abc.abstractmethod
    def corrupt(self, images: np.ndarray, corruption: str, severity: int, seeds: np.ndarray) -> np.ndarray:
        """Corrupt uint8 NHWC images; image i's randomness comes from ``seeds[i]`` alone."""

    def warm_up(self, corruptions: list[str]) -> None:
        """Optional: one-time set-up that every corruption worker would otherwise repeat for ``corruptions`` (a JIT
        compile, say). The pipeline runs it in a background thread of the main process while it extracts clean
        features, and waits for it before forking the workers, which inherit the result. The default does
        nothing; an error here is ignored (the same work then happens, and fails, in the workers)."""

    def load_cell(self, corruption: str, severity: int, n: int) -> np.ndarray:
        """Pre-rendered suites only: the ``n`` corrupted test images of one cell, in test-set order."""
        raise NotImplementedError

    def iter_cell(self, corruption: str, severity: int, n: int, chunk: int) -> Iterator[np.ndarray]:
        """Pre-rendered suites only: the same images as :meth:`load_cell`, as consecutive uint8 NHWC chunks of
        ``chunk`` images (the last one shorter), in test-set order. This is what the pipeline reads.

        The default slices :meth:`load_cell`, so it holds a whole cell in memory; override it to read one chunk
        at a time (memory bounded whatever the size of the set), checking the cell (present, ``n`` images)
        before the first chunk.
        """
        cell, step = self.load_cell(corruption, severity, n), max(1, chunk)
        for start in range(0, len(cell), step):
            yield cell[start:start + step]

    def validate(self, test_images: np.ndarray, test_labels: np.ndarray) -> None:
        """Check the suite fits the test set (pre-rendered suites: counts, sizes, labels). Raise DataError."""

    def validate_cells(self, cells: list[tuple[str, int]], test_labels: np.ndarray) -> None:
        """Pre-rendered suites: check every (corruption, severity) cell of the run is there with one image per test
        image, before any compute and without decoding images (count files, read array headers). Raise
        DataError. The default checks nothing (a missing cell then fails when it is read)."""

    def families(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for name, fam in self.corruptions.items():
            out.setdefault(fam, []).append(name)
        return out


# -------------------------------------------------------------------------------------------- datasets
@dataclass
class ImageSet:
    images: np.ndarray  # (N, H, W, 3) uint8
    labels: np.ndarray  # (N,) int64


@dataclass
class LoadedDataset:
    train: ImageSet
    test: ImageSet
    class_names: tuple[str, ...]
    fingerprint: str
    provenance: dict[str, Any] = field(default_factory=dict)


class Dataset(Configurable):
    """A labelled image dataset with train and test splits. Implement :meth:`load`."""

    option_flag = "-d"
    missing_path_error = DataError

    @classmethod
    def kind_label(cls) -> str:
        return "dataset"

    @abc.abstractmethod
    def load(self, seed: int) -> LoadedDataset:
        """Return both splits as uint8 NHWC arrays (deterministic given ``seed``)."""


# ---------------------------------------------------------------------------------------------- probes
@dataclass
class FittedProbe:
    predict: Any  # callable: features (N, D) float32 ndarray -> labels (N,) int64 ndarray
    info: dict[str, Any]  # every hyperparameter, the chosen regularisation, train accuracy


class Probe(Configurable):
    """Fits a classifier on frozen features. Implement :meth:`fit`."""

    option_flag = "-p"

    @classmethod
    def kind_label(cls) -> str:
        return "probe"

    @abc.abstractmethod
    def fit(self, features: np.ndarray, labels: np.ndarray, num_classes: int, seed: int,
            device: str) -> FittedProbe:
        """Fit on train features; return a predictor and its hyperparameters."""


# ------------------------------------------------------------------------------------------- reporters
class Reporter(Configurable):
    """Renders a results document as text; the core writes it (atomically) to ``filename``."""

    filename: ClassVar[str]

    @classmethod
    def kind_label(cls) -> str:
        return "reporter"

    @abc.abstractmethod
    def render(self, results: dict[str, Any]) -> str:
        """Return the file's full text."""
