"""Feature extraction in batches (eval mode, no grad) and an on-disk fp16 feature cache.

Features are always rounded to float16, cached or not, so a rerun from the cache gives bit-identical results.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .api import LoadedEncoder, Preprocess


def default_cache_dir() -> Path:
    env = os.environ.get("JERC_EVAL_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "jerc-eval"


def pick_device(requested: str = "auto") -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


def resize(x: Any, size: int, interpolation: str = "bicubic") -> Any:
    """Resize (B, 3, H, W) floats in [0, 1] to ``size`` x ``size`` (antialiased; unchanged when already that size).

    Evaluation and zoo pretraining both resize through here, so pretraining sees what probing sees.
    """
    import torch.nn.functional as F

    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    mode = interpolation if interpolation in ("bilinear", "bicubic", "nearest") else "bilinear"
    return F.interpolate(x, size=(size, size), mode=mode, align_corners=False if mode != "nearest" else None,
                         antialias=mode != "nearest").clamp_(0, 1)  # bicubic overshoots [0, 1]


def to_input(images: np.ndarray, pre: Preprocess, device: str) -> Any:
    """uint8 NHWC -> normalised float NCHW at the encoder's input size (resized only when sizes differ)."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).float().div_(255.0)
    if pre.input_size > 0:
        x = resize(x, pre.input_size, pre.interpolation)
    mean = torch.tensor(pre.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(pre.std, device=device).view(1, 3, 1, 1)
    return (x - mean) / std


@contextmanager
def single_threaded(blas: bool = False) -> Iterator[None]:
    """torch (and with ``blas``, the BLAS libraries numpy loaded, through threadpoolctl when installed) on one
    thread inside the block; the previous settings are restored on exit, also when the block raises."""
    import torch

    threads = torch.get_num_threads()
    limits = None
    torch.set_num_threads(1)
    try:
        if blas:
            try:
                from threadpoolctl import threadpool_limits

                limits = threadpool_limits(limits=1)
            except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
                pass
        yield
    finally:
        torch.set_num_threads(threads)
        if limits is not None:
            limits.restore_original_limits()


def extract(encoder: LoadedEncoder, images: np.ndarray, batch_size: int = 256, device: str = "cpu") -> np.ndarray:
    """Run the encoder over uint8 NHWC images; returns (N, D) float32 features rounded through float16.

    On a CPU with more than one torch thread the batches run side by side, one per thread, each on a single
    thread (inter-op instead of intra-op parallelism): the zoo's small encoders use two cores this way about
    twice as well (``benchmarks/bench_extract.py``). Every batch is the same slice either way and is computed on
    one thread, so the features do not depend on which thread ran it.
    """
    import torch

    module = encoder.module.to(device).eval()
    starts = list(range(0, len(images), batch_size))

    def one(start: int) -> np.ndarray:
        with torch.inference_mode():  # thread-local: entered in the thread that runs the batch
            feats = module(to_input(images[start:start + batch_size], encoder.preprocess, device))
            return feats.float().flatten(1).to(torch.float16).cpu().numpy()

    threads = torch.get_num_threads()
    if device != "cpu" or threads < 2 or len(starts) < 2:
        outs = [one(s) for s in starts]
    else:
        from concurrent.futures import ThreadPoolExecutor

        with single_threaded(), ThreadPoolExecutor(min(threads, len(starts))) as pool:
            outs = list(pool.map(one, starts))
    return np.concatenate(outs).astype(np.float32)


def encoder_fingerprint(encoder: LoadedEncoder, adapter_name: str, adapter_version: str) -> str:
    """What determines an encoder's features: weights, protocol, preprocessing, adapter version."""
    payload = json.dumps({"adapter": adapter_name, "adapter_version": adapter_version,
                          "weights": encoder.weights_sha256, "protocol": encoder.feature_protocol,
                          "pre": encoder.preprocess.__dict__, "arch": encoder.arch}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


class FeatureCache:
    """fp16 ``.npy`` files keyed by everything that determines the features; writes are atomic."""

    def __init__(self, root: Path | None, enabled: bool = True):
        self.root = Path(root) / "features" if root is not None else None
        self.enabled = enabled and root is not None
        self.hits = 0
        self.misses = 0

    def key(self, **parts: Any) -> str:
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:40]

    def path(self, key: str) -> Path:
        assert self.root is not None
        return self.root / key[:2] / f"{key}.npy"

    def has(self, key: str) -> bool:
        return self.enabled and self.path(key).exists()

    def get(self, key: str) -> np.ndarray | None:
        if not self.enabled or not self.path(key).exists():
            self.misses += 1
            return None
        try:
            arr = np.load(self.path(key))
        except (OSError, ValueError):  # a damaged entry is recomputed, never trusted
            self.misses += 1
            return None
        self.hits += 1
        return arr.astype(np.float32)

    def put(self, key: str, feats: np.ndarray) -> None:
        if not self.enabled:
            return
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.save(fh, feats.astype(np.float16))
            os.replace(tmp, path)
        except BaseException:  # a full disk (or an interrupt) leaves no temporary file behind
            os.unlink(tmp)
            raise
