"""Corrupting the test set chunk by chunk in a process pool, overlapped with the caller's feature extraction."""
from __future__ import annotations

import multiprocessing as mp
import os
import threading
from collections import deque
from typing import Any, Callable, Iterator

import numpy as np

from .api import CorruptionSuite
from .errors import DataError
from .seeding import image_seeds

_WORKER: dict = {}


def _limit_cv2_threads() -> None:
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:  # pragma: no cover - opencv is a dependency of the reference backend
        pass


def _init_worker(suite: CorruptionSuite, images: np.ndarray) -> None:
    _limit_cv2_threads()
    _WORKER["suite"], _WORKER["images"] = suite, images


def _corrupt(suite: CorruptionSuite, images: np.ndarray, corruption: str, severity: int, start: int, stop: int,
             run_seed: int) -> np.ndarray:
    seeds = image_seeds(run_seed, corruption, severity, stop - start, offset=start)
    return suite.corrupt(images[start:stop], corruption, severity, seeds)


def _work(task: tuple[str, int, int, int, int]) -> np.ndarray:
    corruption, severity, start, stop, run_seed = task
    return _corrupt(_WORKER["suite"], _WORKER["images"], corruption, severity, start, stop, run_seed)


# Set by the CLI's SIGINT/SIGTERM handler. A worker that a signal to the process group ends may die holding the
# pool's queue lock, and Pool.terminate() then waits for that lock forever: an interrupted pool is abandoned
# instead (its workers killed, its exit-time terminate cancelled).
interrupted = threading.Event()
_signal_seen = [0]


class Terminated(KeyboardInterrupt):
    """SIGTERM, ended like Ctrl-C: one line, no traceback (also none from worker processes)."""


def note_signal(signum: int) -> None:
    """Called by the CLI's handler before it raises. The raise itself can be swallowed -- when the handler runs
    inside an ``os.register_at_fork`` hook (logging's, during a pool's fork) Python only prints it as unraisable
    -- so the polled waits below re-raise from this record."""
    _signal_seen[0] = signum
    interrupted.set()


def raise_if_interrupted() -> None:
    if interrupted.is_set():
        import signal

        raise Terminated() if _signal_seen[0] == signal.SIGTERM else KeyboardInterrupt()


def _abandon(pool: Any, before: set[int]) -> None:
    handler = getattr(pool, "_worker_handler", None)  # stop it from forking replacements for the killed workers
    if handler is not None:
        handler._state = "TERMINATE"
    for child in mp.active_children():
        if child.pid not in before:
            child.kill()
    finalizer = getattr(pool, "_terminate", None)  # the exit-time terminate that would wait for the lock
    if finalizer is not None:
        finalizer.cancel()


# How often a wait in the main thread wakes up to run pending signal handlers (see interruptible).
POLL_S = 0.25


def interruptible(get: Callable[[float], Any]) -> Any:
    """``get(timeout)`` of a result (``AsyncResult.get``, ``Future.result``), polled: a SIGTERM or Ctrl-C that the
    kernel delivers to another thread (a pool's helper thread, the warm-up thread) only sets a flag that the main
    thread acts on when it next runs Python code; a wait without a timeout would never get there (the run would
    hang instead of ending with one line)."""
    import concurrent.futures

    while True:
        raise_if_interrupted()
        try:
            return get(POLL_S)
        except (mp.TimeoutError, concurrent.futures.TimeoutError):
            continue


def join(thread: threading.Thread) -> None:
    """``thread.join()``, polled for the same reason as :func:`interruptible`."""
    while thread.is_alive():
        raise_if_interrupted()
        thread.join(POLL_S)


def warm_up(suite: CorruptionSuite, corruptions: list[str]) -> threading.Thread | None:
    """Start ``suite.warm_up(corruptions)`` in a background thread (None when the suite has no warm-up or reads
    pre-rendered sets). Join it before :func:`corrupt_chunks` forks its workers: a fork while the thread holds a
    lock would hand the children a lock nobody releases."""
    if suite.prerendered or type(suite).warm_up is CorruptionSuite.warm_up:
        return None

    def quietly() -> None:
        try:
            suite.warm_up(list(corruptions))
        except Exception:  # noqa: BLE001 - only a head start: the workers redo (and report) the same work
            pass

    thread = threading.Thread(target=quietly, name="jerc-eval-warm-up", daemon=True)
    thread.start()
    return thread


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


def fork_beside(child: Callable[..., Any], child_args: tuple, here: Callable[[], Any]) -> tuple[Any, Any]:
    """``(child(*child_args), here())``, the first computed in a forked process while this one computes the second,
    when fork is there and this process may use a second core; one after the other otherwise. ``child`` must be a
    module-level function (its arguments and result are pickled); it must not enter torch's thread pool, which a
    process forked after the pool started cannot use."""
    if "fork" not in mp.get_all_start_methods() or default_workers() < 2:
        return child(*child_args), here()
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=mp.get_context("fork")) as pool:
        future = pool.submit(child, *child_args)
        mine = here()
        return interruptible(future.result), mine


def read_chunks(suite: CorruptionSuite, cells: list[tuple[str, int]], n: int,
                chunk: int) -> Iterator[tuple[tuple[str, int], int, int, np.ndarray]]:
    """A pre-rendered suite's cells as :func:`corrupt_chunks` yields computed ones:
    ``((corruption, severity), start, stop, images[start:stop])``, read with ``suite.iter_cell`` one chunk at a
    time (nothing is corrupted). The chunks must be consecutive, of ``chunk`` images but the last."""
    chunk = max(1, chunk)
    for c, s in cells:
        start = 0
        for imgs in suite.iter_cell(c, s, n, chunk):
            if len(imgs) != min(chunk, n - start) or (len(imgs) and imgs.ndim != 4):
                raise DataError(f"suite {suite.name!r} gave {len(imgs)} images of shape {imgs.shape[1:]} at "
                                f"{start} of {c}/{s}; iter_cell must yield NHWC chunks of {chunk} images (the "
                                f"last shorter), {n} in all")
            yield (c, s), start, start + len(imgs), imgs
            start += len(imgs)
        if start != n:
            raise DataError(f"suite {suite.name!r} gave {start} images for {c}/{s} but the test set has {n}")


def corrupt_chunks(suite: CorruptionSuite, images: np.ndarray, cells: list[tuple[str, int]], run_seed: int,
                   workers: int | None = None, chunk: int = 1024, task: int = 250,
                   overlap: bool = True) -> Iterator[tuple[tuple[str, int], int, int, np.ndarray]]:
    """Yield ``((corruption, severity), start, stop, corrupted images[start:stop])``: every cell of ``cells`` in
    order, each as consecutive chunks of at most ``chunk`` images.

    Image i of cell (c, s) is seeded by ``image_seeds(run_seed, c, s, n)[i]``, so results are identical for any
    ``workers``, ``chunk`` and ``task`` (the images one pool task corrupts). Memory is bounded whatever the number
    of images: with ``workers > 1`` at most ``2 * workers`` tasks plus two chunks are in flight while the caller
    consumes chunks. A pre-rendered suite's cells are read the same way, a chunk at a time (``iter_cell``).

    ``overlap=False`` alternates instead: the pool corrupts one chunk (split evenly over the workers; ``task`` is
    not used) while the caller waits, then idles while the caller consumes it: for a caller whose work (a CPU
    forward pass) wants the same cores, so that a multi-threaded forward never competes with busy pool workers.
    Measured on four corruptions of the default run on 2 cores: 56 and 66 s alternating against 63 s
    overlapping for the corrupted cells, a difference within that machine's run-to-run noise.
    """
    n = len(images)
    chunk, task = max(1, chunk), max(1, task)
    spans = [(a, min(a + chunk, n)) for a in range(0, n, chunk)]
    if suite.prerendered:  # released corrupted sets (ImageNet-C JPEGs, CIFAR-10-C .npy): read, never compute
        yield from read_chunks(suite, cells, n, chunk)
        return
    workers = default_workers() if workers is None else workers
    chunks = [((c, s), a, b) for c, s in cells for a, b in spans]

    def parts(a: int, b: int) -> list[tuple[int, int]]:  # the pool tasks of one chunk
        return [(x, min(x + task, b)) for x in range(a, b, task)]

    if workers <= 1:  # in-process; no global state, so several streams may interleave
        _limit_cv2_threads()
        for (c, s), a, b in chunks:
            out = [_corrupt(suite, images, c, s, x, y, run_seed) for x, y in parts(a, b)]
            yield (c, s), a, b, out[0] if len(out) == 1 else np.concatenate(out)
        return
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
    before = {p.pid for p in mp.active_children()}
    pool = ctx.Pool(workers, initializer=_init_worker, initargs=(suite, images))
    try:
        if not overlap:
            for (c, s), a, b in chunks:
                step = -(-(b - a) // workers)
                handles = [pool.apply_async(_work, ((c, s, x, min(x + step, b), run_seed),)) for x in range(a, b, step)]
                out = [interruptible(h.get) for h in handles]
                yield (c, s), a, b, out[0] if len(out) == 1 else np.concatenate(out)
            return
        pending: deque = deque()
        todo = iter(chunks)
        in_flight, limit = 0, 2 * workers + -(-min(chunk, n) // task)  # always one more chunk queued

        def submit() -> bool:
            nonlocal in_flight
            nxt = next(todo, None)
            if nxt is None:
                return False
            (c, s), a, b = nxt
            handles = [pool.apply_async(_work, ((c, s, x, y, run_seed),)) for x, y in parts(a, b)]
            pending.append((nxt, handles))
            in_flight += len(handles)
            return True

        while in_flight < limit and submit():
            pass
        while pending:
            ((c, s), a, b), handles = pending.popleft()
            out = [interruptible(h.get) for h in handles]
            in_flight -= len(handles)
            while in_flight < limit and submit():
                pass
            yield (c, s), a, b, out[0] if len(out) == 1 else np.concatenate(out)

    finally:
        if interrupted.is_set():
            _abandon(pool, before)
        else:
            pool.terminate()


def corrupt_cells(suite: CorruptionSuite, images: np.ndarray, cells: list[tuple[str, int]], run_seed: int,
                  workers: int | None = None, chunk: int = 250) -> Iterator[tuple[tuple[str, int], np.ndarray]]:
    """Yield ``((corruption, severity), corrupted images)`` in the order of ``cells`` (whole cells; ``chunk`` is
    the images one pool task corrupts). Same images as :func:`corrupt_chunks`, for any ``workers`` and ``chunk``.
    """
    n = len(images)
    buf: list[np.ndarray] = []
    for cell, _, stop, imgs in corrupt_chunks(suite, images, cells, run_seed, workers, chunk=max(n, 1), task=chunk):
        buf.append(imgs)
        if stop == n:
            yield cell, buf[0] if len(buf) == 1 else np.concatenate(buf)
            buf = []
