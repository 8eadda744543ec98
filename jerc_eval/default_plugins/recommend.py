"""Built-in recommendation: empirical JE-vs-RC verdict from the run's measured drops (answers last)."""
from __future__ import annotations

from typing import Any

from ..hookspecs import hookimpl


@hookimpl(trylast=True)
def recommend(results: dict[str, Any]) -> dict[str, Any] | None:
    from ..recommend import empirical_recommendation

    return empirical_recommendation(results)
