"""Throughput (images/s) of the reference ``imagecorruptions`` vs the fast torch backend, per corruption.

Reference: one process, image by image (as the reference is used).  Fast: one ``corrupt_batch`` call per batch,
on the CPU (and on CUDA when available).  Severity 3 (the middle of the range) unless --severity is given.
Writes ``benchmarks/results/bench_corruptions_cpu.json`` (or --out).

    python benchmarks/bench_corruptions.py            # a few minutes on 2 cores
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from jerc_eval.corruptions import ALL  # noqa: E402
from jerc_eval.corruptions import fast  # noqa: E402
from jerc_eval.corruptions.fidelity import natural_images, reference_batch  # noqa: E402
from jerc_eval.seeding import image_seeds  # noqa: E402

# (size, reference images, fast batch size, parameter table): small counts at 224 to stay within minutes on 2
# cores; 32 px uses CIFAR-10-C's table (what `-S params auto` picks for such images), both backends alike
PLAN = ((32, 32, 128, "cifar10"), (64, 16, 64, "imagenet"), (224, 8, 16, "imagenet"))


def _ref_slice(args):
    imgs, name, severity, seeds, params = args
    return reference_batch(imgs, name, severity, seeds, params)


def _ref_all_cores(pool, imgs, name, severity, seeds, params) -> float:
    """Reference throughput with one process per core (the engine's layout), pool already started."""
    k = pool._processes
    parts = [(imgs[i::k], name, severity, seeds[i::k], params) for i in range(k)]
    return len(imgs) / _time(lambda: pool.map(_ref_slice, parts), repeats=2)


def _images(size: int, n: int) -> np.ndarray:
    base = natural_images(size, min(n, 8))
    return np.ascontiguousarray(np.concatenate([base] * int(np.ceil(n / len(base))))[:n])


def _time(fn, repeats: int = 3) -> float:
    """Best of ``repeats`` wall-clock timings (the machine is shared: the minimum is the least disturbed)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def bench(names=ALL, severity: int = 3, plan=PLAN, cuda: bool | None = None, pool=None) -> list[dict]:
    cuda = torch.cuda.is_available() if cuda is None else cuda
    rows = []
    for size, n_ref, n_fast, params in plan:
        imgs_ref = _images(size, n_ref)
        imgs_fast = _images(size, n_fast)
        for name in names:
            seeds_ref = image_seeds(0, name, severity, n_ref)
            seeds_fast = image_seeds(0, name, severity, n_fast)
            # warm-up (numba compilation, frost texture cache, lazy imports) outside the timings
            reference_batch(imgs_ref[:1], name, severity, seeds_ref[:1], params)
            fast.corrupt_batch(imgs_fast[:2], name, severity, seeds_fast[:2], params=params)
            t_ref = _time(lambda: reference_batch(imgs_ref, name, severity, seeds_ref, params))
            t_cpu = _time(lambda: fast.corrupt_batch(imgs_fast, name, severity, seeds_fast, params=params))
            row = {"corruption": name, "size": size, "params": params, "severity": severity,
                   "ref_images": n_ref, "fast_batch": n_fast,
                   "ref_ips": n_ref / t_ref, "fast_cpu_ips": n_fast / t_cpu,
                   "speedup_cpu": (n_fast / t_cpu) / (n_ref / t_ref), "fast_cuda_ips": None,
                   "ref_all_cores_ips": None}
            if pool is not None:
                # enough images per worker that the pool's fixed cost (fork, pickling) does not dominate
                imgs_all = _images(size, n_ref * pool._processes * (8 if size <= 64 else 2))
                row["ref_all_cores_ips"] = _ref_all_cores(pool, imgs_all, name, severity,
                                                          image_seeds(0, name, severity, len(imgs_all)), params)
            if cuda:
                x = torch.from_numpy(_images(size, 4 * n_fast)).cuda()
                s = image_seeds(0, name, severity, len(x))
                fast.corrupt_batch(x[:2], name, severity, s[:2], params=params)
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                fast.corrupt_batch(x, name, severity, s, params=params)
                torch.cuda.synchronize()
                row["fast_cuda_ips"] = len(x) / (time.perf_counter() - t0)
                if row["ref_all_cores_ips"]:
                    row["cuda_over_ref_all_cores"] = row["fast_cuda_ips"] / row["ref_all_cores_ips"]
            rows.append(row)
            ra = row["ref_all_cores_ips"]
            print(f"{name:18s} {size:4d}px  ref {row['ref_ips']:8.1f} img/s"
                  + (f" (all cores {ra:8.1f})" if ra else "") + f"   fast-cpu {row['fast_cpu_ips']:8.1f} img/s"
                  f"  x{row['speedup_cpu']:5.1f}" + (f"   cuda {row['fast_cuda_ips']:9.1f}" if cuda else ""),
                  flush=True)
    return rows


def format_table(rows: list[dict]) -> str:
    sizes = sorted({r["size"] for r in rows})
    by = {(r["corruption"], r["size"]): r for r in rows}
    names = list(dict.fromkeys(r["corruption"] for r in rows))
    cuda = any(r["fast_cuda_ips"] is not None for r in rows)
    head = f"{'corruption':18s}" + "".join(
        f" | {s}px ref  fast-cpu  speedup" + ("      cuda" if cuda else "") for s in sizes)
    lines = [head, "-" * len(head)]
    for nme in names:
        line = f"{nme:18s}"
        for s in sizes:
            r = by[(nme, s)]
            line += f" | {r['ref_ips']:10.1f} {r['fast_cpu_ips']:9.1f} {r['speedup_cpu']:7.1f}x"
            if cuda:
                line += f" {r['fast_cuda_ips'] or 0:9.1f}"
        lines.append(line)
    for s in sizes:
        rs = [r for r in rows if r["size"] == s]
        tot_ref = len(rs) / sum(1 / r["ref_ips"] for r in rs)
        tot_fast = len(rs) / sum(1 / r["fast_cpu_ips"] for r in rs)
        line = (f"all {len(rs)} at {s}px (harmonic mean img/s): ref {tot_ref:.1f}, fast-cpu {tot_fast:.1f}, "
                f"x{tot_fast / tot_ref:.1f}")
        if all(r["ref_all_cores_ips"] for r in rs):
            line += f"; ref on all cores {len(rs) / sum(1 / r['ref_all_cores_ips'] for r in rs):.1f}"
        lines.append(line)
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--severity", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (and cv2 threads); 1 = like-for-like with the single-process reference")
    ap.add_argument("--names", default=",".join(ALL))
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                   "bench_corruptions_cpu.json"))
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    try:
        import cv2

        cv2.setNumThreads(a.threads)
    except ImportError:
        pass
    t0 = time.time()
    import multiprocessing as mp

    # the all-cores reference column: one forked worker per core, as the engine runs the reference
    with mp.get_context("fork").Pool(os.cpu_count() or 1) as pool:
        rows = bench(a.names.split(","), a.severity, pool=pool)
    print(format_table(rows))
    meta = {"fast_version": fast.FAST_VERSION, "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(), "cuda": torch.cuda.is_available(), "python": platform.python_version(),
            "machine": platform.machine(), "severity": a.severity, "plan(size, ref_images, fast_batch, params)": PLAN,
            "seconds": round(time.time() - t0, 1),
            "note": "reference: one process, image by image (ref_ips) and one process per core (ref_all_cores_ips); "
                    "fast: one batched call; best of 3 wall-clock timings (2 for all cores), shared CPU"}
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
