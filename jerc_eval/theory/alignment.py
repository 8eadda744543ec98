"""Alignment thresholds of Section 4 (Props. 4.3, 4.4, Corollary 4.5) on per-direction spectra.

The model: in a common orthonormal basis, every direction ``i`` carries clean-signal variance ``s_i = κ_i²/n``,
augmentation variance ``t_i = λ^Θ_i`` and corruption-noise variance ``g_i = λ^Γ_i``. Signal directions have
``g_i = 0``; noise directions have ``s_i = 0`` and ``g_i > 0``. The augmentation is ``τ(x) = x + θ + αγ``.

In the n → ∞ limit the per-direction values that decide which directions a model keeps are (derived from the
closed forms; see docs/theory.md)::

    JE: s/(s+t) on signal, g/(t+(1+α²)g) on noise      RC: s/√(s+t) on signal, g/√(t+(1+α²)g) on noise

A paradigm recovers the clean solution iff every signal value beats every noise value, which is
``α² > α²_JE`` (resp. ``α² > α²_RC``). Real spectra (estimated from images) are never exactly of this form: use
`spectra_from_covariances`, which puts three covariance estimates into one basis and reports how much the
model's assumptions are violated.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "Spectra", "spectra_from_covariances", "je_threshold", "rc_threshold", "corollary_boundary",
    "Regime", "classify_regime", "je_limit_values", "rc_limit_values", "recovers",
]

REGIME_EXPLANATIONS = {
    "low": "low-magnitude noise (max λ^Γ < b): reconstruction needs less alignment (Corollary 4.5)",
    "high": "high-magnitude noise (min λ^Γ > b): joint embedding needs less alignment (Corollary 4.5)",
    "mixed": "noise magnitudes straddle b: Corollary 4.5 is silent; thresholds compared directly",
}


# ===== spectra =====

@dataclass(frozen=True)
class Spectra:
    """Per-direction spectra split into signal directions (``i ≤ k``) and noise directions (``i > k``).

    :param signal: ``s_i = κ_i²/n > 0`` on the signal directions, shape (k,).
    :param theta_signal: ``λ^Θ_i ≥ 0`` on the signal directions, shape (k,).
    :param noise: ``λ^Γ_i > 0`` on the noise directions, shape (m,).
    :param theta_noise: ``λ^Θ_i ≥ 0`` on the noise directions, shape (m,).
    :param diagnostics: how far the estimates are from the model (filled by `spectra_from_covariances`).
    """

    signal: np.ndarray
    theta_signal: np.ndarray
    noise: np.ndarray
    theta_noise: np.ndarray
    diagnostics: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        for name in ("signal", "theta_signal", "noise", "theta_noise"):
            object.__setattr__(self, name, np.atleast_1d(np.asarray(getattr(self, name), dtype=float)))
        if self.signal.shape != self.theta_signal.shape or self.noise.shape != self.theta_noise.shape:
            raise ValueError("signal/theta_signal and noise/theta_noise must have matching shapes")
        if self.signal.size == 0:
            raise ValueError("at least one signal direction is needed")
        if np.any(self.signal <= 0):
            raise ValueError("signal variances must be > 0 (a direction with s = 0 is not a signal direction)")
        if np.any(self.noise <= 0):
            raise ValueError("noise variances λ^Γ must be > 0 on noise directions")
        if np.any(self.theta_signal < 0) or np.any(self.theta_noise < 0):
            raise ValueError("augmentation variances λ^Θ must be ≥ 0")

    @classmethod
    def from_directions(cls, signal: np.ndarray, theta: np.ndarray, gamma: np.ndarray) -> Spectra:
        """Build from three length-d arrays in one basis; a direction is signal iff ``gamma == 0``.

        Raises if a direction has both ``signal > 0`` and ``gamma > 0`` (use `spectra_from_covariances` for
        estimates that overlap).
        """
        s, t, g = (np.asarray(a, dtype=float) for a in (signal, theta, gamma))
        if np.any((s > 0) & (g > 0)):
            raise ValueError("a direction has both signal and noise variance; the Section-4 model forbids it")
        sig = g == 0
        return cls(signal=s[sig], theta_signal=t[sig], noise=g[~sig], theta_noise=t[~sig])

    @staticmethod
    def signal_from_singular_values(kappa: np.ndarray, n: int) -> np.ndarray:
        """``s_i = κ_i²/n`` from the singular values of the clean data matrix."""
        return np.asarray(kappa, dtype=float) ** 2 / n

    @property
    def k(self) -> int:
        return self.signal.size


def spectra_from_covariances(signal_cov: np.ndarray, noise_cov: np.ndarray, aug_cov: np.ndarray,
                             basis: np.ndarray | None = None, signal_mask: np.ndarray | None = None,
                             floor: float = 0.0) -> Spectra:
    """Express three (d, d) covariance estimates in one basis and split directions into signal / noise.

    Intended for spectra estimated from images: ``signal_cov`` from clean images, ``noise_cov`` from
    ``corrupted − clean`` pairs (Γ), ``aug_cov`` from ``view − image`` (Θ, or Θ + α²Γ if α is folded in).

    :param basis: (d, d) orthonormal columns; default: eigenvectors of ``signal_cov + noise_cov``.
    :param signal_mask: which basis directions are signal; default: those where the signal variance exceeds
        the noise variance (and ``floor``).
    :param floor: variances at or below this are treated as zero (a direction with neither is dropped).
    Note: the theory assumes the three covariances are diagonal in one basis with disjoint signal and noise
    supports. ``diagnostics`` reports the ignored off-diagonal mass and the ignored cross variance so callers
    can say how much the recommendation rests on that assumption.
    """
    covs = [np.asarray(c, dtype=float) for c in (signal_cov, noise_cov, aug_cov)]
    if basis is None:
        w, basis = np.linalg.eigh(covs[0] + covs[1])
        basis = basis[:, np.argsort(w)[::-1]]
    rotated = [basis.T @ c @ basis for c in covs]
    s, g, t = (np.clip(np.diag(r), 0.0, None) for r in rotated)
    if signal_mask is None:
        signal_mask = (s > g) & (s > floor)
    signal_mask = np.asarray(signal_mask, dtype=bool)
    noise_mask = ~signal_mask & (g > floor)
    diag = {
        "offdiag_fraction": [float(_offdiag_fraction(r)) for r in rotated],  # signal, noise, augmentation
        "noise_on_signal_fraction": float(g[signal_mask].sum() / max(g.sum(), 1e-300)),
        "signal_on_noise_fraction": float(s[noise_mask].sum() / max(s.sum(), 1e-300)),
        "dropped_directions": int((~signal_mask & ~noise_mask).sum()),
    }
    return Spectra(signal=s[signal_mask], theta_signal=t[signal_mask], noise=g[noise_mask],
                   theta_noise=t[noise_mask], diagnostics=diag)


def _offdiag_fraction(M: np.ndarray) -> float:
    total = np.sum(M ** 2)
    return 0.0 if total == 0 else float((total - np.sum(np.diag(M) ** 2)) / total)


# ===== thresholds =====

def _delta(sp: Spectra) -> float:
    """``δ = min_{i≤k} s_i / (s_i + λ^Θ_i)`` (A.5 Eq. 68 misprints this as a max)."""
    return float(np.min(sp.signal / (sp.signal + sp.theta_signal)))


def _eta(sp: Spectra) -> float:
    """``η = min_{i≤k} s_i / √(s_i + λ^Θ_i)``."""
    return float(np.min(sp.signal / np.sqrt(sp.signal + sp.theta_signal)))


def je_threshold(sp: Spectra) -> float:
    """``α²_JE = max_{i>k} ((1−δ)/δ − λ^Θ_i/λ^Γ_i)`` (Prop. 4.4); −inf without noise directions."""
    if sp.noise.size == 0:
        return float("-inf")
    delta = _delta(sp)
    return float(np.max((1 - delta) / delta - sp.theta_noise / sp.noise))


def rc_threshold(sp: Spectra) -> float:
    """``α²_RC = max_{i>k} (λ^Γ_i/η² − λ^Θ_i/λ^Γ_i − 1)`` (Prop. 4.3; A.6 Eq. 80 misprints λ^Θ_i/δ^Γ_i)."""
    if sp.noise.size == 0:
        return float("-inf")
    eta = _eta(sp)
    return float(np.max(sp.noise / eta ** 2 - sp.theta_noise / sp.noise - 1))


def corollary_boundary(sp: Spectra) -> float:
    """``b = η²/δ`` (Corollary 4.5); equals ``min_i s_i`` when Θ = 0 on the signal directions."""
    return _eta(sp) ** 2 / _delta(sp)


@dataclass(frozen=True)
class Regime:
    """Which SSL paradigm needs less alignment, by Corollary 4.5 and by direct comparison of the thresholds.

    ``regime`` is ``"low"``, ``"high"`` or ``"mixed"``; ``less_alignment`` is ``"RC"``, ``"JE"`` or ``"tie"``
    (the direct comparison of the signed α² thresholds, which always agrees with the corollary where it speaks).
    ``corollary_applies`` is False in the mixed case. Thresholds below zero mean every α ≥ 0 works.
    """

    regime: str
    explanation: str
    alpha2_je: float
    alpha2_rc: float
    b: float
    eta: float
    delta: float
    less_alignment: str
    corollary_applies: bool

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def classify_regime(sp: Spectra, rtol: float = 1e-12) -> Regime:
    """Apply Corollary 4.5 (``b = η²/δ``) and compare ``α²_JE`` with ``α²_RC`` directly."""
    if sp.noise.size == 0:
        raise ValueError("no noise directions: both paradigms recover the clean solution for every α")
    b, a_je, a_rc = corollary_boundary(sp), je_threshold(sp), rc_threshold(sp)
    if sp.noise.max() < b:
        regime = "low"
    elif sp.noise.min() > b:
        regime = "high"
    else:
        regime = "mixed"
    if abs(a_je - a_rc) <= rtol * max(1.0, abs(a_je), abs(a_rc)):
        less = "tie"
    else:
        less = "RC" if a_rc < a_je else "JE"
    expl = REGIME_EXPLANATIONS[regime]
    if regime == "mixed":
        expl += f" → {_less_text(less)} (α²_JE = {a_je:.4g}, α²_RC = {a_rc:.4g})"
    return Regime(regime=regime, explanation=expl, alpha2_je=a_je, alpha2_rc=a_rc, b=b, eta=_eta(sp),
                  delta=_delta(sp), less_alignment=less, corollary_applies=regime != "mixed")


def _less_text(less: str) -> str:
    return {"RC": "reconstruction needs less alignment", "JE": "joint embedding needs less alignment",
            "tie": "both need the same alignment"}[less]


# ===== n → ∞ per-direction values =====

def je_limit_values(sp: Spectra, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """JE generalized eigenvalues in the n → ∞ limit: (signal ``s/(s+t)``, noise ``g/(t+(1+α²)g)``)."""
    s, t, g, tn = sp.signal, sp.theta_signal, sp.noise, sp.theta_noise
    return s / (s + t), g / (tn + (1 + alpha ** 2) * g)


def rc_limit_values(sp: Spectra, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """RC singular values in the n → ∞ limit: (signal ``s/√(s+t)``, noise ``g/√(t+(1+α²)g)``)."""
    s, t, g, tn = sp.signal, sp.theta_signal, sp.noise, sp.theta_noise
    return s / np.sqrt(s + t), g / np.sqrt(tn + (1 + alpha ** 2) * g)


def recovers(paradigm: str, sp: Spectra, alpha: float) -> bool:
    """Whether ``paradigm`` ("JE", "RC" or "SL") recovers the clean solution as n → ∞ at alignment ``alpha``.

    SSL recovers iff every signal value strictly beats every noise value; SL always does (Prop. 4.2).
    """
    p = paradigm.strip().upper()
    if p in ("SL", "SUPERVISED"):
        return True
    if p not in ("JE", "RC"):
        raise ValueError(f"unknown paradigm {paradigm!r}; expected one of 'JE', 'RC', 'SL'")
    if sp.noise.size == 0:
        return True
    sig, noi = (je_limit_values if p == "JE" else rc_limit_values)(sp, alpha)
    return bool(sig.min() > noi.max())
