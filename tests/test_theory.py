"""Tests for jerc_eval.theory: closed forms vs direct optimisation, thresholds vs simulation, reproduction."""
from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.optimize import minimize
from threadpoolctl import threadpool_limits

from jerc_eval.theory import (
    Spectra, classify_regime, corollary_boundary, gaussian_moments, je_limit_values, je_loss, je_solution,
    je_threshold, linear_probe_score, rc_limit_values, rc_loss, rc_solution, rc_threshold, recovers,
    sample_gaussian_views, sampled_moments, sl_loss, spectra_from_covariances, supervised_solution,
)
from jerc_eval.theory.closed_form import sym_power


@pytest.fixture(autouse=True)
def _one_blas_thread():
    with threadpool_limits(limits=1):  # tiny matrices; BLAS threads only contend
        yield


def _problem(seed: int = 0, n: int = 30, d: int = 6, m: int = 4, ell: int = 3):
    """Small data, labels and Monte-Carlo views with a full (non-diagonal) augmentation covariance."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) @ np.diag([3.0, 2.0, 1.5, 1.0, 0.7, 0.4])[:d, :d]
    Y = X @ rng.standard_normal((d, ell)) + 0.1 * rng.standard_normal((n, ell))
    A = rng.standard_normal((d, d))
    Theta = 0.3 * A @ A.T / d
    views = sample_gaussian_views(X, Theta, m=m, rng=rng)
    return X, Y, views


def _row_space_distance(A: np.ndarray, B: np.ndarray) -> float:
    """Spectral-norm distance between the orthogonal projectors onto the row spaces of A and B."""
    qa, qb = np.linalg.qr(A.T)[0], np.linalg.qr(B.T)[0]
    return float(np.linalg.norm(qa @ qa.T - qb @ qb.T, 2))


# ===== closed forms vs direct optimisation of the Monte-Carlo objectives (written out literally) =====

def test_supervised_matches_gradient_descent():
    X, Y, views = _problem()
    m, n, d = views.shape
    V = np.zeros((Y.shape[1], d))
    flat_v, flat_y = views.reshape(-1, d), np.tile(Y, (m, 1))
    lr = 0.5 / np.linalg.eigvalsh(flat_v.T @ flat_v / len(flat_v)).max()
    for _ in range(5000):  # plain gradient descent on (1/nm) Σ ‖y − V τ(x)‖²
        V -= lr * (-2 * (flat_y - flat_v @ V.T).T @ flat_v / len(flat_v))
    V_cf = supervised_solution(Y, sampled_moments(X, views))
    assert np.allclose(V, V_cf, atol=1e-6)
    literal = np.mean(np.sum((flat_y - flat_v @ V_cf.T) ** 2, axis=1))
    assert sl_loss(V_cf, Y, sampled_moments(X, views)) == pytest.approx(literal, rel=1e-9)


def test_rc_matches_gradient_based_optimum():
    X, _, views = _problem(seed=1)
    m, n, d = views.shape
    k = 2

    def loss_grad(p):  # literal (1/nm) Σ_{i,j} ‖x_i − D E τ_j(x_i)‖² and its gradient
        E, D = p[:k * d].reshape(k, d), p[k * d:].reshape(d, k)
        R = X[None] - views @ (D @ E).T
        dB = -2 * np.einsum("jia,jib->ab", R, views) / (n * m)
        return np.mean(np.sum(R ** 2, axis=2)), np.concatenate([(D.T @ dB).ravel(), (dB @ E.T).ravel()])

    rng = np.random.default_rng(2)
    res = minimize(loss_grad, 0.1 * rng.standard_normal(2 * k * d), jac=True, method="L-BFGS-B",
                   options={"maxiter": 5000, "gtol": 1e-12, "ftol": 1e-15})
    sol = rc_solution(sampled_moments(X, views), k)
    E_opt, D_opt = res.x[:k * d].reshape(k, d), res.x[k * d:].reshape(d, k)
    assert loss_grad(np.concatenate([sol.E.ravel(), sol.D.ravel()]))[0] == pytest.approx(res.fun, rel=1e-7)
    assert rc_loss(sol.E, sol.D, sampled_moments(X, views)) == pytest.approx(res.fun, rel=1e-9)
    assert np.allclose(D_opt @ E_opt, sol.D @ sol.E, atol=1e-4)
    # the closed form is the optimum: a random rank-k competitor is worse
    assert res.fun < loss_grad(np.concatenate([E_opt.ravel() + 0.05, D_opt.ravel()]))[0]


def test_je_matches_constrained_optimum():
    X, _, views = _problem(seed=3)
    m, n, d = views.shape
    k = 2
    S_lit = np.einsum("jia,jib->ab", views, views) / (n * m)

    def project(a):  # any A ↦ W = (A S Aᵀ)^{-1/2} A satisfies W S Wᵀ = I
        A = a.reshape(k, d)
        return sym_power(A @ S_lit @ A.T, -0.5) @ A

    def loss(a):  # literal (1/n)(1/m²) Σ_i Σ_{j,l} ‖W τ_j(x_i) − W τ_l(x_i)‖²
        Z = views @ project(a).T
        return np.mean(np.sum((Z[:, None] - Z[None]) ** 2, axis=3))

    best = min((minimize(loss, np.random.default_rng(s).standard_normal(k * d), method="BFGS",
                         options={"gtol": 1e-10}) for s in range(3)), key=lambda r: r.fun)
    sol = je_solution(sampled_moments(X, views), k)
    assert loss(sol.W.ravel()) == pytest.approx(best.fun, rel=1e-6, abs=1e-9)
    assert sol.objective == pytest.approx(best.fun, rel=1e-6, abs=1e-9)
    assert _row_space_distance(project(best.x), sol.W) < 1e-3


def test_gaussian_moments_agree_with_many_monte_carlo_views():
    rng = np.random.default_rng(4)
    X = rng.standard_normal((20, 6)) * np.array([3.0, 2.0, 1.5, 1.0, 0.7, 0.4])
    Theta, Gamma, alpha = np.diag([0.5, 0.1, 0.2, 0.05, 0.3, 0.1]), np.diag([0, 0, 0, 0.5, 1.0, 2.0]), 0.7
    exact = gaussian_moments(X, Theta, Gamma, alpha)
    mc = sampled_moments(X, sample_gaussian_views(X, Theta, Gamma, alpha, m=20000, rng=rng))
    assert np.allclose(mc.Sigma, Theta + alpha ** 2 * Gamma, atol=0.03)
    assert _row_space_distance(je_solution(exact, 2).W, je_solution(mc, 2).W) < 0.05
    assert _row_space_distance(rc_solution(exact, 2).E, rc_solution(mc, 2).E) < 0.05


# ===== structural properties =====

def test_je_satisfies_constraint_and_objective_formula():
    X, _, views = _problem(seed=5)
    mom = sampled_moments(X, views)
    sol = je_solution(mom, 3)
    assert np.allclose(sol.W @ mom.S @ sol.W.T, np.eye(3), atol=1e-10)
    assert np.all(sol.omega >= -1e-12) and np.all(sol.omega <= 1 + 1e-12)
    assert je_loss(sol.W, mom) == pytest.approx(sol.objective, rel=1e-9)
    U = np.linalg.qr(np.random.default_rng(0).standard_normal((3, 3)))[0]
    assert je_loss(U @ sol.W, mom) == pytest.approx(sol.objective, rel=1e-9)


def test_rc_and_probe_invariant_to_T():
    X, Y, views = _problem(seed=6)
    mom = sampled_moments(X, views)
    sol = rc_solution(mom, 3)
    T = np.random.default_rng(1).standard_normal((3, 3)) + 3 * np.eye(3)
    assert rc_loss(T @ sol.E, sol.D @ np.linalg.inv(T), mom) == pytest.approx(rc_loss(sol.E, sol.D, mom), rel=1e-9)
    assert linear_probe_score(X @ (T @ sol.E).T, Y) == pytest.approx(linear_probe_score(X @ sol.E.T, Y), rel=1e-8)
    # …but not to dropping a direction (the score can fail)
    assert linear_probe_score(X @ sol.E[:2].T, Y) > linear_probe_score(X @ sol.E.T, Y) + 1e-6


def test_rc_biased_to_high_variance_je_is_not():
    """Derived per-direction rankings: JE by c/(c+σ), RC by c²/(c+σ)."""
    c, sigma = np.array([100.0, 1.0]), np.array([100.0, 0.01])  # direction 0: big but noisy; 1: small, clean
    X = np.random.default_rng(0).standard_normal((4000, 2))
    X = X @ sym_power(X.T @ X / len(X), -0.5) * np.sqrt(c)  # exact second moment diag(c)
    mom = gaussian_moments(X, sigma)
    assert abs(je_solution(mom, 1).W[0, 1]) > 0.99 * np.linalg.norm(je_solution(mom, 1).W)
    assert abs(rc_solution(mom, 1).E[0, 0]) > 0.99 * np.linalg.norm(rc_solution(mom, 1).E)


# ===== thresholds =====

# s = κ²/n = [5, 2] with λ^Θ = [1, 1.5]; four noise directions.
SP = Spectra(signal=[5.0, 2.0], theta_signal=[1.0, 1.5], noise=[3.0, 0.5, 8.0, 1.0], theta_noise=[0.2, 0.1, 2.0, 0.3])


def test_thresholds_by_hand():
    # δ = min(5/6, 2/3.5) = 4/7 → (1−δ)/δ = 3/4; max_i (3/4 − t/g) at t/g = 0.2/3
    assert je_threshold(SP) == pytest.approx(0.75 - 0.2 / 3)
    # η² = min(25/6, 4/3.5) = 8/7; max_i (g/η² − t/g − 1) at g = 8: 7 − 0.25 − 1
    assert rc_threshold(SP) == pytest.approx(5.75)
    assert corollary_boundary(SP) == pytest.approx((8 / 7) / (4 / 7))


def _section4_data(sp: Spectra, n: int, exact: bool, seed: int = 0):
    """Clean and corrupted data of the Section-4 model in its own basis (signal coords first)."""
    d = sp.k + sp.noise.size
    H = np.random.default_rng(seed).standard_normal((n, d))
    if exact:  # population moments exactly: HᵀH/n = I
        H = np.linalg.qr(H)[0] * np.sqrt(n)
    sd = np.sqrt(np.concatenate([sp.signal, sp.noise]))
    corrupted = H * sd
    clean = corrupted.copy()
    clean[:, sp.k:] = 0.0
    return clean, corrupted


def _recovered(sp: Spectra, paradigm: str, alpha: float, n: int, exact: bool) -> bool:
    clean, corrupted = _section4_data(sp, n, exact)
    theta = np.concatenate([sp.theta_signal, sp.theta_noise])
    gamma = np.concatenate([np.zeros(sp.k), sp.noise])
    solve = (lambda mom: je_solution(mom, sp.k).W) if paradigm == "JE" else (lambda mom: rc_solution(mom, sp.k).E)
    W_clean = solve(gaussian_moments(clean, theta, gamma, alpha))
    W_corr = solve(gaussian_moments(corrupted, theta, gamma, alpha))
    return _row_space_distance(W_clean, W_corr) < 0.3


@pytest.mark.parametrize("paradigm,threshold", [("JE", je_threshold(SP)), ("RC", rc_threshold(SP))])
def test_success_switches_exactly_at_threshold(paradigm, threshold):
    for eps, expected in ((-1e-3, False), (1e-3, True)):
        alpha = np.sqrt(threshold * (1 + eps))
        assert recovers(paradigm, SP, alpha) is expected
        assert _recovered(SP, paradigm, alpha, n=500, exact=True) is expected  # population moments
    for rel, expected in ((0.75, False), (1.25, True)):  # random finite-n data, n large
        assert _recovered(SP, paradigm, np.sqrt(threshold * rel), n=20000, exact=False) is expected


def test_limit_values_match_closed_form_spectrum():
    clean, corrupted = _section4_data(SP, 400, exact=True)
    theta = np.concatenate([SP.theta_signal, SP.theta_noise])
    gamma = np.concatenate([np.zeros(SP.k), SP.noise])
    mom = gaussian_moments(corrupted, theta, gamma, 0.8)
    sig, noi = je_limit_values(SP, 0.8)
    assert np.allclose(je_solution(mom, 2).omega, np.sort(np.concatenate([sig, noi]))[::-1])
    sig, noi = rc_limit_values(SP, 0.8)
    assert np.allclose(rc_solution(mom, 2).phi, np.sort(np.concatenate([sig, noi]))[::-1])


def test_supervised_always_recovers_and_bad_paradigm_raises():
    assert recovers("SL", SP, 0.0)
    with pytest.raises(ValueError, match="unknown paradigm"):
        recovers("MAE", SP, 1.0)


# ===== Corollary 4.5 regimes =====

def test_regime_low():
    sp = Spectra(signal=[4.0, 9.0], theta_signal=[0.0, 0.0], noise=[1.0, 2.0], theta_noise=[1.0, 1.0])
    r = classify_regime(sp)
    assert r.b == pytest.approx(4.0)  # Θ = 0 on the signal ⇒ b = min s
    assert (r.regime, r.less_alignment, r.corollary_applies) == ("low", "RC", True)
    assert (r.alpha2_je, r.alpha2_rc) == (pytest.approx(-0.5), pytest.approx(-1.0))


def test_regime_high():
    sp = Spectra(signal=[4.0, 9.0], theta_signal=[0.0, 0.0], noise=[10.0, 20.0], theta_noise=[1.0, 1.0])
    r = classify_regime(sp)
    assert (r.regime, r.less_alignment) == ("high", "JE")
    assert (r.alpha2_je, r.alpha2_rc) == (pytest.approx(-0.05), pytest.approx(20 / 4 - 0.05 - 1))


@pytest.mark.parametrize("noise,theta_noise,less", [([1.0, 10.0], [1.0, 1.0], "JE"), ([0.1, 5.0], [0.0, 100.0], "RC")])
def test_regime_mixed_compares_directly(noise, theta_noise, less):
    sp = Spectra(signal=[4.0, 9.0], theta_signal=[0.0, 0.0], noise=noise, theta_noise=theta_noise)
    r = classify_regime(sp)
    assert (r.regime, r.corollary_applies, r.less_alignment) == ("mixed", False, less)
    assert "silent" in r.explanation


def test_spectra_from_rotated_covariances():
    Q = np.linalg.qr(np.random.default_rng(7).standard_normal((5, 5)))[0]
    s, g, t = np.array([6.0, 3.0, 0, 0, 0]), np.array([0, 0, 2.0, 1.0, 0.5]), np.array([1.0, 0.5, 0.2, 0.3, 0.1])
    sp = spectra_from_covariances(Q @ np.diag(s) @ Q.T, Q @ np.diag(g) @ Q.T, Q @ np.diag(t) @ Q.T)
    ref = Spectra.from_directions(s, t, g)
    assert np.allclose(sp.signal, ref.signal) and np.allclose(sp.theta_signal, ref.theta_signal)
    assert np.allclose(sp.noise, ref.noise) and np.allclose(sp.theta_noise, ref.theta_noise)
    assert max(sp.diagnostics["offdiag_fraction"]) < 1e-20
    with pytest.raises(ValueError, match="both signal and noise"):
        Spectra.from_directions([1.0, 1.0], [0.0, 0.0], [0.0, 1.0])


# ===== Figure-3 reproduction =====

def test_reproduce_fast_writes_png_and_json(tmp_path):
    from jerc_eval.theory.reproduce import main

    out = main(tmp_path / "a", fast=True, n_values=[100, 200])
    png, js = tmp_path / "a" / "figure3.png", tmp_path / "a" / "figure3.json"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    payload = json.loads(js.read_text())
    assert payload["config"]["n_values"] == [100, 200] and payload["config"]["k"] == 32
    for setting in ("weak", "strong"):
        assert set(payload["results"][setting]) == {"SL", "JE", "RC"}
        for method in ("SL", "JE", "RC"):
            assert set(payload["results"][setting][method]) == {"0.1", "1.0", "10.0"}
            assert all(len(v["mean"]) == 2 and all(x >= 0 for x in v["mean"])
                       for v in payload["results"][setting][method].values())
    assert payload["theory"]["strong"]["regime"]["regime"] in ("low", "high", "mixed")
    again = main(tmp_path / "b", fast=True, n_values=[100, 200])
    assert again["results"] == out["results"]  # deterministic given the seed
    other = main(tmp_path / "c", fast=True, n_values=[100, 200], seed=1)
    assert other["results"] != out["results"]


def test_reproduce_reads_local_npz_and_refuses_to_download(tmp_path):
    from jerc_eval.theory.reproduce import main

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "mnist.npz", x_train=rng.integers(0, 256, (300, 28, 28), dtype=np.uint8),
             y_train=rng.integers(0, 10, 300))
    out = main(tmp_path / "m", dataset="mnist", fast=True, n_values=[100], data_path=tmp_path / "mnist.npz")
    assert out["config"]["d"] == 100 and out["data"]["pixels"] == 784
    with pytest.raises(ValueError, match="data_path"):
        main(tmp_path / "x", dataset="mnist", fast=True)
    with pytest.raises(ValueError, match="unknown dataset"):
        main(tmp_path / "x", dataset="cifar", fast=True)


def test_idx_folder_is_read_like_the_original_files(tmp_path):
    import gzip

    from jerc_eval.theory.reproduce import load_dataset

    imgs = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)
    labels = np.array([7, 0, 3], dtype=np.uint8)
    with gzip.open(tmp_path / "train-images-idx3-ubyte.gz", "wb") as f:
        f.write(bytes([0, 0, 8, 3]) + b"".join(int(v).to_bytes(4, "big") for v in imgs.shape) + imgs.tobytes())
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(bytes([0, 0, 8, 1]) + (3).to_bytes(4, "big") + labels.tobytes())
    X, y = load_dataset("fashion_mnist", tmp_path)
    assert X.shape == (3, 20) and np.array_equal(X[1], imgs[1].ravel()) and y.tolist() == [7, 0, 3]
