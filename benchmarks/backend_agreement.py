"""Downstream fidelity: do two runs that differ only in the corruption backend give the same accuracies?

    jerc-eval run --out ref                        # reference backend (imagecorruptions)
    jerc-eval run --backend fast --out fast        # batched torch backend
    python benchmarks/backend_agreement.py ref/results.json fast/results.json

Per encoder x corruption x severity: accuracy(fast) - accuracy(reference) in points, and the same for each
corruption's mean accuracy over severities and for the paper's Drop.  Tolerance (issue #4): probe accuracy within
1 point.  A single cell of 2,000 test images carries sampling noise from the corruption's own random draws (the two
backends draw different numbers), so the verdict is stated on the per-corruption means (5 severities) and every
cell beyond 1 point is listed, with the standard error of a difference of two paired accuracies from the
per-cell disagreement rate where the results carry it (they do not: the binomial bound sqrt(2 p (1-p) / n) is
used, an upper bound for paired images).  Writes benchmarks/results/backend_agreement.json.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys

TOL = 1.0  # points


def _acc(doc: dict) -> dict[tuple[str, str, int], float]:
    return {(r["encoder"], r["corruption"], int(r["severity"])): float(r["accuracy"])
            for r in doc["rows"] if r["corruption"] != "clean"}


def compare(ref: dict, fast: dict) -> dict:
    a, b = _acc(ref), _acc(fast)
    if ref["dataset"]["fingerprint"] != fast["dataset"]["fingerprint"]:
        raise SystemExit("the two runs used different datasets; compare runs of the same dataset and seed")
    n = int(ref["dataset"]["n_test"])
    cells = []
    for key in sorted(set(a) & set(b)):
        d = 100 * (b[key] - a[key])
        p = (a[key] + b[key]) / 2
        cells.append({"encoder": key[0], "corruption": key[1], "severity": key[2], "reference": a[key],
                      "fast": b[key], "diff_points": round(d, 2),
                      "binomial_se_points": round(100 * math.sqrt(2 * p * (1 - p) / n), 2)})
    per_corr = {}
    for c in cells:
        per_corr.setdefault((c["encoder"], c["corruption"]), []).append(c)
    means = []
    for (enc, cor), cs in sorted(per_corr.items()):
        ra = sum(c["reference"] for c in cs) / len(cs)
        fa = sum(c["fast"] for c in cs) / len(cs)
        means.append({"encoder": enc, "corruption": cor, "reference_mean": round(ra, 4), "fast_mean": round(fa, 4),
                      "diff_points": round(100 * (fa - ra), 2), "within_tolerance": abs(100 * (fa - ra)) <= TOL})
    diffs = [abs(c["diff_points"]) for c in cells]
    return {
        "tolerance_points": TOL,
        "reference_backend": ref["suite"]["backend_version"], "fast_backend": fast["suite"]["backend_version"],
        "n_test": n, "cells": len(cells),
        "cell_mean_abs_diff_points": round(sum(diffs) / len(diffs), 3),
        "cell_max_abs_diff_points": max(diffs),
        "cells_beyond_tolerance": [c for c in cells if abs(c["diff_points"]) > TOL],
        "corruption_means": means,
        "corruption_means_within_tolerance": sum(m["within_tolerance"] for m in means),
        "corruption_means_total": len(means),
        "all_cells": cells,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("reference")
    ap.add_argument("fast")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                   "backend_agreement.json"))
    args = ap.parse_args(argv)
    with open(args.reference) as f:
        ref = json.load(f)
    with open(args.fast) as f:
        fast = json.load(f)
    res = compare(ref, fast)
    print(f"{res['cells']} cells: mean |fast - reference| {res['cell_mean_abs_diff_points']} points, max "
          f"{res['cell_max_abs_diff_points']}; {len(res['cells_beyond_tolerance'])} cells beyond {TOL} point")
    print(f"per-corruption means (5 severities) within {TOL} point: {res['corruption_means_within_tolerance']}/"
          f"{res['corruption_means_total']}")
    for m in res["corruption_means"]:
        if not m["within_tolerance"]:
            print(f"  {m['encoder']:10s} {m['corruption']:18s} {m['diff_points']:+.2f}")
    for c in res["cells_beyond_tolerance"]:
        print(f"  cell {c['encoder']:10s} {c['corruption']:18s} s{c['severity']} {c['diff_points']:+.2f} "
              f"(binomial SE of a difference <= {c['binomial_se_points']})")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
