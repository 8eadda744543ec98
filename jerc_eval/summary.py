"""Summaries as group-bys over the tidy rows (pure functions), the JE-vs-RC comparison, the console table."""
from __future__ import annotations

import math
from typing import Any

from . import metrics as m

Z95 = m.Z95


def _by(rows: list[dict], encoder: str) -> dict[tuple[str, int], dict]:
    return {(r["corruption"], r["severity"]): r for r in rows if r["encoder"] == encoder}


def encoder_summary(rows: list[dict], encoder: str, num_classes: int) -> dict[str, Any]:
    """Clean accuracy, per-corruption accuracy by severity, the paper's Drop and family means for one encoder."""
    cells = _by(rows, encoder)
    clean = cells[("clean", 0)]
    chance = 1.0 / num_classes
    per: dict[str, Any] = {}
    for (corr, sev), r in cells.items():
        if corr == "clean":
            continue
        d = per.setdefault(corr, {"family": r["family"], "accuracy": {}, "ci95": {}, "drop_vs_clean": {}})
        d["accuracy"][str(sev)] = r["accuracy"]
        d["ci95"][str(sev)] = r["ci95"]
        d["drop_vs_clean"][str(sev)] = m.drop_vs_clean(r["accuracy"], clean["accuracy"])
    for corr, d in per.items():
        acc = d["accuracy"]
        d["mean_accuracy"] = m.mean(list(acc.values()))
        if "1" in acc and "5" in acc:
            n1, n5 = cells[(corr, 1)]["n"], cells[(corr, 5)]["n"]
            d["drop"] = m.paper_drop(acc["1"], acc["5"])
            d["drop_se"] = m.paper_drop_se(acc["1"], n1, acc["5"], n5)
            # a Drop measured from near-chance accuracy is noise: S1's interval must clear 1.5x chance
            d["near_chance"] = d["ci95"]["1"][0] < 1.5 * chance
        else:
            d["drop"], d["drop_se"], d["near_chance"] = None, None, None
    drops = {c: d["drop"] for c, d in per.items() if d["drop"] is not None}
    families: dict[str, list[float]] = {}
    for c, d in per.items():
        if d["drop"] is not None:
            families.setdefault(d["family"], []).append(d["drop"])
    accs = [a for d in per.values() for a in d["accuracy"].values()]
    mean_acc = m.mean(accs) if accs else float("nan")
    return {
        "clean_accuracy": clean["accuracy"], "clean_ci95": clean["ci95"], "n_test": clean["n"],
        "chance": chance, "corruptions": per,
        "mean_drop": m.mean(list(drops.values())) if drops else None,
        "mean_drop_se": _mean_se([per[c]["drop_se"] for c in drops]) if drops else None,
        "family_drop": {f: m.mean(v) for f, v in families.items()},
        "mean_corrupted_accuracy": mean_acc,
        "relative_robustness": mean_acc / clean["accuracy"] if clean["accuracy"] > 0 else None,
    }


def _mean_se(ses: list[float]) -> float:
    """SE of a mean of independent estimates."""
    return math.sqrt(sum(s * s for s in ses)) / len(ses) if ses else float("nan")


def verdict(diff: float, se: float) -> str:
    """``diff`` = RC drop - JE drop. Positive and beyond 1.96 SE: JE degrades less."""
    if se is None or math.isnan(se) or se == 0:
        return "no clear winner"
    if diff > Z95 * se:
        return "JE"
    if diff < -Z95 * se:
        return "RC"
    return "no clear winner"


def compare_paradigms(summaries: dict[str, dict], paradigms: dict[str, str]) -> dict[str, Any] | None:
    """Per corruption: mean Drop of JE encoders vs RC encoders, their difference, its SE and a verdict."""
    je = [e for e, p in paradigms.items() if p == "JE"]
    rc = [e for e, p in paradigms.items() if p == "RC"]
    if not je or not rc:
        return None
    corrs = [c for c, d in summaries[je[0]]["corruptions"].items() if d["drop"] is not None]
    per = {}
    for c in corrs:
        je_d = [summaries[e]["corruptions"][c]["drop"] for e in je]
        rc_d = [summaries[e]["corruptions"][c]["drop"] for e in rc]
        je_se = _mean_se([summaries[e]["corruptions"][c]["drop_se"] for e in je])
        rc_se = _mean_se([summaries[e]["corruptions"][c]["drop_se"] for e in rc])
        diff, se = m.mean(rc_d) - m.mean(je_d), math.sqrt(je_se**2 + rc_se**2)
        near = any(summaries[e]["corruptions"][c]["near_chance"] for e in je + rc)
        per[c] = {"je_drop": m.mean(je_d), "rc_drop": m.mean(rc_d), "rc_minus_je": diff, "se": se,
                  "near_chance": near, "less_degradation": "no clear winner" if near else verdict(diff, se)}
    if not per:
        return None
    usable = [d for d in per.values() if not d["near_chance"]]  # drops from near-chance accuracy are noise
    diffs = [d["rc_minus_je"] for d in usable]
    se_all = _mean_se([d["se"] for d in usable]) if usable else float("nan")
    overall = {"je_drop": m.mean([d["je_drop"] for d in usable]) if usable else float("nan"),
               "rc_drop": m.mean([d["rc_drop"] for d in usable]) if usable else float("nan"),
               "rc_minus_je": m.mean(diffs) if usable else float("nan"), "se": se_all,
               "corruptions_used": len(usable),
               "less_degradation": verdict(m.mean(diffs), se_all) if usable else "no clear winner"}
    counts = {v: sum(d["less_degradation"] == v for d in per.values()) for v in ("JE", "RC", "no clear winner")}
    return {"je_encoders": je, "rc_encoders": rc, "per_corruption": per, "overall": overall, "counts": counts,
            "rule": "verdict when |mean RC Drop - mean JE Drop| > 1.96 SE (delta-method SE, S1/S5 independent); "
                    "corruptions where any encoder's S1 interval reaches below 1.5x chance are left out"}


# ------------------------------------------------------------------------------------------ console
def half95(se: float | None) -> float | None:
    """Half-width of a 95 % normal interval from a standard error (None stays None)."""
    return None if se is None else Z95 * se


def pct(x: float | None, digits: int = 1) -> str:
    return "  -  " if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.{digits}f}"


def num(x: float | None, digits: int = 1) -> str:
    return "  -  " if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def single_encoder_caveat(comparison: dict[str, Any] | None) -> str:
    """What a JE-vs-RC verdict cannot say when a paradigm has one encoder: it compares files, not paradigms."""
    if not comparison:
        return ""
    thin = [p for p, key in (("JE", "je_encoders"), ("RC", "rc_encoders")) if len(comparison.get(key) or []) == 1]
    if not thin:
        return ""
    has = "has one encoder" if len(thin) == 1 else "have one encoder each"
    return (f"; caution: {' and '.join(thin)} {has}, so this compares these checkpoints, not the paradigms "
            f"(add encoders of other methods per paradigm)")


def vs_floor(summary: dict[str, Any], floor: dict[str, Any] | None) -> str | None:
    """How the clean accuracy compares with the random-init floor's: ``"above"`` (intervals apart), ``"below"``
    (the whole interval under the floor's accuracy: the pretrained weights do worse than random ones),
    ``"indistinguishable"`` (the intervals overlap), or None without a floor."""
    if not floor or floor.get("accuracy") is None:
        return None
    lo, hi = summary["clean_ci95"]
    f_lo, f_hi = floor.get("ci95") or (floor["accuracy"], floor["accuracy"])
    if hi < floor["accuracy"]:
        return "below"
    return "above" if lo > f_hi else "indistinguishable"


def floor_warnings(results: dict[str, Any]) -> list[str]:
    """One line per encoder whose clean accuracy is not above its random-init floor."""
    out = []
    for name, s in results["summary"].items():
        status, floor = s.get("vs_floor"), results["encoders"][name].get("floor") or {}
        if status in ("below", "indistinguishable"):
            what = "below" if status == "below" else "no better than"
            out.append(f"warning: {name}'s clean accuracy {pct(s['clean_accuracy'])} % is {what} its random-init "
                       f"floor {pct(floor.get('accuracy'))} %: the pretrained weights add nothing here; check the "
                       f"checkpoint, its readout (-o options) and input size")
    return out


def console_table(results: dict[str, Any]) -> str:
    """A readable plain-text summary: one line per encoder, then Drop per corruption and the JE/RC verdict."""
    s = results["summary"]
    enc = results["encoders"]
    w = max([12] + [len(n) for n in s])  # whole names: "torchvision-a" and "torchvision-b" stay apart
    lines = ["", f"{'encoder':<{w}} {'paradigm':<8} {'clean acc (95% CI)':<22} {'random-init':>11} "
                 f"{'mean acc':>9} {'mean Drop':>10}"]
    for name, d in s.items():
        lo, hi = d["clean_ci95"]
        floor = (enc[name].get("floor") or {}).get("accuracy")
        lines.append(f"{name:<{w}} {enc[name]['paradigm']:<8} {pct(d['clean_accuracy']):>5} "
                     f"[{pct(lo)}, {pct(hi)}]{'':<5} {pct(floor):>11} {pct(d['mean_corrupted_accuracy']):>9} "
                     f"{num(d['mean_drop']):>6} ±{num(half95(d['mean_drop_se']))}")
    comp = results.get("comparison")
    names = list(s)
    corrs = list(next(iter(s.values()))["corruptions"]) if s else []
    if corrs and any(s[n]["corruptions"][c]["drop"] is not None for n in names for c in corrs):
        lines += ["", "Drop = 100*(S1-S5)/S1 in % (lower is more robust)" + (" ; verdict: who degrades less"
                                                                             if comp else "")]
        cw = {n: max(10, len(n)) for n in names}
        lines.append(f"{'corruption':<18} " + " ".join(f"{n:>{cw[n]}}" for n in names)
                     + ("   RC-JE (±95%)   verdict" if comp else ""))
        for c in corrs:
            row = f"{c:<18} " + " ".join(f"{num(s[n]['corruptions'][c]['drop']):>{cw[n]}}" for n in names)
            if comp and c in comp["per_corruption"]:
                p = comp["per_corruption"][c]
                row += f"   {num(p['rc_minus_je']):>6} ±{num(half95(p['se'])):<6}  {p['less_degradation']}"
            lines.append(row)
        if comp:
            o = comp["overall"]
            lines.append(f"{'mean':<18} " + " ".join(f"{num(s[n]['mean_drop']):>{cw[n]}}" for n in names)
                         + f"   {num(o['rc_minus_je']):>6} ±{num(half95(o['se'])):<6}  {o['less_degradation']}")
    warnings = floor_warnings(results)
    if warnings:
        lines += ["", *warnings]
    rec = results.get("recommendation")
    if rec:
        lines += ["", f"Recommendation: {rec.get('headline', '')}"]
    if (results.get("config") or {}).get("quick"):
        lines += ["(quick subset: --quick ran fewer corruptions, severities and images than the full run)"]
    return "\n".join(lines)
