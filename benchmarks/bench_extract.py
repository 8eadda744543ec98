"""Feature extraction (`jerc_eval.features.extract`) against the bare encoder forward, on the CPU.

Reference: the encoder's forward over the same batches in one loop, torch's intra-op threads splitting each op
(what a plain ``for batch: model(batch)`` does). Measured: ``extract``, which on a CPU with more than one torch
thread runs the batches side by side, one single-threaded batch per thread. Both include the uint8 -> float
input conversion. Times are scaled to the default run's images per encoder (158,000).

    python benchmarks/bench_extract.py [--images 4096] [--out benchmarks/results/bench_extract_cpu.json]

Also reports how far the two sets of features are apart (they differ only in how the ops split their sums).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_corruptions import _time as best_of  # noqa: E402  (best of N wall-clock timings)

DEFAULT_RUN_IMAGES = 158_000  # per encoder: 75 corrupted cells x 2,000 + clean train and test


def bare_forward(encoder, images, batch_size: int):
    import numpy as np
    import torch

    from jerc_eval.features import to_input

    module = encoder.module.eval()
    outs = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            outs.append(module(to_input(images[start:start + batch_size], encoder.preprocess, "cpu"))
                        .float().flatten(1).to(torch.float16).numpy())
    return np.concatenate(outs).astype(np.float32)


def main() -> None:
    import numpy as np
    import torch

    from jerc_eval.features import extract
    from jerc_eval.plugins import create_host

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--images", type=int, default=4096)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--encoders", default="zoo-mae,zoo-dino,zoo-byol")
    ap.add_argument("--out", default="benchmarks/results/bench_extract_cpu.json")
    args = ap.parse_args()

    host = create_host(entry_points=False)
    images = np.random.default_rng(0).integers(0, 256, size=(args.images, 32, 32, 3), dtype=np.uint8)
    scale = DEFAULT_RUN_IMAGES / args.images
    res = {"benchmark": "feature extraction vs bare encoder forward (CPU)", "machine": platform.platform(),
           "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "images": args.images,
           "batch_size": args.batch_size, "scaled_to_images": DEFAULT_RUN_IMAGES, "encoders": {}}
    print(f"{'encoder':<10} {'bare forward':>13} {'extract':>9} {'speed-up':>9} {'max |diff|':>11}   "
          f"(s per {DEFAULT_RUN_IMAGES:,} images, {torch.get_num_threads()} threads)")
    for name in args.encoders.split(","):
        enc = host.registry("encoders").get(name)().load()
        ref = bare_forward(enc, images, args.batch_size)  # warm-up, and the reference features
        got = extract(enc, images, args.batch_size)
        t_ref = best_of(lambda: bare_forward(enc, images, args.batch_size), args.reps) * scale
        t_new = best_of(lambda: extract(enc, images, args.batch_size), args.reps) * scale
        row = {"bare_forward_s": round(t_ref, 1), "extract_s": round(t_new, 1), "speedup": round(t_ref / t_new, 2),
               "max_abs_diff": float(np.abs(ref - got).max()), "identical_fraction": float((ref == got).mean())}
        res["encoders"][name] = row
        print(f"{name:<10} {t_ref:>12.1f}s {t_new:>8.1f}s {row['speedup']:>8.2f}x {row['max_abs_diff']:>11.2e}",
              flush=True)
    res["total_bare_forward_s"] = round(sum(r["bare_forward_s"] for r in res["encoders"].values()), 1)
    res["total_extract_s"] = round(sum(r["extract_s"] for r in res["encoders"].values()), 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1))
    print(f"total: bare forward {res['total_bare_forward_s']} s, extract {res['total_extract_s']} s -> {args.out}")


if __name__ == "__main__":
    main()
