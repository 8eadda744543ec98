"""Alignment-aware recommendation: the Section-4 theory (estimated spectra) combined with the measured drops.

Answers only when the results document carries ``"alignment_evidence"`` (the output of
`jerc_eval.alignment_evidence.estimate`); otherwise returns None so the built-in empirical recommendation answers.
"""
from __future__ import annotations

from typing import Any

from ..hookspecs import hookimpl


@hookimpl
def recommend(results: dict[str, Any]) -> dict[str, Any] | None:
    evidence = results.get("alignment_evidence")
    if not evidence:
        return None
    from ..alignment_evidence import combine

    return combine(results, evidence)
