"""Fit time and accuracy of the `logreg` probe (torch L-BFGS) against scikit-learn on the same features and C.

Synthetic Gaussian-mixture features stand in for encoder features (the probe only sees a matrix).

    python benchmarks/bench_probe.py [--n 20000 --dim 768 --classes 10,100] [--out benchmarks/results/bench_probe_cpu.json]

On a GPU machine the torch probe also runs on CUDA (float32) and its column is added.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


def make(n: int, dim: int, classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim)).astype(np.float32) * (2.0 / np.sqrt(dim))  # overlapping classes
    y = rng.integers(0, classes, size=n)
    return (centres[y] + rng.normal(size=(n, dim)).astype(np.float32)), y.astype(np.int64)


def bench(n: int, dim: int, classes: int, C: float, max_iter: int) -> dict:
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from jerc_eval.probes import fit_logreg

    x, y = make(n + n // 4, dim, classes)
    xtr, ytr, xte, yte = x[:n], y[:n], x[n:], y[n:]
    out = {"n_train": n, "n_test": len(yte), "dim": dim, "classes": classes, "C": C, "max_iter": max_iter}
    t = time.perf_counter()
    sc = StandardScaler().fit(xtr)
    sk = LogisticRegression(C=C, max_iter=max_iter).fit(sc.transform(xtr), ytr)
    out["sklearn_s"] = time.perf_counter() - t
    out["sklearn_acc"] = float((sk.predict(sc.transform(xte)) == yte).mean())
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for dev in devices:
        if dev == "cuda":
            fit_logreg(xtr[:1000], ytr[:1000], classes, c_grid=(C,), max_iter=5, seed=0, device=dev)
            torch.cuda.synchronize()
        t = time.perf_counter()
        model, _ = fit_logreg(xtr, ytr, classes, c_grid=(C,), max_iter=max_iter, seed=0, device=dev)
        if dev == "cuda":
            torch.cuda.synchronize()
        out[f"torch_{dev}_s"] = time.perf_counter() - t
        out[f"torch_{dev}_acc"] = float((model.predict(xte) == yte).mean())
        out[f"speedup_{dev}_vs_sklearn"] = out["sklearn_s"] / out[f"torch_{dev}_s"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--classes", default="10,100")
    ap.add_argument("--C", type=float, default=1.0)
    ap.add_argument("--max-iter", type=int, default=100)
    ap.add_argument("--out", default="benchmarks/results/bench_probe_cpu.json")
    a = ap.parse_args()
    rows = [bench(a.n, a.dim, int(k), a.C, a.max_iter) for k in a.classes.split(",")]
    print(f"{'classes':>8} {'sklearn s':>10} {'acc':>6} {'torch cpu s':>12} {'acc':>6} {'x':>6}")
    for r in rows:
        print(f"{r['classes']:>8} {r['sklearn_s']:>10.1f} {100 * r['sklearn_acc']:>6.1f} {r['torch_cpu_s']:>12.1f} "
              f"{100 * r['torch_cpu_acc']:>6.1f} {r['speedup_cpu_vs_sklearn']:>6.1f}"
              + (f"   cuda {r['torch_cuda_s']:.2f}s x{r['speedup_cuda_vs_sklearn']:.0f}" if "torch_cuda_s" in r else ""))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"benchmark": "logreg probe vs scikit-learn", "machine": platform.platform(),
                                       "cpus": os.cpu_count(), "rows": rows}, indent=1) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
