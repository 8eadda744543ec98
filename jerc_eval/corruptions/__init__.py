"""Corruption names, families and severities (ImageNet-C, Hendrycks & Dietterich 2019).

Families are keyed by name, never by position: parallel lists in different orders silently mis-normalise mCE.
"""
from __future__ import annotations

FAMILIES: dict[str, tuple[str, ...]] = {
    "noise": ("gaussian_noise", "shot_noise", "impulse_noise"),
    "blur": ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur"),
    "weather": ("snow", "frost", "fog", "brightness"),
    "digital": ("contrast", "elastic_transform", "pixelate", "jpeg_compression"),
    "extra": ("speckle_noise", "gaussian_blur", "spatter", "saturate"),
}
COMMON: tuple[str, ...] = tuple(c for f in ("noise", "blur", "weather", "digital") for c in FAMILIES[f])
EXTRA: tuple[str, ...] = FAMILIES["extra"]
ALL: tuple[str, ...] = COMMON + EXTRA
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)
FAMILY_OF: dict[str, str] = {c: f for f, cs in FAMILIES.items() for c in cs}
