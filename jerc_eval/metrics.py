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


# ------------------------------------------------------------------------------ ImageNet-C CE / mCE
# Errors are top-1 error rates in [0, 1]. A model's errors are given as ``{corruption: {severity: error}}``;
# severities may be keyed by int or str ("1".."5"), or given as a sequence indexed by severity 1..n.
# Corruptions are always keyed by NAME: dict order never matters.

_TABLE_TEXT: str | None = None


class MCEInputError(ValueError):
    """Errors that cannot give a (m)CE: a corruption or severity is missing, or severities do not match.

    ``missing`` lists what is absent, as corruption names or ``"corruption@severity"`` strings.
    """

    def __init__(self, message: str, missing: list[str] | None = None):
        super().__init__(message)
        self.missing = list(missing or [])


def imagenet_c_table() -> dict:
    """The packaged ImageNet-C facts (``jerc_eval/data/imagenet_c.json``), read with :mod:`importlib.resources`.

    Keys: ``about`` and ``provenance`` (sources), ``families`` (the 15 common corruptions in 4 families plus the 4
    ``extra``), ``common_in_mce`` (the 15 that define mCE), ``severities``, ``alexnet_top1_error`` (per corruption,
    a list indexed by severity 1..5) and ``alexnet_clean_top1_error`` (0.4348). A fresh copy on every call.
    """
    global _TABLE_TEXT
    if _TABLE_TEXT is None:
        from importlib import resources

        _TABLE_TEXT = resources.files("jerc_eval.data").joinpath("imagenet_c.json").read_text(encoding="utf-8")
    import json

    return json.loads(_TABLE_TEXT)


def mce_corruptions() -> tuple[str, ...]:
    """The 15 common ImageNet-C corruptions that define mCE; the 4 extra corruptions never enter it."""
    return tuple(imagenet_c_table()["common_in_mce"])


def alexnet_errors() -> dict[str, dict[int, float]]:
    """AlexNet's top-1 error on ImageNet-C, ``{corruption: {severity: error}}`` (all 19 corruptions).

    This is the CE/mCE normalizer of Hendrycks & Dietterich (2019). It is only meaningful for models evaluated
    on ImageNet-C itself: on any other dataset use a baseline results document (``baseline=``) instead.
    """
    return {c: dict(enumerate(errs, start=1)) for c, errs in imagenet_c_table()["alexnet_top1_error"].items()}


def alexnet_clean_error() -> float:
    """AlexNet's clean ImageNet top-1 error (0.4348), the normalizer of relative CE."""
    return float(imagenet_c_table()["alexnet_clean_top1_error"])


def _severity_map(values, corruption: str) -> dict[int, float]:
    if isinstance(values, dict):
        return {int(s): float(e) for s, e in values.items()}
    if isinstance(values, (list, tuple)):
        return {i: float(e) for i, e in enumerate(values, start=1)}
    raise MCEInputError(f"errors for {corruption!r} must be a mapping severity -> error, got {type(values).__name__}")


def _matched(errors, baseline_errors, corruption: str) -> tuple[dict[int, float], dict[int, float]]:
    mine, base = _severity_map(errors, corruption), _severity_map(baseline_errors, corruption)
    if set(mine) != set(base):
        raise MCEInputError(
            f"CE of {corruption!r} needs the same severities as the baseline: model has {sorted(mine)}, "
            f"baseline has {sorted(base)}",
            [f"{corruption}@{s}" for s in sorted(set(base) - set(mine))])
    return mine, base


def corruption_error(errors, baseline_errors, corruption: str = "corruption") -> float:
    """CE_c = Σ_s E_{s,c} / Σ_s E^base_{s,c} (a ratio; 1.0 = as bad as the baseline).

    ``errors`` and ``baseline_errors`` map severity -> top-1 error of one corruption; both must cover the same
    severities (else :class:`MCEInputError`). With AlexNet as the baseline this is Hendrycks & Dietterich's CE,
    meaningful only on ImageNet-C itself. NaN when the baseline made no error at all.
    """
    mine, base = _matched(errors, baseline_errors, corruption)
    denom = sum(base.values())
    return sum(mine.values()) / denom if denom > 0 else float("nan")


def relative_corruption_error(errors, clean_error: float, baseline_errors, baseline_clean_error: float,
                              corruption: str = "corruption") -> float:
    """Relative CE_c = Σ_s (E_{s,c} − E_clean) / Σ_s (E^base_{s,c} − E^base_clean): degradation vs the baseline's.

    NaN when the baseline does not degrade (denominator ≤ 0). With AlexNet as the baseline, meaningful only on
    ImageNet-C itself.
    """
    mine, base = _matched(errors, baseline_errors, corruption)
    denom = sum(e - baseline_clean_error for e in base.values())
    if denom <= 0:
        return float("nan")
    return sum(e - clean_error for e in mine.values()) / denom


def missing_for_mce(errors, baseline=None) -> list[str]:
    """What stops an mCE: common corruptions absent from ``errors`` (names), absent from the baseline
    (``"name (baseline)"``), then absent severities (``"corruption@s"``) against the baseline's severities
    (AlexNet's 1..5 by default). Empty when complete."""
    base = alexnet_errors() if baseline is None else baseline
    missing = [c for c in mce_corruptions() if c not in errors]
    missing += [f"{c} (baseline)" for c in mce_corruptions() if c not in base]
    for c in mce_corruptions():
        if c in errors and c in base:
            mine, theirs = _severity_map(errors[c], c), _severity_map(base[c], c)
            missing += [f"{c}@{s}" for s in sorted(set(theirs) - set(mine))]
    return missing


def _require_complete(errors, baseline) -> None:
    missing = missing_for_mce(errors, baseline)
    if missing:
        shown = ", ".join(missing[:12]) + (f" (+{len(missing) - 12} more)" if len(missing) > 12 else "")
        raise MCEInputError(f"mCE needs all 15 common ImageNet-C corruptions at every severity; missing: {shown}",
                            missing)


def mce(errors, baseline=None) -> float:
    """mCE in percent: 100 × mean of CE_c over the 15 common ImageNet-C corruptions (never the 4 extra).

    ``errors``: ``{corruption: {severity: error}}`` keyed by name (extra corruptions are ignored). ``baseline``:
    the same layout for the normalizing model, e.g. from :func:`errors_from_results` on a baseline results
    document; ``None`` uses AlexNet (:func:`alexnet_errors`), which is only meaningful on ImageNet-C itself.
    A missing corruption or severity raises :class:`MCEInputError` naming it, never a mean over fewer.
    """
    base = alexnet_errors() if baseline is None else baseline
    _require_complete(errors, base)
    ces = [corruption_error(errors[c], base[c], c) for c in mce_corruptions()]
    return 100.0 * sum(ces) / len(ces)


def relative_mce(errors, clean_error: float, baseline=None, baseline_clean_error: float | None = None) -> float:
    """Relative mCE in percent: 100 × mean of relative CE_c over the 15 common corruptions.

    ``baseline=None`` uses AlexNet and its clean error 0.4348 (only meaningful on ImageNet-C itself); a custom
    ``baseline`` needs its ``baseline_clean_error``. Missing corruptions raise :class:`MCEInputError`.
    """
    if baseline is None:
        base, base_clean = alexnet_errors(), alexnet_clean_error()
    else:
        if baseline_clean_error is None:
            raise MCEInputError("relative mCE against a custom baseline needs baseline_clean_error")
        base, base_clean = baseline, baseline_clean_error
    _require_complete(errors, base)
    rces = [relative_corruption_error(errors[c], clean_error, base[c], base_clean, c) for c in mce_corruptions()]
    return 100.0 * sum(rces) / len(rces)


def unnormalized_mce(errors) -> float:
    """UNNORMALIZED mCE, i.e. the plain mean top-1 error (percent) over the 15 common corruptions × 5 severities.

    Not comparable with (AlexNet-normalized) mCE numbers in papers: no baseline divides it. The 4 extra
    corruptions never enter it; a missing corruption or severity raises :class:`MCEInputError`.
    """
    _require_complete(errors, None)
    vals = [e for c in mce_corruptions() for e in _severity_map(errors[c], c).values()]
    return 100.0 * sum(vals) / len(vals)


def errors_from_rows(rows: list[dict], encoder: str) -> tuple[dict[str, dict[int, float]], float | None]:
    """Top-1 errors ``{corruption: {severity: 1 - accuracy}}`` and the clean error of one encoder, from the
    tidy rows of a results document (clean rows: corruption ``"clean"``, severity 0). Clean error is None when
    the rows hold no clean row."""
    errors: dict[str, dict[int, float]] = {}
    clean = None
    for r in rows:
        if r["encoder"] != encoder:
            continue
        if r["corruption"] == "clean":
            clean = 1.0 - float(r["accuracy"])
        else:
            errors.setdefault(r["corruption"], {})[int(r["severity"])] = 1.0 - float(r["accuracy"])
    return errors, clean


def ci_halfwidth(ci95: tuple[float, float] | list[float]) -> float:
    """Half the width of a (possibly asymmetric) 95 % interval."""
    return (float(ci95[1]) - float(ci95[0])) / 2.0


def regression_beyond_ci(acc: float, ci95, base_acc: float, base_ci95) -> tuple[float, float, float]:
    """Accuracy lost against a baseline, in percentage points, counted only beyond the combined 95 % interval.

    Returns ``(loss, margin, excess)``: ``loss = 100·(base_acc − acc)`` (negative = improvement), ``margin`` =
    100·√(h² + h_base²) with h the half-widths of the two intervals (independent estimates), and
    ``excess = max(0, loss − margin)``: the part of the loss that sampling noise does not explain.
    """
    loss = 100.0 * (float(base_acc) - float(acc))
    margin = 100.0 * math.hypot(ci_halfwidth(ci95), ci_halfwidth(base_ci95))
    return loss, margin, max(0.0, loss - margin)
