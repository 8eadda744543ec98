"""Built-in corruption suite: ImageNet-C (15 common + 4 extra corruptions) through ``imagecorruptions``.

Option ``params`` picks the per-severity parameter table: ``imagenet`` (ImageNet-C), ``cifar10`` (CIFAR-10-C,
hendrycks' make_cifar_c.py, for 32 px images) or ``auto`` (default: ``cifar10`` when the test images are at most
32 px on their short side, else ``imagenet``).  The table in use is part of ``backend_version`` (results.json
``suite.backend_version``, the reports, and the feature-cache key).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..api import CorruptionSuite, Option
from ..corruptions import COMMON, FAMILY_OF
from ..hookspecs import hookimpl

PARAMS_CHOICES = ("auto", "imagenet", "cifar10")


def _auto_params(images: np.ndarray) -> str:
    from ..corruptions.fast import auto_params  # the rule lives with the tables

    return auto_params(*images.shape[1:3])


class ImageNetC(CorruptionSuite):
    name = "imagenet-c"
    description = ("ImageNet-C (Hendrycks & Dietterich 2019): 15 common corruptions in 4 families + 4 extra, "
                   "severities 1-5; ImageNet-C parameters, or CIFAR-10-C's for 32 px images (-S params "
                   "auto|imagenet|cifar10)")
    corruptions = dict(FAMILY_OF)
    default = COMMON
    backends = ("reference", "fast")
    options = {
        "params": Option(str, "auto", "per-severity parameter table: auto (cifar10 for images <= 32 px on their "
                                      "short side, else imagenet), imagenet (ImageNet-C) or cifar10 (CIFAR-10-C)",
                         choices=PARAMS_CHOICES),
    }

    def __init__(self, **options: Any):
        super().__init__(**options)
        self._resolved: str | None = None if self.opts["params"] == "auto" else self.opts["params"]

    @property
    def params(self) -> str:
        """The parameter table in use ("imagenet" | "cifar10"); "auto" until the test images have been seen."""
        return self._resolved or "auto"

    def validate(self, test_images: np.ndarray, test_labels: np.ndarray) -> None:
        if self._resolved is None:  # params=auto: decided once, by the test set's image size
            self._resolved = _auto_params(test_images)

    def _table_for(self, images: np.ndarray) -> str:
        return self._resolved or _auto_params(images)

    def warm_up(self, corruptions: list[str]) -> None:
        """The reference glass blur runs imagecorruptions' numba-compiled pixel shuffle, which each worker process
        compiled for itself (about 4 s a process); compiled once here, the forked workers inherit it."""
        if self.backend == "reference" and "glass_blur" in corruptions:
            tiny = np.zeros((1, self.min_size, self.min_size, 3), dtype=np.uint8)
            self.corrupt(tiny, "glass_blur", 1, np.zeros(1, dtype=np.int64))

    def corrupt(self, images: np.ndarray, corruption: str, severity: int, seeds: np.ndarray) -> np.ndarray:
        params = self._table_for(images)
        if self.backend == "fast":
            from ..corruptions.fast import corrupt_batch as fast_batch

            return fast_batch(images, corruption, severity, seeds, device=self.device, params=params)
        from ..corruptions.reference import corrupt_batch

        return corrupt_batch(images, corruption, severity, seeds, params=params)

    @property
    def backend_version(self) -> str:
        if self.backend == "fast":
            from ..corruptions.fast import FAST_VERSION

            base = f"jerc-eval-fast=={FAST_VERSION}"
        else:
            from ..corruptions.reference import reference_version

            base = reference_version(self.params)
        return f"{base}; params={self.params}"


@hookimpl
def register_corruption_suites(register: Any) -> None:
    register(ImageNetC)
