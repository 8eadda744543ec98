"""Every random draw in a run derives from the run seed and the draw's identity (name, severity, index...).

A draw never comes from a global RNG, so results do not depend on process count, order or chunking.
"""
from __future__ import annotations

import hashlib
from contextlib import contextmanager
from typing import Iterator

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


@contextmanager
def kept_process_state() -> Iterator[None]:
    """Everything a run may touch of the process is as it was afterwards, also when the run raises: torch's
    thread count, the global RNGs (torch CPU and CUDA, numpy's legacy ``np.random``, Python's ``random``, which
    the reference corruptions and random-init floors seed), environment variables, numpy's error handling and
    print options, and torch's default dtype. A public call never leaves the caller's process changed."""
    import os
    import random

    import torch

    threads = torch.get_num_threads()
    torch_rng = torch.random.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    np_rng, py_rng = np.random.get_state(), random.getstate()
    env = dict(os.environ)
    err, printopts, dtype = np.geterr(), np.get_printoptions(), torch.get_default_dtype()
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.random.set_rng_state(torch_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
        np.random.set_state(np_rng)
        random.setstate(py_rng)
        for k in set(os.environ) - set(env):
            del os.environ[k]
        for k, v in env.items():
            if os.environ.get(k) != v:
                os.environ[k] = v
        np.seterr(**err)
        np.set_printoptions(**printopts)
        torch.set_default_dtype(dtype)
