"""The `logreg` probe's model selection (stratified 5-fold CV over the C grid, then a refit) against
scikit-learn's ``LogisticRegressionCV`` on the same features, the same folds and the same grid.

Features: the zoo encoders' clean PhotoDigits features (what the default run probes), extracted once through
the run's feature cache. Both sides standardise with the train mean/std; scikit-learn runs lbfgs (multinomial,
float64) with ``n_jobs`` = the cores this process may use, as jerc-eval's folds do.

    python benchmarks/bench_probe_cv.py [--encoders zoo-mae,zoo-dino,zoo-byol] [--out benchmarks/results/bench_probe_cv.json]
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


def zoo_features(names: list[str], seed: int = 0) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray]:
    """Clean train/test features of each encoder, train rows in the pipeline's canonical order."""
    from jerc_eval.cache import activated
    from jerc_eval.config import RunConfig
    from jerc_eval.pipeline import Evaluator, load_dataset, resolve
    from jerc_eval.plugins import create_host
    from jerc_eval.probes import canonical_order

    plan = resolve(RunConfig(encoders=names, seed=seed, no_cache=False), create_host())
    with activated(plan.cache):
        data = load_dataset(plan)
        order = canonical_order(data.train.images, seed)
        feats = {}
        for n in names:
            ev = Evaluator(n, plan.encoders[n], plan.encoders[n].load(), plan, data.fingerprint)
            feats[n] = (ev.features(data.train.images, "train", "clean", 0)[order],
                        ev.features(data.test.images, "test", "clean", 0))
    return feats, data.train.labels[order], data.test.labels, order


def bench_one(xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, yte: np.ndarray, n_cls: int) -> dict:
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import PredefinedSplit

    from jerc_eval.default_plugins.probes import LogRegProbe
    from jerc_eval.engine import default_workers
    from jerc_eval.probes import stratified_folds

    probe = LogRegProbe()
    grid = probe.c_grid()
    out: dict = {"n_train": int(len(ytr)), "dim": int(xtr.shape[1]), "c_grid": list(grid), "cores": default_workers()}
    t = time.perf_counter()
    fitted = probe.fit(xtr, ytr, n_cls, 0, "cpu")
    out["jerc_eval_s"] = time.perf_counter() - t
    out["jerc_eval_C"] = fitted.info["C"]
    out["jerc_eval_cv_accuracy_by_C"] = {str(k): v for k, v in fitted.info["cv_accuracy_by_C"].items()}
    out["jerc_eval_test_accuracy"] = float((fitted.predict(xte) == yte).mean())

    folds, _ = stratified_folds(ytr, 5)
    mean, std = xtr.mean(0), xtr.std(0, ddof=1).clip(1e-6)
    t = time.perf_counter()
    sk = LogisticRegressionCV(Cs=list(grid), cv=PredefinedSplit(folds), max_iter=probe.opts["max_iter"],
                              n_jobs=default_workers(), scoring="accuracy").fit((xtr - mean) / std, ytr)
    out["sklearn_s"] = time.perf_counter() - t
    out["sklearn_C"] = float(np.ravel(sk.C_)[0])
    out["sklearn_cv_accuracy_by_C"] = {str(c): float(v) for c, v in
                                       zip(grid, np.mean(next(iter(sk.scores_.values())), axis=0))}
    out["sklearn_test_accuracy"] = float((sk.predict((xte - mean) / std) == yte).mean())
    out["accuracy_difference_points"] = 100 * (out["jerc_eval_test_accuracy"] - out["sklearn_test_accuracy"])
    out["speedup_vs_sklearn"] = out["sklearn_s"] / out["jerc_eval_s"]
    return out


def main() -> None:
    import sklearn
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoders", default="zoo-mae,zoo-dino,zoo-byol")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_probe_cv.json"))
    args = ap.parse_args()
    names = args.encoders.split(",")
    feats, ytr, yte, _ = zoo_features(names)
    rows = {}
    for n in names:
        rows[n] = bench_one(*feats[n][:1], ytr, feats[n][1], yte, int(ytr.max()) + 1)
        r = rows[n]
        print(f"{n:<10} jerc-eval C={r['jerc_eval_C']:<8g} test {100 * r['jerc_eval_test_accuracy']:.2f} % "
              f"{r['jerc_eval_s']:6.1f} s | sklearn LogisticRegressionCV C={r['sklearn_C']:<8g} test "
              f"{100 * r['sklearn_test_accuracy']:.2f} % {r['sklearn_s']:6.1f} s | x{r['speedup_vs_sklearn']:.2f}")
    doc = {"benchmark": "bench_probe_cv", "python": platform.python_version(), "platform": platform.platform(),
           "torch": torch.__version__, "sklearn": sklearn.__version__, "results": rows}
    Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
