"""Closed forms and alignment thresholds of Van Assel et al. (NeurIPS 2025), "Joint-Embedding vs Reconstruction".

- `closed_form`: SL / RC / JE solutions from data + augmentation moments, linear-probe score.
- `alignment`: α²_RC, α²_JE, Corollary 4.5 regime, n → ∞ per-direction values, `recovers`.
- `reproduce`: the paper's Figure 3 protocol (``main``), imported lazily (it pulls in matplotlib).
See docs/theory.md.
"""
from jerc_eval.theory.alignment import (
    Regime, Spectra, classify_regime, corollary_boundary, je_limit_values, je_threshold, rc_limit_values,
    rc_threshold, recovers, spectra_from_covariances,
)
from jerc_eval.theory.closed_form import (
    AugmentedMoments, JESolution, RCSolution, distance_to_optimality, gaussian_moments, je_loss, je_solution,
    linear_probe_score, rc_loss, rc_solution, sample_gaussian_views, sampled_moments, sl_loss,
    supervised_solution,
)

__all__ = [
    "AugmentedMoments", "JESolution", "RCSolution", "Regime", "Spectra", "classify_regime", "corollary_boundary",
    "distance_to_optimality", "gaussian_moments", "je_limit_values", "je_loss", "je_solution", "je_threshold",
    "linear_probe_score", "rc_limit_values", "rc_loss", "rc_solution", "rc_threshold", "recovers",
    "sample_gaussian_views", "sampled_moments", "sl_loss", "spectra_from_covariances", "supervised_solution",
]
