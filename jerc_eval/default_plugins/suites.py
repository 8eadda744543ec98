"""Built-in corruption suite: ImageNet-C (15 common + 4 extra corruptions) through ``imagecorruptions``."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..api import CorruptionSuite
from ..corruptions import COMMON, FAMILY_OF
from ..hookspecs import hookimpl


class ImageNetC(CorruptionSuite):
    name = "imagenet-c"
    description = ("ImageNet-C (Hendrycks & Dietterich 2019): 15 common corruptions in 4 families + 4 extra, "
                   "severities 1-5, reference code (imagecorruptions), ImageNet parameters")
    corruptions = dict(FAMILY_OF)
    default = COMMON
    backends = ("reference", "fast")

    def corrupt(self, images: np.ndarray, corruption: str, severity: int, seeds: np.ndarray) -> np.ndarray:
        if self.backend == "fast":
            from ..corruptions.fast import corrupt_batch as fast_batch

            return fast_batch(images, corruption, severity, seeds, device=self.device)
        from ..corruptions.reference import corrupt_batch

        return corrupt_batch(images, corruption, severity, seeds)

    @property
    def backend_version(self) -> str:
        if self.backend == "fast":
            from ..corruptions.fast import FAST_VERSION

            return f"jerc-eval-fast=={FAST_VERSION}"
        from ..corruptions.reference import reference_version

        return reference_version()


@hookimpl
def register_corruption_suites(register: Any) -> None:
    register(ImageNetC)
