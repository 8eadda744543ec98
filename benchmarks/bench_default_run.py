r"""Time the default run (`jerc-eval run`, no arguments) cold and warm, against the bare encoder forward.

Cold: an empty cache (dataset rendered, every corrupted test set computed, every feature extracted).
Warm: the same command again (dataset and features come from the cache).
Reference: the bare forward of the same encoders over the same number of images, as a plain loop over batches
(intra-op threads), and as ``jerc_eval.features.extract`` runs it (batches side by side, one thread each): the
floor of any run that encodes every image.

    python benchmarks/bench_default_run.py [--out benchmarks/results/bench_default_run.json]
    python benchmarks/bench_default_run.py --run-args "--backend fast" --no-bare \
        --out benchmarks/results/bench_default_run_fast.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_extract

def timed_run(cache: Path, out: Path, extra: list[str] | None = None) -> float:
    env = dict(os.environ, JERC_EVAL_CACHE=str(cache), HF_HUB_OFFLINE="1")
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "jerc_eval", "run", "--out", str(out), "--quiet", *(extra or [])],
                   env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def bare_forward(n_images: int, size: int) -> dict[str, float]:
    """Seconds for the plain forward loop (intra-op threads, as ``for batch: model(batch)``) of each zoo encoder,
    and for ``jerc_eval.features.extract`` (batches side by side on single-threaded workers), scaled to
    ``n_images`` from 2,000 random images."""
    import numpy as np
    import torch

    from bench_extract import bare_forward as plain_loop
    from jerc_eval.features import extract
    from jerc_eval.plugins import create_host

    host = create_host(entry_points=False)
    images = np.random.default_rng(0).integers(0, 256, size=(2000, size, size, 3), dtype=np.uint8)
    out: dict[str, float] = {}
    for name in ("zoo-mae", "zoo-dino", "zoo-byol"):
        enc = host.registry("encoders").get(name)().load()
        extract(enc, images[:256])
        runs = ((name, lambda: plain_loop(enc, images, 256)), (f"{name} extract", lambda: extract(enc, images)))
        for label, fn in runs:
            t = time.perf_counter()
            fn()
            out[label] = (time.perf_counter() - t) / len(images) * n_images
    out["threads"] = torch.get_num_threads()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="benchmarks/results/bench_default_run.json")
    ap.add_argument("--keep", metavar="DIR", help="copy the run's results.json/report.md/report.html here")
    ap.add_argument("--run-args", default="", help="extra arguments of `jerc-eval run`, e.g. '--backend fast'")
    ap.add_argument("--no-bare", action="store_true", help="skip the bare-forward reference (it does not depend on "
                    "the run's arguments)")
    args = ap.parse_args()
    extra = args.run_args.split()
    with tempfile.TemporaryDirectory() as tmp:
        cache, res = Path(tmp) / "cache", Path(tmp) / "res"
        cold = timed_run(cache, res, extra)
        print(f"cold run: {cold:.1f} s", flush=True)
        cold_timing = json.loads((res / "results.json").read_text())["timing"]
        warm = timed_run(cache, res, extra)
        print(f"warm run: {warm:.1f} s", flush=True)
        doc = json.loads((res / "results.json").read_text())
        if args.keep:
            import shutil

            shutil.copytree(res, args.keep, dirs_exist_ok=True)
    n_cells = len(doc["suite"]["corruptions"]) * len(doc["suite"]["severities"])
    n_images = doc["dataset"]["n_test"] * n_cells + doc["dataset"]["n_train"] + doc["dataset"]["n_test"]
    result = {
        "benchmark": f"default run (jerc-eval run{' ' + args.run_args if args.run_args else ''})",
        "machine": platform.platform(), "cpus": os.cpu_count(),
        "cells": n_cells, "images_per_encoder": n_images,
        "cold_s": round(cold, 1), "warm_s": round(warm, 1),
        "cold_run_timing": {k: round(v, 1) if isinstance(v, float) else v for k, v in cold_timing.items()},
        "warm_run_timing": {k: round(v, 2) if isinstance(v, float) else v for k, v in doc["timing"].items()},
    }
    print(f"{'what':<34}{'seconds':>10}")
    print(f"{'cold run (empty cache)':<34}{cold:>10.1f}")
    print(f"{'warm run (cached)':<34}{warm:>10.1f}")
    if not args.no_bare:
        bare = bare_forward(n_images, int(doc["dataset"]["image_size"][0]))
        bare_total = sum(v for k, v in bare.items() if k.startswith("zoo-") and not k.endswith(" extract"))
        extract_total = sum(v for k, v in bare.items() if k.endswith(" extract"))
        result.update({
            "bare_forward_s": {k: round(v, 1) if isinstance(v, float) else v for k, v in bare.items()},
            "bare_forward_total_s": round(bare_total, 1), "extract_total_s": round(extract_total, 1),
            "cold_over_bare_forward": round(cold / bare_total, 2), "cold_over_extract": round(cold / extract_total, 2),
        })
        print(f"{'bare forward, 3 encoders':<34}{bare_total:>10.1f}   ({n_images} images each)")
        print(f"{'features.extract, 3 encoders':<34}{extract_total:>10.1f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
