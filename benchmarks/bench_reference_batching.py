"""The reference backend's batched corruptions against its own image-by-image loop (the way imagecorruptions is
called), one process: zoom_blur, brightness and saturate go through the reference code a batch at a time
(``jerc_eval.corruptions.reference._STACKED``), with bit-identical output, checked here on every timed batch.

    python benchmarks/bench_reference_batching.py [--out benchmarks/results/bench_reference_batching.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_corruptions import _images, _time  # noqa: E402
from jerc_eval.corruptions import reference  # noqa: E402
from jerc_eval.seeding import image_seeds  # noqa: E402

# (size, images, parameter table): 32 px with CIFAR-10-C's table is the default run
PLAN = ((32, 512, "cifar10"), (32, 512, "imagenet"), (64, 256, "imagenet"))


def loop(images: np.ndarray, name: str, severity: int, seeds: np.ndarray, params: str) -> np.ndarray:
    return np.stack([reference.corrupt_one(im, name, severity, int(s), params) for im, s in zip(images, seeds)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="benchmarks/results/bench_reference_batching.json")
    ap.add_argument("--severities", default="1,3,5")
    args = ap.parse_args()
    rows = []
    print(f"{'corruption':<12} {'table':<9} {'px':>3} {'sev':>3} {'loop img/s':>10} {'batched img/s':>13} {'x':>5}")
    for size, n, params in PLAN:
        imgs = _images(size, n)
        for name in sorted(reference._STACKED):
            for sev in (int(s) for s in args.severities.split(",")):
                seeds = image_seeds(0, name, sev, n)
                want = loop(imgs, name, sev, seeds, params)
                got = reference.corrupt_batch(imgs, name, sev, seeds, params)
                if not np.array_equal(got, want):
                    raise SystemExit(f"batched {name} {params} severity {sev} differs from the loop")
                t_loop = _time(lambda: loop(imgs, name, sev, seeds, params), repeats=2)
                t_batch = _time(lambda: reference.corrupt_batch(imgs, name, sev, seeds, params), repeats=3)
                row = {"corruption": name, "params": params, "size": size, "severity": sev, "images": n,
                       "loop_ips": n / t_loop, "batched_ips": n / t_batch, "speedup": t_loop / t_batch,
                       "identical": True}
                rows.append(row)
                print(f"{name:<12} {params:<9} {size:>3} {sev:>3} {row['loop_ips']:>10.0f} "
                      f"{row['batched_ips']:>13.0f} {row['speedup']:>5.1f}", flush=True)
    doc = {"benchmark": "reference backend: batched calls vs the image-by-image loop (one process)",
           "machine": platform.platform(), "cpus": os.cpu_count(),
           "reference": reference.reference_version("cifar10"), "rows": rows}
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(doc, fh, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
