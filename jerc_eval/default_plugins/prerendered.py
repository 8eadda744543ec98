"""Pre-rendered corruption suites: the released datasets are the field's deterministic reference.

- ``cifar10-c``: Hendrycks' CIFAR-10-C ``.npy`` files: ``<root>/<corruption>.npy`` holding severities 1..5 stacked
  (5 x N images, 32 px) and ``<root>/labels.npy``. Pair it with the clean CIFAR-10 test set in the same order
  (for example ``--dataset npz``).
- ``imagenet-c-folder``: the ImageNet-C layout ``<root>/<corruption>/<severity>/<class>/<image>``; pair it with the
  clean validation images as ``--dataset imagefolder`` (classes and files sorted by name in both).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..api import CorruptionSuite, Option
from ..corruptions import FAMILY_OF
from ..errors import DataError
from ..hookspecs import hookimpl


def _available(names: list[str]) -> dict[str, str]:
    return {c: FAMILY_OF[c] for c in FAMILY_OF if c in names}


class CIFAR10C(CorruptionSuite):
    name = "cifar10-c"
    description = "CIFAR-10-C as released (.npy per corruption, severities 1-5 stacked); reads, never computes"
    options = {"root": Option(Path, help="folder with <corruption>.npy and labels.npy", must_exist=True)}
    corruptions = dict(FAMILY_OF)  # narrowed to the files present when instantiated
    prerendered = True
    backend = "prerendered"
    min_size = 32

    def __init__(self, **options: Any):
        super().__init__(**options)
        root = Path(self.opts["root"])
        self.corruptions = _available([p.stem for p in root.glob("*.npy")])
        self.default = tuple(c for c in self.corruptions if c in FAMILY_OF and FAMILY_OF[c] != "extra")
        self._arrays: dict[str, np.ndarray] = {}

    @property
    def backend_version(self) -> str:
        return f"files:{self.opts['root']}"

    def _array(self, corruption: str) -> np.ndarray:
        if corruption not in self._arrays:
            self._arrays[corruption] = np.load(Path(self.opts["root"]) / f"{corruption}.npy", mmap_mode="r")
        return self._arrays[corruption]

    def load_cell(self, corruption: str, severity: int, n: int) -> np.ndarray:
        arr = self._array(corruption)
        if len(arr) != 5 * n:
            raise DataError(f"{corruption}.npy holds {len(arr)} images, expected 5 x {n} (severities 1-5 stacked) "
                            f"for a test set of {n}; pair cifar10-c with the matching clean test set")
        return np.array(arr[(severity - 1) * n: severity * n])  # a writable copy of the memory-mapped slice

    def validate(self, test_images: np.ndarray, test_labels: np.ndarray) -> None:
        labels_path = Path(self.opts["root"]) / "labels.npy"
        if labels_path.exists():
            labels = np.load(labels_path)
            n = len(test_labels)
            if len(labels) != 5 * n or not np.array_equal(labels[:n], test_labels):
                raise DataError("cifar10-c labels.npy does not match the test set's labels (order or count); "
                                "evaluate it with the clean CIFAR-10 test set in its original order")

    def corrupt(self, images: np.ndarray, corruption: str, severity: int, seeds: np.ndarray) -> np.ndarray:
        raise DataError("cifar10-c reads released images; it cannot corrupt new ones")


class ImageNetCFolder(CorruptionSuite):
    name = "imagenet-c-folder"
    description = "ImageNet-C as released: <root>/<corruption>/<severity>/<class>/<image> (JPEG q=85, 224 px)"
    options = {"root": Option(Path, help="ImageNet-C root folder", must_exist=True),
               "image_size": Option(int, 0, "resize to this square size; 0 keeps the files' size")}
    corruptions = dict(FAMILY_OF)
    prerendered = True
    backend = "prerendered"

    def __init__(self, **options: Any):
        super().__init__(**options)
        root = Path(self.opts["root"])
        self.corruptions = _available([p.name for p in root.iterdir() if p.is_dir()])
        self.default = tuple(c for c in self.corruptions if FAMILY_OF[c] != "extra")

    @property
    def backend_version(self) -> str:
        return f"files:{self.opts['root']}"

    def _files(self, corruption: str, severity: int) -> list[tuple[Path, int]]:
        folder = Path(self.opts["root"]) / corruption / str(severity)
        if not folder.is_dir():
            raise DataError(f"{folder} is missing; ImageNet-C needs <root>/<corruption>/<severity>/<class>/")
        classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
        return [(f, k) for k, c in enumerate(classes) for f in sorted((folder / c).iterdir()) if f.is_file()]

    def load_cell(self, corruption: str, severity: int, n: int) -> np.ndarray:
        from PIL import Image

        files = self._files(corruption, severity)
        if len(files) != n:
            raise DataError(f"{corruption}/{severity} holds {len(files)} images but the test set has {n}; "
                            f"pair imagenet-c-folder with the matching clean images (--dataset imagefolder)")
        size = self.opts["image_size"]
        out = []
        for f, _ in files:
            im = Image.open(f).convert("RGB")
            out.append(np.asarray(im.resize((size, size), Image.BICUBIC) if size else im))
        return np.stack(out)

    def validate(self, test_images: np.ndarray, test_labels: np.ndarray) -> None:
        c = next(iter(self.corruptions), None)
        if c is None:
            raise DataError(f"{self.opts['root']} holds no corruption folders (e.g. gaussian_noise/1/<class>/)")
        labels = np.array([k for _, k in self._files(c, 1)])
        if len(labels) != len(test_labels) or not np.array_equal(labels, test_labels):
            raise DataError("ImageNet-C folder classes/files do not line up with the test set; use the same class "
                            "folders and file names, sorted, for the clean images")

    def corrupt(self, images: np.ndarray, corruption: str, severity: int, seeds: np.ndarray) -> np.ndarray:
        raise DataError("imagenet-c-folder reads released images; it cannot corrupt new ones")


@hookimpl
def register_corruption_suites(register: Any) -> None:
    register(CIFAR10C)
    register(ImageNetCFolder)
