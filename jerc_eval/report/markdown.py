"""report.md: the paper's table layout (S1..S5 accuracy and Drop per encoder and corruption), with intervals."""
from __future__ import annotations

from typing import Any

from ..summary import half95, num, pct


def _acc(acc: float | None, ci: list[float] | None) -> str:
    if acc is None:
        return "-"
    if not ci:
        return pct(acc)
    return f"{pct(acc)} ±{100 * (ci[1] - ci[0]) / 2:.1f}"


QUICK_NOTE = ("> **Quick subset (`--quick`)**: fewer corruptions, severities and images than the full run; "
              "rerun without `--quick` for the numbers to report.")


def _header(results: dict[str, Any]) -> list[str]:
    d, s, cfg = results["dataset"], results["suite"], results["config"]
    quick = [QUICK_NOTE, ""] if cfg.get("quick") else []
    return [
        "# jerc-eval robustness report", "", *quick,
        f"- dataset: **{d['name']}** ({d['n_train']} train / {d['n_test']} test images, {d['num_classes']} classes, "
        f"{d['image_size'][0]}x{d['image_size'][1]} px, fingerprint `{d['fingerprint'][:12]}`)",
        f"- corruptions: **{s['name']}** ({len(s['corruptions'])} corruptions x severities {s['severities']}, "
        f"backend {s['backend']} {s['backend_version']})",
        f"- probe: **{results['probe']['name']}** fit on clean train features; seed {cfg['seed']}; "
        f"jerc-eval {results['jerc_eval_version']}, created {results['created']}",
        "- every accuracy is top-1 % with the half-width of its 95% Wilson interval; "
        "Drop = 100·(S1−S5)/S1 (Van Assel et al. 2025, Table 1) with ±1.96 SE", "",
    ]


def _summary(results: dict[str, Any]) -> list[str]:
    out = ["## Summary", "", "| encoder | paradigm | architecture | clean | random-init floor | mean corrupted | "
                             "mean Drop |", "|---|---|---|---|---|---|---|"]
    for name, s in results["summary"].items():
        e = results["encoders"][name]
        floor = e.get("floor") or {}
        drop = "-" if s["mean_drop"] is None else f"{num(s['mean_drop'])} ±{num(half95(s['mean_drop_se']))}"
        out.append(f"| {name} | {e['paradigm']} | {e['arch']} | {_acc(s['clean_accuracy'], s['clean_ci95'])} | "
                   f"{_acc(floor.get('accuracy'), floor.get('ci95'))} | {pct(s['mean_corrupted_accuracy'])} | {drop} |")
    from ..summary import floor_warnings

    warnings = floor_warnings(results)
    return out + [""] + ([f"> **{w}**" for w in warnings] + [""] if warnings else [])


def _recommendation(results: dict[str, Any]) -> list[str]:
    rec, comp = results.get("recommendation"), results.get("comparison")
    out = []
    if rec:
        out += ["## Recommendation", "", f"**{rec.get('headline', '')}**", ""]
        out += [f"- {a}" for a in rec.get("assumptions", [])] + [""]
        advised = [(c, rec["per_corruption"][c]["advice"]) for c in rec.get("advice_for") or []
                   if (rec.get("per_corruption") or {}).get(c, {}).get("advice")]
        if advised:  # what the headline's "(see advice)" points at
            out += ["### Advice", "", "Where an encoder's pretraining augmentations contain less of a corruption "
                    "than its paradigm needs (linear theory, Section 4; advice for pretraining on such data):", ""]
            out += [f"- **{c}**: {line}" for c, lines in advised for line in lines] + [""]
    if comp:
        out += [f"JE encoders: {', '.join(comp['je_encoders'])}; RC encoders: {', '.join(comp['rc_encoders'])}. "
                f"Rule: {comp['rule']}.", "", "| corruption | JE Drop | RC Drop | RC−JE ±95% | degrades less |",
                "|---|---|---|---|---|"]
        for c, p in comp["per_corruption"].items():
            out.append(f"| {c} | {num(p['je_drop'])} | {num(p['rc_drop'])} | {num(p['rc_minus_je'])} "
                       f"±{num(half95(p['se']))} | {p['less_degradation']} |")
        o = comp["overall"]
        out += [f"| **mean** | {num(o['je_drop'])} | {num(o['rc_drop'])} | {num(o['rc_minus_je'])} "
                f"±{num(half95(o['se']))} | **{o['less_degradation']}** |", ""]
    return out


def _tables(results: dict[str, Any]) -> list[str]:
    sevs = [str(s) for s in results["suite"]["severities"]]
    out = ["## Accuracy by corruption and severity", "",
           "| corruption | encoder | clean | " + " | ".join(f"S{s}" for s in sevs) + " | Drop |",
           "|---|---|---|" + "---|" * len(sevs) + "---|"]
    first = next(iter(results["summary"].values()), None)
    for corr in (first or {}).get("corruptions", {}):
        for name, s in results["summary"].items():
            d = s["corruptions"][corr]
            cells = " | ".join(_acc(d["accuracy"].get(k), d["ci95"].get(k)) for k in sevs)
            drop = "-" if d["drop"] is None else f"{num(d['drop'])} ±{num(half95(d['drop_se']))}"
            if d.get("near_chance"):
                drop += " (S1 near chance)"
            out.append(f"| {corr} | {name} | {pct(s['clean_accuracy'])} | {cells} | {drop} |")
    out += ["", "### Mean Drop by family", "", "| encoder | " + " | ".join(_families(results)) + " |",
            "|---|" + "---|" * len(_families(results))]
    for name, s in results["summary"].items():
        out.append(f"| {name} | " + " | ".join(num(s["family_drop"].get(f)) for f in _families(results)) + " |")
    return out + [""]


def _families(results: dict[str, Any]) -> list[str]:
    seen: list[str] = []
    for fam in results["suite"]["corruptions"].values():
        if fam not in seen:
            seen.append(fam)
    return seen


def _provenance(results: dict[str, Any]) -> list[str]:
    out = ["## Provenance", "", "| encoder | adapter | feature protocol | weights sha256 | probe C | train acc |",
           "|---|---|---|---|---|---|"]
    for name, e in results["encoders"].items():
        p = e.get("probe", {})
        sha = (e["weights_sha256"] or "random")[:16]
        out.append(f"| {name} | {e['adapter']} v{e['adapter_version']} ({e['plugin']}) | {e['feature_protocol']} | "
                   f"`{sha}` | {p.get('C')} | {pct(p.get('train_accuracy'))} |")
    pk = results["environment"]["packages"]
    out += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in pk.items()), ""]
    return out


def render_markdown(results: dict[str, Any]) -> str:
    parts = _header(results) + _summary(results) + _recommendation(results) + _tables(results) + _provenance(results)
    return "\n".join(parts)
