"""Every random draw in a run derives from the run seed and the draw's identity (name, severity, index...).

A draw never comes from a global RNG, so results do not depend on process count, order or chunking.
"""
from __future__ import annotations

import hashlib

import numpy as np


def derive_seed(run_seed: int, *keys: object) -> int:
    """Return a 31-bit seed that depends only on ``run_seed`` and ``keys`` (stable across processes)."""
    h = hashlib.sha256(repr((int(run_seed),) + tuple(keys)).encode()).digest()
    return int.from_bytes(h[:4], "little") & 0x7FFFFFFF


def image_seeds(run_seed: int, corruption: str, severity: int, n: int, offset: int = 0) -> np.ndarray:
    """Per-image seeds for one (corruption, severity) cell: image i gets derive(run, corruption, severity) + i.

    The base is hashed, the index added, so seeds are unique within a cell and cheap to compute for large n.
    """
    base = derive_seed(run_seed, corruption, int(severity))
    return ((base + np.arange(offset, offset + n, dtype=np.int64)) % 0x7FFFFFFF).astype(np.int64)
