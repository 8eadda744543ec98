"""Alignment evidence (our construction on top of Section 4) and the alignment-aware recommendation."""
from __future__ import annotations

import json

import numpy as np
import pytest

from jerc_eval import alignment_evidence as ae
from jerc_eval.default_plugins.encoders import BYOL_RECIPE, DINO_RECIPE, MAE_RECIPE

SIZE = 8
D = SIZE * SIZE


def _synthetic(n=240, seed=0, classes=4):
    """8×8 grayscale float images: class means along two pixel directions + small isotropic spread."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    Q, _ = np.linalg.qr(rng.standard_normal((D, D)))
    sig = Q[:, :2]
    means = rng.standard_normal((classes, 2)) * 0.15
    x = 0.5 + means[y] @ sig.T + 0.004 * rng.standard_normal((n, D))
    return x.reshape(n, SIZE, SIZE, 1), y, Q


def _corrupt(x, U, sigma, seed=1):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((len(x), U.shape[1])) * sigma
    return x + (z @ U.T).reshape(x.shape) / np.sqrt(3)  # 1-channel image: a pixel-space unit vector has norm √3


def test_pixel_space_is_an_orthonormal_projection():
    rng = np.random.default_rng(0)
    imgs = rng.random((50, 32, 32, 3))
    X = ae.to_pixel_space(imgs, size=8)
    # white pixel noise of variance s2 keeps variance s2 along every coordinate
    noise = rng.standard_normal((4000, 32, 32, 3)) * 0.1
    v = ae.to_pixel_space(noise, size=8).var(0)
    assert X.shape == (50, 64) and abs(v.mean() - 0.01) < 1e-3
    assert ae.to_pixel_space(np.zeros((2, 32, 32, 3), np.uint8), size=4, rgb=True).shape == (2, 48)


def test_basis_finds_the_label_directions():
    x, y, Q = _synthetic()
    b = ae.pixel_basis(x, y, dim=16, size=SIZE)
    assert b.k == 2
    # the two signal vectors span the class-mean plane (after the √3 channel scaling)
    S = b.signal_vectors()
    overlap = np.linalg.svd(S.T @ Q[:, :2], compute_uv=False)
    assert overlap.min() > 0.99


def test_gamma_concentrates_on_the_noise_directions():
    x, y, Q = _synthetic()
    U = Q[:, 10:13]
    b = ae.pixel_basis(x, y, dim=16, size=SIZE)
    ns = ae.noise_spectrum(x, _corrupt(x, U, 0.3), b)
    w, V = np.linalg.eigh(ns["cov"])
    top = V[:, -3:]
    assert np.linalg.svd(top.T @ U, compute_uv=False).min() > 0.99
    assert np.trace(U.T @ ns["cov"] @ U) / ns["trace"] > 0.999
    assert ns["mean_shift_fraction"] < 0.05 and ns["on_signal_fraction"] < 0.01
    # a deterministic shift is reported as mean shift, not as Γ
    shifted = ae.noise_spectrum(x, x + 0.2, b)
    assert shifted["mean_shift_fraction"] > 0.99


def test_augmentation_containing_the_noise_is_more_aligned():
    x, y, Q = _synthetic()
    U = Q[:, 10:13]
    b = ae.pixel_basis(x, y, dim=16, size=SIZE)
    ns = ae.noise_spectrum(x, _corrupt(x, U, 0.3), b)
    aug = ae.augmentation_spectrum(x, {"brightness": 0.2, "color_jitter_p": 1.0}, b, seed=0, n_views=4)
    with_noise = dict(aug, cov=aug["cov"] + ns["cov"])  # the recipe also injects the corruption (α = 1)
    lo = ae.cell_evidence(b, ns, aug, "JE")
    hi = ae.cell_evidence(b, ns, with_noise, "JE")
    assert hi["alpha2"] > lo["alpha2"] + 0.9 and hi["alpha2"] >= 0.99
    for e in (lo, hi):  # recovery follows the sign of the split-invariant margin
        assert e["je_recovers"] == (e["margin_je"] > 0) and e["rc_recovers"] == (e["margin_rc"] > 0)
    assert hi["margin_je"] > lo["margin_je"]


def test_alpha2_is_the_largest_contained_alignment():
    x, y, Q = _synthetic()
    b = ae.pixel_basis(x, y, dim=16, size=SIZE)
    U = b.noise_vectors()[:, 5:9]
    g = np.array([1.0, 2.0, 3.0, 3e-6])  # the last direction is below the noise floor (1e-3 × max): ignored
    t = np.array([0.5, 4.0, 12.0, 0.0])  # t/g = 0.5, 2, 4 → α̂² = 0.5 (Θ = Θ_total − α̂²Γ stays ≥ 0)
    noise = {"cov": (U * g) @ U.T}
    aug = {"cov": (U * t) @ U.T + 1e-3 * np.outer(b.signal_vectors()[:, 0], b.signal_vectors()[:, 0])}
    e = ae.cell_evidence(b, noise, aug, "RC")
    assert e["noise_directions"] == 3 and e["alpha2"] == pytest.approx(0.5)
    assert e["alpha2_projection"] == pytest.approx((t[:3] @ g[:3]) / (g[:3] @ g[:3]))
    assert min(e["spectra"]["theta_noise"]) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("sigma,less", [(0.01, "RC"), (3.0, "JE")])
def test_weak_noise_favours_rc_strong_noise_favours_je(sigma, less):
    x, y, Q = _synthetic()
    U = Q[:, 10:13]
    b = ae.pixel_basis(x, y, dim=16, size=SIZE)
    ns = ae.noise_spectrum(x, _corrupt(x, U, sigma), b)
    aug = {"cov": 1e-4 * np.eye(D)}  # a small isotropic augmentation
    e = ae.cell_evidence(b, ns, aug, "JE")
    assert e["less_alignment"] == less
    assert e["regime"] == ("low" if less == "RC" else "high")


def test_recipes_modelled_and_skipped_keys():
    specs, skipped = ae._view_specs(MAE_RECIPE)
    assert len(specs) == 1 and any(s.startswith("masking_ratio") for s in skipped)
    specs, skipped = ae._view_specs(BYOL_RECIPE)  # blur_p [1.0, 0.1] and solarize_p [0.0, 0.2]: two view types
    assert [s["blur_p"] for _, s in specs] == [1.0, 0.1] and [s["solarize_p"] for _, s in specs] == [0.0, 0.2]
    zoo = {"views": [dict(n=2, size=64, scale=[0.3, 1.0], blur_p=1.0), dict(n=4, size=32, scale=[0.05, 0.3])],
           "notes": "x"}
    specs, skipped = ae._view_specs(zoo)
    assert len(specs) == 1 and skipped  # local (smaller) crops are listed as not modelled
    from jerc_eval.zoo.pretrain import RECIPES

    specs, skipped = ae._view_specs(RECIPES["byol"])  # the zoo BYOL's background swap is named, with why
    assert len(specs) == 2 and any(s.startswith("bg_swap_p (background swap") for s in skipped)


def _real_cells(n=32):
    from jerc_eval.corruptions.reference import corrupt_batch
    from jerc_eval.datasets.photodigits import build_split
    from jerc_eval.seeding import image_seeds

    sp = build_split("test", n=n)
    cells = {(c, s): corrupt_batch(sp.images, c, s, image_seeds(0, c, s, n))
             for c in ("gaussian_noise", "contrast") for s in (1, 5)}
    return sp.images, sp.labels, cells


@pytest.fixture(scope="module")
def real():
    imgs, labels, cells = _real_cells()
    recipes = {"mae": MAE_RECIPE, "dino": DINO_RECIPE, "none": {}}
    ev = ae.estimate(imgs, labels, cells, recipes, seed=3, paradigms={"mae": "RC", "dino": "JE"}, n_views=4,
                     size=8, dim=16)
    return imgs, labels, cells, recipes, ev


def test_estimate_on_real_corruptions(real):
    imgs, labels, cells, recipes, ev = real
    json.dumps(ev, allow_nan=False)
    assert set(ev["cells"]) == {"gaussian_noise", "contrast"} and set(ev["cells"]["contrast"]) == {"1", "5"}
    assert ev["skipped_encoders"] == ["none"] and set(ev["augmentation"]) == {"mae", "dino"}
    g = ev["cells"]["gaussian_noise"]
    assert g["5"]["noise"]["trace"] > 5 * g["1"]["noise"]["trace"]
    for cell in (c for d in ev["cells"].values() for c in d.values()):
        for e in cell["encoders"].values():
            assert e["regime"] in ("low", "high", "mixed") and e["less_alignment"] in ("JE", "RC", "tie")
            assert e["alpha2"] >= 0 and len(e["spectra"]["noise"]) <= ae.TOP


def test_estimate_is_deterministic_given_seed(real):
    imgs, labels, cells, recipes, ev = real
    kw = dict(paradigms={"mae": "RC", "dino": "JE"}, n_views=4, size=8, dim=16)
    again = ae.estimate(imgs, labels, cells, recipes, seed=3, **kw)
    other = ae.estimate(imgs, labels, cells, recipes, seed=4, **kw)
    strip = lambda e: {k: v for k, v in e.items() if k != "timing_s"}  # noqa: E731
    assert strip(again) == strip(ev)
    assert other["augmentation"]["dino"]["trace"] != ev["augmentation"]["dino"]["trace"]


def test_estimate_accepts_full_or_subset_cells():
    imgs, labels, cells = _real_cells(24)
    idx = ae.subset_indices(len(imgs), 16, seed=0)
    sub = {k: v[idx] for k, v in cells.items()}
    kw = dict(recipes={"mae": MAE_RECIPE}, seed=0, max_images=16, n_views=2, size=8, dim=8)
    a = ae.estimate(imgs, labels, cells, **kw)
    b = ae.estimate(imgs, labels, sub, **kw)
    assert a["cells"] == b["cells"]
    with pytest.raises(ValueError):
        ae.estimate(imgs, labels, {("contrast", 1): cells[("contrast", 1)][:5]}, **kw)


# ------------------------------------------------------------------------------------------------ combine
def _enc(less, je_rec, rc_rec, a2=1.0, je=0.5, rc=2.0):
    return {"less_alignment": less, "je_recovers": je_rec, "rc_recovers": rc_rec, "alpha2": a2, "alpha2_je": je,
            "alpha2_rc": rc, "regime": "mixed"}


def _evidence(cells_theory):
    cells = {c: {"1": {"noise": {"trace": 1.0, "mean_shift_fraction": 0.0}, "encoders": encs},
                 "5": {"noise": {"trace": 2.0, "mean_shift_fraction": 0.0}, "encoders": encs}}
             for c, encs in cells_theory.items()}
    return {"cells": cells, "assumptions": ae.ASSUMPTIONS, "config": {}}


def _results(measured):
    per = {c: {"je_drop": 10.0, "rc_drop": 10.0 + d, "rc_minus_je": d, "se": se, "near_chance": False,
               "less_degradation": ("JE" if d > 1.96 * se else "RC" if d < -1.96 * se else "no clear winner")}
           for c, (d, se) in measured.items()}
    return {"encoders": {"dino": {"paradigm": "JE"}, "mae": {"paradigm": "RC"}},
            "comparison": {"per_corruption": per}}


def test_combine_agree_disagree_and_no_clear_winner():
    je_theory = {"dino": _enc("JE", True, True), "mae": _enc("JE", True, True)}  # both recover; JE needs less
    rc_fails = {"dino": _enc("JE", True, False), "mae": _enc("JE", True, False, a2=0.1, rc=40.0)}
    silent = {"dino": _enc("JE", True, True), "mae": _enc("RC", True, True)}
    ev = _evidence({"agree": je_theory, "disagree_sig": je_theory, "disagree_ns": je_theory, "silent": silent,
                    "advice": rc_fails, "unmeasured": je_theory, "same_ns": je_theory})
    res = _results({"agree": (8.0, 2.0), "disagree_sig": (-8.0, 2.0), "disagree_ns": (-1.0, 2.0),
                    "silent": (8.0, 2.0), "advice": (5.0, 1.0), "same_ns": (1.0, 2.0)})
    out = ae.combine(res, ev)
    json.dumps(out, allow_nan=False)
    p = out["per_corruption"]
    assert (p["agree"]["verdict"], p["agree"]["agreement"]) == ("JE", "agree")
    assert (p["disagree_sig"]["verdict"], p["disagree_sig"]["agreement"]) == ("RC", "disagree")
    assert (p["disagree_ns"]["verdict"], p["disagree_ns"]["agreement"]) == ("no clear winner", "disagree")
    assert (p["silent"]["verdict"], p["silent"]["agreement"]) == ("JE", "theory silent")
    assert (p["unmeasured"]["verdict"], p["unmeasured"]["agreement"]) == ("JE", "theory only")
    assert p["same_ns"]["agreement"] == "agree" and not p["same_ns"]["measurement"]["significant"]
    # RC's own recipe is below its threshold while JE recovers: the theory says JE, with the paper's advice
    assert p["advice"]["theory"]["verdict"] == "JE" and p["advice"]["advice"] and "mae" in p["advice"]["advice"][0]
    assert not p["agree"]["advice"]
    assert out["advice_for"] == ["advice"] and out["paradigm"] == "JE" and out["headline"].startswith("alignment")
    assert out["counts"] == {"JE": 5, "RC": 1, "no clear winner": 1}


def test_combine_without_comparison_and_near_chance():
    ev = _evidence({"fog": {"dino": _enc("RC", True, True), "mae": _enc("RC", True, True)}})
    out = ae.combine({"encoders": {}, "comparison": None}, ev)
    # a run with one paradigm measured nothing to compare: no paradigm is preferred on the theory alone
    assert out["per_corruption"]["fog"]["agreement"] == "theory only" and out["paradigm"] is None
    assert out["headline"].startswith("no measured JE-vs-RC comparison") and "prefer" not in out["headline"]
    res = _results({"fog": (-20.0, 1.0)})
    res["comparison"]["per_corruption"]["fog"]["near_chance"] = True
    res["comparison"]["per_corruption"]["fog"]["se"] = float("nan")
    out = ae.combine(res, ev)
    assert out["per_corruption"]["fog"]["measurement"]["usable"] is False
    json.dumps(out, allow_nan=False)


def test_plugin_defers_without_evidence(real):
    from jerc_eval.default_plugins import theory_recommend

    assert theory_recommend.recommend({"comparison": None}) is None
    *_, ev = real
    res = _results({"gaussian_noise": (5.0, 1.0), "contrast": (-5.0, 1.0)})
    out = theory_recommend.recommend(dict(res, alignment_evidence=ev))
    assert out["basis"] == "theory+empirical" and set(out["per_corruption"]) == {"gaussian_noise", "contrast"}
    json.dumps(out, allow_nan=False)


def test_report_md_shows_the_advice_the_headline_points_at():
    from jerc_eval.report.markdown import _recommendation

    ev = _evidence({"fog": {"dino": _enc("JE", True, False), "mae": _enc("JE", True, False, a2=0.1, rc=40.0)}})
    res = _results({"fog": (5.0, 1.0)})
    res["recommendation"] = ae.combine(res, ev)
    res["comparison"] = None  # only the recommendation's part of the section
    assert "see advice" in res["recommendation"]["headline"]
    text = "\n".join(_recommendation(res))
    assert "### Advice" in text and "- **fog**: mae (RC)" in text
