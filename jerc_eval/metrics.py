"""Metrics as pure functions, one definition each.

- accuracy: correct / n, with a Wilson score interval (95 % by default);
- paper Drop (Van Assel et al. 2025, Table 1): ``100 * (S1 - S5) / S1``, relative, severity 1 -> 5;
- drop vs clean at severity s: ``100 * (1 - acc_s / acc_clean)``.
"""
from __future__ import annotations

import math

Z95 = 1.959963984540054


def accuracy(correct: int, n: int) -> float:
    if n <= 0:
        raise ValueError("accuracy of an empty set")
    return correct / n


def wilson_interval(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (well behaved near 0 and 1, unlike the Wald interval)."""
    if n <= 0:
        raise ValueError("interval of an empty set")
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def paper_drop(s1: float, s5: float) -> float:
    """The paper's Drop in percent: relative accuracy lost from severity 1 to 5."""
    if s1 <= 0:
        return float("nan")
    return 100.0 * (s1 - s5) / s1


def paper_drop_se(s1: float, n1: int, s5: float, n5: int) -> float:
    """Standard error of :func:`paper_drop` by the delta method, treating S1 and S5 as independent binomials.

    S1 and S5 are measured on the same images, so they are positively correlated and this errs on the wide side.
    """
    if s1 <= 0:
        return float("nan")
    var_s1, var_s5 = s1 * (1 - s1) / n1, s5 * (1 - s5) / n5
    var_ratio = var_s5 / s1**2 + s5**2 * var_s1 / s1**4  # Var(S5/S1), first order
    return 100.0 * math.sqrt(var_ratio)


def drop_vs_clean(acc: float, clean: float) -> float:
    """Relative accuracy lost against the clean test set, in percent."""
    if clean <= 0:
        return float("nan")
    return 100.0 * (1.0 - acc / clean)


def mean(values: list[float]) -> float:
    vals = [v for v in values if not math.isnan(v)]
    return sum(vals) / len(vals) if vals else float("nan")
