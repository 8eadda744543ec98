"""Closed-form solutions of the linear SL / RC / JE problems (Van Assel et al., NeurIPS 2025, Section 3).

Everything the three objectives need from data and augmentations is three arrays, kept in `AugmentedMoments`:

- ``X``     (n, d): the reconstruction targets (the data itself, rows ``x_i``);
- ``Xbar``  (n, d): ``x̄_i = E_τ[τ(x_i)]`` (equal to ``X`` for mean-preserving augmentations);
- ``Sigma`` (d, d): ``(1/n) Σ_i Cov_τ[τ(x_i)]``, the augmentation covariance.

From them ``G = X̄ᵀX̄/n`` and ``S = G + Σ`` (both uncentred). Build them from an additive-Gaussian augmentation
``τ(x) = x + θ + αγ`` (`gaussian_moments`) or from Monte-Carlo views (`sampled_moments`).

Conventions: a linear map is a matrix acting on column vectors, so representations of the rows of ``X`` are
``X @ W.T``. Embedding dimension ``k``; label dimension ``ℓ``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "AugmentedMoments", "gaussian_moments", "sampled_moments", "sample_gaussian_views",
    "RCSolution", "JESolution", "supervised_solution", "rc_solution", "je_solution",
    "sl_loss", "rc_loss", "je_loss", "linear_probe_score", "distance_to_optimality", "sym_power",
]

_EIG_RTOL = 1e-12  # eigenvalues below this fraction of the largest are treated as exact zeros (pseudo-inverse)


# ===== moments =====

@dataclass(frozen=True)
class AugmentedMoments:
    """The sufficient statistics of data + augmentation distribution for all three linear objectives."""

    X: np.ndarray
    Xbar: np.ndarray
    Sigma: np.ndarray

    def __post_init__(self) -> None:
        if self.X.ndim != 2 or self.X.shape != self.Xbar.shape:
            raise ValueError(f"X and Xbar must be (n, d) of equal shape, got {self.X.shape} and {self.Xbar.shape}")
        d = self.X.shape[1]
        if self.Sigma.shape != (d, d):
            raise ValueError(f"Sigma must be ({d}, {d}), got {self.Sigma.shape}")

    @property
    def n(self) -> int:
        return self.X.shape[0]

    @property
    def d(self) -> int:
        return self.X.shape[1]

    @property
    def G(self) -> np.ndarray:
        """``(1/n) X̄ᵀX̄`` (uncentred second moment of the augmentation means)."""
        return self.Xbar.T @ self.Xbar / self.n

    @property
    def S(self) -> np.ndarray:
        """``(1/n) Σ_i E_τ[τ(x_i)τ(x_i)ᵀ] = G + Σ``."""
        return self.G + self.Sigma


def _as_cov(c: np.ndarray | float, d: int) -> np.ndarray:
    """A (d, d) covariance from a matrix, a length-d vector of variances (diagonal) or a scalar."""
    c = np.asarray(c, dtype=float)
    if c.ndim == 0:
        return float(c) * np.eye(d)
    if c.ndim == 1:
        if c.shape != (d,):
            raise ValueError(f"variance vector must have length {d}, got {c.shape}")
        return np.diag(c)
    if c.shape != (d, d):
        raise ValueError(f"covariance must be ({d}, {d}), got {c.shape}")
    return c


def gaussian_moments(X: np.ndarray, Theta: np.ndarray | float, Gamma: np.ndarray | float = 0.0,
                     alpha: float = 0.0) -> AugmentedMoments:
    """Moments of ``τ(x) = x + θ + αγ`` with ``θ ~ N(0, Θ)``, ``γ ~ N(0, Γ)``: ``X̄ = X``, ``Σ = Θ + α²Γ``.

    :param Theta: augmentation covariance, as a (d, d) matrix, a length-d vector (diagonal) or a scalar.
    :param Gamma: covariance of the noise the augmentation is aligned with (same forms).
    :param alpha: alignment ``α ≥ 0``.
    """
    X = np.asarray(X, dtype=float)
    d = X.shape[1]
    Sigma = _as_cov(Theta, d) + alpha ** 2 * _as_cov(Gamma, d)
    return AugmentedMoments(X=X, Xbar=X, Sigma=Sigma)


def sampled_moments(X: np.ndarray, views: np.ndarray) -> AugmentedMoments:
    """Moments of the empirical augmentation distribution given ``m`` views per sample.

    With the plug-in (1/m) covariance, the closed forms built from these moments are the exact minimisers of
    the Monte-Carlo objectives that average over the given views (and, for JE, over all pairs of them).

    :param X: (n, d) clean targets.
    :param views: (m, n, d) augmented views, ``views[j, i] = τ_j(x_i)``.
    """
    X = np.asarray(X, dtype=float)
    views = np.asarray(views, dtype=float)
    if views.ndim != 3 or views.shape[1:] != X.shape:
        raise ValueError(f"views must be (m, n, d) with (n, d) = {X.shape}, got {views.shape}")
    Xbar = views.mean(axis=0)
    dev = (views - Xbar[None]).reshape(-1, X.shape[1])
    Sigma = dev.T @ dev / dev.shape[0]
    return AugmentedMoments(X=X, Xbar=Xbar, Sigma=Sigma)


def sample_gaussian_views(X: np.ndarray, Theta: np.ndarray | float, Gamma: np.ndarray | float = 0.0,
                          alpha: float = 0.0, m: int = 1, rng: np.random.Generator | None = None) -> np.ndarray:
    """Draw ``m`` views ``τ(x_i) = x_i + θ + αγ`` of every row; returns (m, n, d)."""
    X = np.asarray(X, dtype=float)
    rng = np.random.default_rng(0) if rng is None else rng
    n, d = X.shape
    cov = _as_cov(Theta, d) + alpha ** 2 * _as_cov(Gamma, d)  # θ + αγ is Gaussian with this covariance
    root = sym_power(cov, 0.5)
    return X[None] + rng.standard_normal((m, n, d)) @ root


# ===== linear algebra =====

def sym_power(A: np.ndarray, p: float) -> np.ndarray:
    """``A^p`` for a symmetric PSD matrix; for ``p < 0`` null directions map to zero (pseudo-inverse power)."""
    w, V = np.linalg.eigh((A + A.T) / 2)
    keep = w > _EIG_RTOL * max(w.max(), 0.0)
    wp = np.zeros_like(w)
    wp[keep] = w[keep] ** p
    return (V * wp) @ V.T


# ===== closed forms =====

def supervised_solution(Y: np.ndarray, mom: AugmentedMoments) -> np.ndarray:
    """SL with augmentation = generalized ridge: ``V* = (1/n) Yᵀ X̄ ((1/n) X̄ᵀX̄ + Σ)⁻¹``; returns (ℓ, d)."""
    Y = np.asarray(Y, dtype=float)
    return (Y.T @ mom.Xbar / mom.n) @ sym_power(mom.S, -1.0)


@dataclass(frozen=True)
class RCSolution:
    """Theorem 3.1 with ``T = I``: encoder ``E`` (k, d), decoder ``D`` (d, k), singular values ``phi`` (all)."""

    E: np.ndarray
    D: np.ndarray
    phi: np.ndarray


def rc_solution(mom: AugmentedMoments, k: int) -> RCSolution:
    """Reconstruction (Theorem 3.1): SVD ``(1/n) Xᵀ X̄ S^{-1/2} = R Φ Pᵀ``; ``E* = P_kᵀ S^{-1/2}``, ``D* = R_k Φ_k``.

    Any ``(T E*, D* T⁻¹)`` with invertible ``T`` is also optimal; linear-probe scores do not depend on ``T``.
    """
    _check_k(k, mom.d)
    S_mh = sym_power(mom.S, -0.5)
    R, phi, Pt = np.linalg.svd((mom.X.T @ mom.Xbar / mom.n) @ S_mh)
    return RCSolution(E=Pt[:k] @ S_mh, D=R[:, :k] * phi[:k], phi=phi)


@dataclass(frozen=True)
class JESolution:
    """Theorem 3.2 with ``U = I``: ``W`` (k, d) with ``W S Wᵀ = I``; ``omega`` all generalised eigenvalues (desc)."""

    W: np.ndarray
    omega: np.ndarray

    @property
    def objective(self) -> float:
        """Optimal JE loss ``2(k − Σ_{i≤k} ω_i)``."""
        k = self.W.shape[0]
        return float(2 * (k - self.omega[:k].sum()))


def je_solution(mom: AugmentedMoments, k: int) -> JESolution:
    """Joint embedding (Theorem 3.2): ``S^{-1/2} G S^{-1/2} = Q Ω Qᵀ``, ``W* = Q_kᵀ S^{-1/2}``.

    Equivalently the top-k generalized eigenvectors of ``G w = ω S w`` normalized so that ``W S Wᵀ = I``.
    Any ``U W*`` with orthogonal ``U`` is also optimal.
    """
    _check_k(k, mom.d)
    S_mh = sym_power(mom.S, -0.5)
    omega, Q = np.linalg.eigh(S_mh @ mom.G @ S_mh)
    order = np.argsort(omega)[::-1]
    omega, Q = omega[order], Q[:, order]
    return JESolution(W=Q[:, :k].T @ S_mh, omega=omega)


def _check_k(k: int, d: int) -> None:
    if not 1 <= k <= d:
        raise ValueError(f"embedding dimension k must be in [1, {d}], got {k}")


# ===== objectives (expected over τ, written with the moments) =====

def sl_loss(V: np.ndarray, Y: np.ndarray, mom: AugmentedMoments) -> float:
    """``(1/n) Σ_i E_τ ‖y_i − V τ(x_i)‖²``."""
    n = mom.n
    return float(np.sum(Y * Y) / n - 2 * np.trace(V @ mom.Xbar.T @ Y) / n + np.trace(V @ mom.S @ V.T))


def rc_loss(E: np.ndarray, D: np.ndarray, mom: AugmentedMoments) -> float:
    """``(1/n) Σ_i E_τ ‖x_i − D E τ(x_i)‖²``."""
    B, n = D @ E, mom.n
    return float(np.sum(mom.X ** 2) / n - 2 * np.trace(B @ mom.Xbar.T @ mom.X) / n + np.trace(B @ mom.S @ B.T))


def je_loss(W: np.ndarray, mom: AugmentedMoments) -> float:
    """``(1/n) Σ_i E_{τ1,τ2} ‖W τ1(x_i) − W τ2(x_i)‖² = 2 tr(W Σ Wᵀ)`` (the constraint is not checked here)."""
    return float(2 * np.trace(W @ mom.Sigma @ W.T))


# ===== evaluation =====

def linear_probe_score(Z: np.ndarray, Y: np.ndarray) -> float:
    """In-sample least-squares probe ``min_V (1/n) Σ_i ‖y_i − V z_i‖²`` (no intercept), as in the paper's Fig. 3.

    Lower is better. Invariant to any invertible linear map of the representation (hence to ``T`` and ``U``).
    """
    Z = np.asarray(Z, dtype=float)
    Y = np.asarray(Y, dtype=float)
    coef, *_ = np.linalg.lstsq(Z, Y, rcond=None)
    return float(np.sum((Y - Z @ coef) ** 2) / Z.shape[0])


def distance_to_optimality(score_clean: float, score_corrupted: float) -> float:
    """``|score(model trained on clean data) − score(model trained on corrupted data)|`` (paper, Fig. 3)."""
    return float(abs(score_clean - score_corrupted))
