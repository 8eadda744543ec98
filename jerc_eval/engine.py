"""Corrupting the test set cell by cell in a process pool, overlapped with the caller's feature extraction."""
from __future__ import annotations

import multiprocessing as mp
import os
from collections import deque
from typing import Iterator

import numpy as np

from .api import CorruptionSuite
from .seeding import image_seeds

_WORKER: dict = {}


def _init_worker(suite: CorruptionSuite, images: np.ndarray) -> None:
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:  # pragma: no cover - opencv is a dependency of the reference backend
        pass
    _WORKER["suite"], _WORKER["images"] = suite, images


def _work(task: tuple[str, int, int, int, int]) -> np.ndarray:
    corruption, severity, start, stop, run_seed = task
    seeds = image_seeds(run_seed, corruption, severity, stop - start, offset=start)
    return _WORKER["suite"].corrupt(_WORKER["images"][start:stop], corruption, severity, seeds)


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


def corrupt_cells(suite: CorruptionSuite, images: np.ndarray, cells: list[tuple[str, int]], run_seed: int,
                  workers: int | None = None, chunk: int = 250) -> Iterator[tuple[tuple[str, int], np.ndarray]]:
    """Yield ``((corruption, severity), corrupted images)`` in the order of ``cells``.

    Image i of cell (c, s) is seeded by ``image_seeds(run_seed, c, s, n)[i]``, so results are identical for any
    ``workers`` and ``chunk``. With ``workers > 1`` at most ``2 * workers`` cells are in flight at once, which
    bounds memory while the caller consumes cells.
    """
    if suite.prerendered:  # released corrupted sets (ImageNet-C JPEGs, CIFAR-10-C .npy): read, never compute
        for c, s in cells:
            yield (c, s), suite.load_cell(c, s, len(images))
        return
    workers = default_workers() if workers is None else workers
    n = len(images)
    spans = [(a, min(a + chunk, n)) for a in range(0, n, chunk)]
    if workers <= 1:
        _init_worker(suite, images)
        for c, s in cells:
            yield (c, s), np.concatenate([_work((c, s, a, b, run_seed)) for a, b in spans])
        return
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
    with ctx.Pool(workers, initializer=_init_worker, initargs=(suite, images)) as pool:
        pending: deque = deque()
        todo = iter(cells)
        for cell in todo:
            pending.append((cell, [pool.apply_async(_work, ((*cell, a, b, run_seed),)) for a, b in spans]))
            if len(pending) >= 2 * workers:
                break
        while pending:
            cell, parts = pending.popleft()
            out = np.concatenate([p.get() for p in parts])
            nxt = next(todo, None)
            if nxt is not None:
                pending.append((nxt, [pool.apply_async(_work, ((*nxt, a, b, run_seed),)) for a, b in spans]))
            yield cell, out
