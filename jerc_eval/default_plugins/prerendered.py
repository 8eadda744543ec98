"""Pre-rendered corruption suites: the released datasets are the field's deterministic reference.

- ``cifar10-c``: Hendrycks' CIFAR-10-C ``.npy`` files: ``<root>/<corruption>.npy`` holding severities 1..5 stacked
  (5 x N images, 32 px) and ``<root>/labels.npy``. Pair it with the clean CIFAR-10 test set in the same order
  (for example ``--dataset npz``).
- ``imagenet-c-folder``: the ImageNet-C layout ``<root>/<corruption>/<severity>/<class>/<image>``; pair it with the
  clean validation images as ``--dataset imagefolder`` (classes and files sorted by name in both).

Both read a cell chunk by chunk (``iter_cell``): a memory-mapped slice of the ``.npy`` file, or the chunk's JPEGs
decoded, so memory holds one chunk of corrupted images whatever the size of the set. ``validate_cells`` checks
every cell of a run up front from the ``.npy`` headers or the file listings, without decoding images.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

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
    options = {"root": Option(Path, help="folder with <corruption>.npy and labels.npy", must_exist=True,
                              path_kind="folder")}
    # every ImageNet-C name: one whose file is absent is a data error naming the file, not an unknown name
    corruptions = dict(FAMILY_OF)
    prerendered = True
    backend = "prerendered"
    min_size = 32

    def __init__(self, **options: Any):
        super().__init__(**options)
        root = Path(self.opts["root"])
        present = _available([p.stem for p in root.glob("*.npy")])
        # the default: the files present (all 15 of the release); none at all fails when the run is checked
        self.default = tuple(c for c in present if FAMILY_OF[c] != "extra") or tuple(
            c for c in FAMILY_OF if FAMILY_OF[c] != "extra")
        self._arrays: dict[str, np.ndarray] = {}

    def _missing(self, corruption: str) -> DataError:
        root = Path(self.opts["root"])
        have = sorted(p.stem for p in root.glob("*.npy") if p.stem in FAMILY_OF)
        held = f"it holds {', '.join(have)}" if have else "it holds no <corruption>.npy file"
        return DataError(f"no {corruption}.npy under {root} ({held}); point -S root at the extracted CIFAR-10-C "
                         f"folder or pick corruptions it has with -c")

    @property
    def backend_version(self) -> str:
        return f"files:{self.opts['root']}"

    def _array(self, corruption: str) -> np.ndarray:
        if corruption not in self._arrays:
            path = Path(self.opts["root"]) / f"{corruption}.npy"
            if not path.is_file():
                raise self._missing(corruption)
            try:
                self._arrays[corruption] = np.load(path, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError, EOFError) as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise DataError(f"{path} is not a readable .npy ({first[:120]}); copy it from the CIFAR-10-C "
                                f"release again") from None
        return self._arrays[corruption]

    def _checked(self, corruption: str, n: int) -> np.ndarray:
        """The memory-mapped array of ``corruption``, its header checked (count, shape, dtype); reads no images."""
        arr = self._array(corruption)
        if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
            raise DataError(f"{corruption}.npy holds a {arr.dtype} array of shape {arr.shape}; expected uint8 images "
                            f"of shape (5 x N, H, W, 3) as released")
        if len(arr) != 5 * n:
            raise DataError(f"{corruption}.npy holds {len(arr)} images, expected 5 x {n} (severities 1-5 stacked) "
                            f"for a test set of {n}; pair cifar10-c with the matching clean test set")
        return arr

    def load_cell(self, corruption: str, severity: int, n: int) -> np.ndarray:
        arr = self._checked(corruption, n)
        return np.array(arr[(severity - 1) * n: severity * n])  # a writable copy of the memory-mapped slice

    def iter_cell(self, corruption: str, severity: int, n: int, chunk: int) -> Iterator[np.ndarray]:
        arr = self._checked(corruption, n)
        offset, step = (severity - 1) * n, max(1, chunk)
        for start in range(0, n, step):  # only this chunk's pages are read from the file
            yield np.array(arr[offset + start: offset + min(start + step, n)])

    def validate_cells(self, cells: list[tuple[str, int]], test_labels: np.ndarray) -> None:
        for corruption in dict.fromkeys(c for c, _ in cells):
            self._checked(corruption, len(test_labels))

    def validate(self, test_images: np.ndarray, test_labels: np.ndarray) -> None:
        labels_path = Path(self.opts["root"]) / "labels.npy"
        if labels_path.exists():
            try:
                labels = np.load(labels_path, allow_pickle=False)
            except (OSError, ValueError, EOFError):
                raise DataError(f"{labels_path} is not a readable .npy; copy it from the CIFAR-10-C release "
                                f"again") from None
            n = len(test_labels)
            if len(labels) != 5 * n or not np.array_equal(labels[:n], test_labels):
                raise DataError("cifar10-c labels.npy does not match the test set's labels (order or count); "
                                "evaluate it with the clean CIFAR-10 test set in its original order")

    def corrupt(self, images: np.ndarray, corruption: str, severity: int, seeds: np.ndarray) -> np.ndarray:
        raise DataError("cifar10-c reads released images; it cannot corrupt new ones")


class ImageNetCFolder(CorruptionSuite):
    name = "imagenet-c-folder"
    description = "ImageNet-C as released: <root>/<corruption>/<severity>/<class>/<image> (JPEG q=85, 224 px)"
    options = {"root": Option(Path, help="ImageNet-C root folder", must_exist=True, path_kind="folder"),
               "image_size": Option(int, 0, "resize to this square size; 0 keeps the files' size", minimum=0)}
    corruptions = dict(FAMILY_OF)
    prerendered = True
    backend = "prerendered"

    def __init__(self, **options: Any):
        super().__init__(**options)
        root = Path(self.opts["root"])
        # every ImageNet-C name stays known: a corruption whose folder is absent is a data error (6) naming the
        # folder, not an unknown name; the default is the folders present
        self.present = _available([p.name for p in root.iterdir() if p.is_dir()])
        self.default = tuple(c for c in self.present if FAMILY_OF[c] != "extra") or tuple(
            c for c in FAMILY_OF if FAMILY_OF[c] != "extra")

    @property
    def backend_version(self) -> str:
        return f"files:{self.opts['root']}"

    def _files(self, corruption: str, severity: int) -> list[tuple[Path, int]]:
        """``(file, class index)`` of one cell: classes sorted by folder name, files by name within a class."""
        folder = Path(self.opts["root"]) / corruption / str(severity)
        if not folder.is_dir():
            raise DataError(f"{folder} is missing; ImageNet-C needs <root>/<corruption>/<severity>/<class>/")
        with os.scandir(folder) as it:  # directory entries carry their type: no stat per file
            classes = sorted(e.name for e in it if e.is_dir())
        out: list[tuple[Path, int]] = []
        for k, c in enumerate(classes):
            with os.scandir(folder / c) as it:
                out.extend((folder / c / name, k) for name in sorted(e.name for e in it if e.is_file()))
        return out

    def _checked_files(self, corruption: str, severity: int, n: int) -> list[tuple[Path, int]]:
        files = self._files(corruption, severity)
        if len(files) != n:
            raise DataError(f"{corruption}/{severity} holds {len(files)} images but the test set has {n}; "
                            f"pair imagenet-c-folder with the matching clean images (--dataset imagefolder)")
        return files

    def _decode(self, files: list[tuple[Path, int]]) -> np.ndarray:
        from PIL import Image

        size = self.opts["image_size"]
        out = []
        for f, _ in files:
            try:
                with Image.open(f) as im:
                    im = im.convert("RGB")
                    out.append(np.asarray(im.resize((size, size), Image.BICUBIC) if size else im))
            except (OSError, ValueError, SyntaxError) as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise DataError(f"image {f} is corrupt or truncated ({first[:100]}); replace it from the "
                                f"ImageNet-C release") from None
        if len({im.shape for im in out}) > 1:
            raise DataError(f"images under {files[0][0].parent.parent} differ in size; pass -S image_size N to "
                            f"resize them")
        return np.stack(out)

    def load_cell(self, corruption: str, severity: int, n: int) -> np.ndarray:
        return self._decode(self._checked_files(corruption, severity, n))

    def iter_cell(self, corruption: str, severity: int, n: int, chunk: int) -> Iterator[np.ndarray]:
        files = self._checked_files(corruption, severity, n)  # counted before any image is decoded
        step, shape = max(1, chunk), None
        for start in range(0, n, step):
            imgs = self._decode(files[start:start + step])
            if shape is not None and imgs.shape[1:] != shape:
                raise DataError(f"images under {files[start][0].parent.parent} differ in size; pass -S image_size N "
                                f"to resize them")
            shape = imgs.shape[1:]
            yield imgs

    def validate_cells(self, cells: list[tuple[str, int]], test_labels: np.ndarray) -> None:
        for corruption, severity in cells:
            files = self._checked_files(corruption, severity, len(test_labels))
            if not np.array_equal(np.fromiter((k for _, k in files), np.int64, len(files)), test_labels):
                raise DataError(f"ImageNet-C folder {corruption}/{severity}: classes/files do not line up with the "
                                f"test set; use the same class folders and file names, sorted, for the clean images")

    def validate(self, test_images: np.ndarray, test_labels: np.ndarray) -> None:
        c = next(iter(self.present), None)
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
