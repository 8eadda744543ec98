"""Checks that run before any compute: labels, output and cache folders, the device.

Each raises a one-line :class:`~jerc_eval.errors.JercError` that names the problem and the fix (and the flag that
carries the option), so a mistake costs well under a second and never a forward pass.
"""
from __future__ import annotations

import errno
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DataError, UsageError


# ------------------------------------------------------------------------------------------------ labels
def check_label_array(labels: Any, where: str, name: str | None = None) -> None:
    """Labels must be a 1-d integer array (a float label would be truncated, a bool one is not a class index)."""
    name = name or f"{where} labels"
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise DataError(f"{name} has shape {labels.shape}; labels must be one class index per image (shape (N,)); "
                        f"save y.reshape(-1) or y.argmax(1) for one-hot labels")
    if labels.dtype.kind not in "iu":
        hint = " (some are not whole numbers)" if labels.dtype.kind == "f" and len(labels) and \
            not np.all(np.isfinite(labels) & (labels == np.round(labels))) else ""
        raise DataError(f"{name} are {labels.dtype}{hint}; labels must be integer class indices 0..K-1: save "
                        f"them as integers (y.astype(numpy.int64) if they are whole numbers)")


def validate_labels(data: Any, dataset: str) -> list[str]:
    """Check both splits' labels against the dataset's classes; return warnings (errors raise DataError).

    Rules: integer 1-d labels, one per image; a non-empty train and test split; every value in 0..K-1 where K is
    the number of class names; at least 2 classes in train. A test class that train lacks is a warning (its
    images can only be misclassified; the accuracy is still computed)."""
    k = len(data.class_names)
    for split, s in (("train", data.train), ("test", data.test)):
        check_label_array(s.labels, f"{dataset} {split}")
        n_img, n_lab = len(s.images), len(s.labels)
        if n_img == 0 and n_lab == 0:
            raise DataError(f"{dataset} {split} split is empty; it needs at least one image per class")
        if n_img != n_lab:
            raise DataError(f"{dataset} {split}: {n_img} images but {n_lab} labels; give one label per image")
        lo, hi = int(s.labels.min()), int(s.labels.max())
        if lo < 0 or hi >= k:
            bad = lo if lo < 0 else hi
            raise DataError(f"{dataset} {split} has label {bad}, outside 0..{k - 1} (the dataset names {k} "
                            f"classes); labels must be class indices 0..K-1")
    train_classes = np.unique(data.train.labels)
    if len(train_classes) < 2:
        raise DataError(f"{dataset} train split has a single class ({data.class_names[int(train_classes[0])]!r}); "
                        f"a probe needs at least 2 classes (one class scores 100 % by construction)")
    unseen = np.setdiff1d(np.unique(data.test.labels), train_classes)
    if len(unseen):
        names = ", ".join(repr(data.class_names[int(c)]) for c in unseen[:5]) + (" ..." if len(unseen) > 5 else "")
        n = int(np.isin(data.test.labels, unseen).sum())
        return [f"{dataset}: test class(es) {names} have no train images, so their {n} test image(s) can only be "
                f"misclassified (accuracy still computed); add train images of those classes"]
    return []


# ---------------------------------------------------------------------------------------- output folders
def _nearest_existing(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_writable_dir(path: str | Path, flag: str, what: str) -> None:
    """``path`` is (or can be created as) a writable folder; nothing is created. UsageError (exit 2) if not."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{flag} {str(path)!r} is a file, not a folder; pass a folder for the {what}")
    base = _nearest_existing(path)
    if not base.is_dir():
        raise UsageError(f"{flag} {str(path)!r}: {str(base)!r} is a file, not a folder; pass a folder for the {what}")
    if not os.access(base, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {str(path)!r} is not writable ({str(base)!r} is read-only for this user); pass a "
                         f"writable folder for the {what}")


# ------------------------------------------------------------------------------------------------ device
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda)(?::(\d+))?$")


def check_device(requested: str) -> None:
    """``auto``, ``cpu``, ``mps``, ``cuda`` or ``cuda:N`` that this machine has; UsageError (exit 2) otherwise."""
    m = _DEVICE.match(str(requested))
    if not m or (m.group(2) is not None and m.group(1) != "cuda"):
        raise UsageError(f"--device {requested!r} is not a device; use auto, cpu, cuda or cuda:N")
    kind, index = m.group(1), m.group(2)
    if kind == "cuda":
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UsageError(f"--device {requested} but no CUDA device is available here; use --device cpu or auto")
        if index is not None and int(index) >= count:
            raise UsageError(f"--device {requested} but this machine has {count} CUDA device(s) (cuda:0.."
                             f"cuda:{count - 1}); use one of those or --device auto")
    elif kind == "mps":
        import torch

        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise UsageError("--device mps but MPS is not available here; use --device cpu or auto")


# ----------------------------------------------------------------------------------------- disk full
def no_space_message(exc: OSError, folder: str | Path | None = None) -> str | None:
    """The one-line message for a full disk (ENOSPC / EDQUOT), naming ``folder`` (or the folder of the file the
    error names); None for other errors."""
    if exc.errno not in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        return None
    if folder is None and exc.filename:
        folder = Path(exc.filename).parent
    where = f" of {str(folder)!r}" if folder else " (writing the results or the feature cache)"
    return (f"no space left on the device{where}; free some space, or pass --out / --cache-dir on another disk "
            f"(or --no-cache)")
