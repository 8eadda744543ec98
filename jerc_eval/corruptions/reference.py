"""The reference backend: ``imagecorruptions`` (maintained fork imagecorruptions-imaug), one image at a time.

Per-image seeding: ``glass_blur`` and ``impulse_noise`` take ``seed=``; every other corruption draws from NumPy's
global generator, which is re-seeded with the image's own seed before each call, so an image's corruption does
not depend on which process or chunk handles it.
"""
from __future__ import annotations

import numpy as np

from . import ALL

SEEDED_BY_ARGUMENT = frozenset({"glass_blur", "impulse_noise"})


def reference_version() -> str:
    import importlib.metadata as md

    for dist in ("imagecorruptions-imaug", "imagecorruptions"):
        try:
            return f"{dist}=={md.version(dist)}"
        except md.PackageNotFoundError:
            continue
    return "imagecorruptions==unknown"


def corrupt_one(image: np.ndarray, name: str, severity: int, seed: int) -> np.ndarray:
    from imagecorruptions import corrupt

    np.random.seed(int(seed) & 0xFFFFFFFF)
    kwargs = {"seed": int(seed)} if name in SEEDED_BY_ARGUMENT else {}
    out = corrupt(image, severity=int(severity), corruption_name=name, **kwargs)
    return out[..., :3] if out.ndim == 3 else np.repeat(out[..., None], 3, axis=2)


def corrupt_batch(images: np.ndarray, name: str, severity: int, seeds: np.ndarray) -> np.ndarray:
    """Corrupt uint8 NHWC RGB images with the reference code; ``seeds[i]`` drives image i alone."""
    if name not in ALL:
        raise KeyError(name)
    out = np.empty_like(images)
    for i, (img, seed) in enumerate(zip(images, seeds)):
        out[i] = corrupt_one(img, name, severity, int(seed))
    return out
