"""The JE-vs-RC recommendation: plugins may answer through the ``recommend`` hook; the built-in answers last."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .plugins import Host


def recommend(host: Host, results: dict[str, Any]) -> dict[str, Any] | None:
    return host.pm.hook.recommend(results=results)


def empirical_recommendation(results: dict[str, Any]) -> dict[str, Any]:
    """Recommend from the measured drops alone: which paradigm degraded less, and where the evidence is clear."""
    comp = results.get("comparison")
    if comp is None:
        return {"paradigm": None, "basis": "empirical",
                "headline": "no recommendation: the run needs at least one JE and one RC encoder"}
    o, counts = comp["overall"], comp["counts"]
    winner = o["less_degradation"]
    per = comp["per_corruption"]
    clear = {v: sorted(c for c, d in per.items() if d["less_degradation"] == v) for v in ("JE", "RC")}
    if not o.get("corruptions_used"):
        return {"paradigm": None, "basis": "empirical",
                "headline": "no recommendation: every corruption's S1 accuracy is near chance for some encoder"}
    detail = (f"mean Drop JE {o['je_drop']:.1f}% vs RC {o['rc_drop']:.1f}% "
              f"(RC-JE {o['rc_minus_je']:+.1f} ± {1.96 * o['se']:.1f}); "
              f"JE degrades less on {counts['JE']}, RC on {counts['RC']}, unclear on {counts['no clear winner']} "
              f"of {len(per)} corruptions")
    name = {"JE": "joint embedding (JE)", "RC": "reconstruction (RC)"}.get(winner)
    headline = (f"prefer {name} for robustness to this suite: {detail}" if name
                else f"no clear winner between JE and RC: {detail}")
    from .summary import single_encoder_caveat

    headline += single_encoder_caveat(comp)
    return {"paradigm": winner if name else None, "basis": "empirical", "headline": headline,
            "je_better_on": clear["JE"], "rc_better_on": clear["RC"],
            "assumptions": ["Drop = 100*(S1-S5)/S1 of a linear probe fit on clean features",
                            "paradigm-level means over the run's encoders; architectures and budgets differ",
                            "a Drop whose S1 is near chance is flagged near_chance and means little"]}
