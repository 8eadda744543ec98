"""report.html: one self-contained file (inline SVG plots, no scripts or assets from the network).

Plots: accuracy vs severity per corruption (one panel per corruption, one line per encoder, 95 % bands), the
paper's Drop per corruption as grouped bars with 95 % error bars, and a corruption x severity heatmap of
accuracy per encoder.
"""
from __future__ import annotations

import html
import io
import math
from typing import Any

from ..summary import Z95, half95, num, pct
from .markdown import render_markdown

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1200px;color:#222}
h1{font-size:1.6rem}h2{font-size:1.25rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5rem 0;font-size:.9rem}td,th{border:1px solid #ccc;padding:.25rem .5rem}
th{background:#f4f4f4}pre{white-space:pre-wrap;font-size:.8rem}.plot svg{max-width:100%;height:auto}.headline{font-weight:600;background:#eef6ee;
padding:.6rem;border-left:4px solid #3a3}.meta{color:#555;font-size:.9rem}
"""


def _svg(fig: Any, tight: bool = True) -> str:
    """Render ``fig`` as inline SVG (no XML prolog or doctype) and close it. ``tight``: lay the figure out with
    ``tight_layout`` (small figures); otherwise its own margins stand and the saved bounding box is cropped to what
    was drawn (one layout pass fewer: the grids of 15 panels took about a second each to lay out)."""
    import matplotlib.pyplot as plt

    if tight:  # laid out here: a second, "tight" bounding-box pass at save time would draw the figure twice
        fig.tight_layout()
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches=None if tight else "tight", metadata={"Date": None})
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]


def _figure(w: float, h: float) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.hashsalt"] = "jerc-eval"  # stable ids: the same results give the same file
    return plt, plt.figure(figsize=(w, h))


def plot_accuracy_vs_severity(results: dict[str, Any]) -> str:
    summary = results["summary"]
    sevs = results["suite"]["severities"]
    corrs = list(results["suite"]["corruptions"])
    cols = min(5, max(1, len(corrs)))
    rows = math.ceil(len(corrs) / cols)
    plt, fig = _figure(3.0 * cols, 2.4 * rows)
    for i, c in enumerate(corrs):
        ax = fig.add_subplot(rows, cols, i + 1)
        for name, s in summary.items():
            d = s["corruptions"].get(c)
            if not d:
                continue
            xs = [0] + sevs
            ys = [100 * s["clean_accuracy"]] + [100 * d["accuracy"][str(v)] for v in sevs]
            lo = [100 * s["clean_ci95"][0]] + [100 * d["ci95"][str(v)][0] for v in sevs]
            hi = [100 * s["clean_ci95"][1]] + [100 * d["ci95"][str(v)][1] for v in sevs]
            line, = ax.plot(xs, ys, marker="o", ms=3, label=f"{name} ({results['encoders'][name]['paradigm']})")
            ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.15, lw=0)
        ax.axhline(100 * next(iter(summary.values()))["chance"], color="grey", ls=":", lw=0.8)
        ax.set_title(c, fontsize=9)
        ax.set_xticks([0] + sevs, ["clean"] + [str(v) for v in sevs], fontsize=7)
        ax.tick_params(axis="y", labelsize=7)
        ax.set_ylim(0, 100)
    _figure_legend(fig, rows)
    fig.supylabel("top-1 accuracy (%)", fontsize=9, x=0.003)  # at the edge: clear of the tick labels
    fig.subplots_adjust(left=0.075, right=0.99, bottom=0.08 / rows, top=1 - 0.1 / rows - 0.12 / rows,
                        wspace=0.25, hspace=0.45)
    return _svg(fig, tight=False)


def _figure_legend(fig: Any, rows: int) -> None:
    """One legend for every panel, above them (a legend inside the first panel hides its curves and leaves
    the other panels unexplained)."""
    handles, labels = fig.axes[0].get_legend_handles_labels() if fig.axes else ([], [])
    if handles:
        fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 6), fontsize=7, frameon=False,
                   bbox_to_anchor=(0.5, 1.0))


def plot_drop_bars(results: dict[str, Any]) -> str | None:
    summary = results["summary"]
    corrs = [c for c in results["suite"]["corruptions"]
             if any(s["corruptions"].get(c, {}).get("drop") is not None for s in summary.values())]
    if not corrs:
        return None
    plt, fig = _figure(max(6.0, 0.6 * len(corrs) * max(1, len(summary)) / 1.5), 3.2)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / len(summary)
    for k, (name, s) in enumerate(summary.items()):
        xs = [i + (k - (len(summary) - 1) / 2) * width for i in range(len(corrs))]
        ys = [s["corruptions"][c]["drop"] or 0.0 for c in corrs]
        err = [Z95 * (s["corruptions"][c]["drop_se"] or 0.0) for c in corrs]
        ax.bar(xs, ys, width, yerr=err, capsize=2, label=f"{name} ({results['encoders'][name]['paradigm']})")
    ax.set_xticks(range(len(corrs)), corrs, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("Drop = 100·(S1−S5)/S1 (%)", fontsize=9)
    ax.axhline(0, color="black", lw=0.6)
    ax.legend(fontsize=8)
    return _svg(fig)


def plot_heatmaps(results: dict[str, Any]) -> str:
    summary = results["summary"]
    sevs = results["suite"]["severities"]
    corrs = list(results["suite"]["corruptions"])
    plt, fig = _figure(2.2 + 1.6 * len(summary) * max(1, len(sevs)) / 5, 0.3 * len(corrs) + 1.2)
    for k, (name, s) in enumerate(summary.items()):
        ax = fig.add_subplot(1, len(summary), k + 1)
        grid = [[100 * s["corruptions"][c]["accuracy"][str(v)] for v in sevs] for c in corrs]
        im = ax.imshow(grid, vmin=0, vmax=100, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(sevs)), [f"S{v}" for v in sevs], fontsize=7)
        ax.set_yticks(range(len(corrs)), corrs if k == 0 else [""] * len(corrs), fontsize=7)
        ax.set_title(name, fontsize=9)
        for i, row in enumerate(grid):
            for j, val in enumerate(row):
                ax.text(j, i, f"{val:.0f}", ha="center", va="center", fontsize=6,
                        color="white" if val < 50 else "black")
    fig.colorbar(im, ax=fig.axes, shrink=0.8, label="accuracy (%)")
    return _svg(fig, tight=False)


def plot_spectra(results: dict[str, Any]) -> str | None:
    """Per corruption at its highest severity: signal spectrum s, noise spectrum Γ and augmentation Θ on the noise
    directions (first encoder's recipe), with the Corollary 4.5 boundary b; the title gives the regime."""
    ev = results.get("alignment_evidence") or {}
    cells = ev.get("cells") or {}
    if not cells:
        return None
    corrs = [c for c in results["suite"]["corruptions"] if c in cells]
    cols = min(5, len(corrs))
    rows = math.ceil(len(corrs) / cols)
    plt, fig = _figure(3.0 * cols, 2.4 * rows)
    for i, c in enumerate(corrs):
        sev = max(cells[c], key=int)
        encs = cells[c][sev].get("encoders") or {}
        name, e = next(iter(encs.items()), (None, None))
        if not e or "spectra" not in e:
            continue
        ax = fig.add_subplot(rows, cols, i + 1)
        sp = e["spectra"]
        for key, label, style in (("signal", "signal s", "o-"), ("noise", "noise Γ", "s-"),
                                  ("theta_noise", "augment. Θ (noise dirs)", "^:")):
            raw = [v for v in (sp.get(key) or []) if v and v > 0][:32]
            top = max(raw, default=0.0)
            vals = [v for v in raw if v >= 1e-6 * top]  # numerical zeros would flatten the log axis
            if vals:
                ax.semilogy(range(1, len(vals) + 1), vals, style, ms=2, lw=1, label=label)
        if e.get("b"):
            ax.axhline(e["b"], color="black", ls="--", lw=0.8, label="boundary b")
        ax.set_title(f"{c} s{sev}: {e.get('regime', '?')} → {e.get('less_alignment', '?')}", fontsize=8)
        ax.tick_params(labelsize=6)
        ax.minorticks_off()  # a log axis' minor ticks are most of the drawing time and no help at this size
    if not fig.axes:  # no encoder's recipe could be modelled: no section rather than an empty one
        plt.close(fig)
        return None
    _figure_legend(fig, rows)
    fig.supxlabel("direction (sorted)", fontsize=8)
    fig.subplots_adjust(left=0.05, right=0.99, bottom=0.12 / rows, top=1 - 0.1 / rows - 0.12 / rows,
                        wspace=0.25, hspace=0.45)
    return _svg(fig, tight=False)


def _table(head: list[str], rows: list[list[str]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _summary_table(results: dict[str, Any]) -> str:
    rows = []
    for name, s in results["summary"].items():
        e = results["encoders"][name]
        floor = (e.get("floor") or {}).get("accuracy")
        lo, hi = s["clean_ci95"]
        drop = "-" if s["mean_drop"] is None else f"{num(s['mean_drop'])} ±{num(half95(s['mean_drop_se']))}"
        rows.append([name, e["paradigm"], e["arch"], f"{pct(s['clean_accuracy'])} [{pct(lo)}, {pct(hi)}]",
                     pct(floor), pct(s["mean_corrupted_accuracy"]), drop])
    return _table(["encoder", "paradigm", "architecture", "clean (95% CI)", "random-init floor",
                   "mean corrupted", "mean Drop ±95%"], rows)


def _plots(results: dict[str, Any]) -> dict[str, str | None]:
    """The four plots as SVG. Half of them draw in a forked child while this process draws the others
    (``engine.fork_beside``): matplotlib is single-threaded, and the plots took about a third of a warm rerun
    (4.5 s of 12.7 s). The same functions and settings run either way: the same SVG."""
    from ..engine import fork_beside

    mine = {"accuracy": plot_accuracy_vs_severity, "drop": plot_drop_bars}  # ~2.2 s and ~2.6 s of drawing
    theirs = {"spectra": plot_spectra, "heatmap": plot_heatmaps}
    drawn_there, drawn_here = fork_beside(_draw, (theirs, results), lambda: _draw(mine, results))
    return {**drawn_there, **drawn_here}


def _draw(funcs: dict[str, Any], results: dict[str, Any]) -> dict[str, str | None]:
    return {k: f(results) for k, f in funcs.items()}


def render_html(results: dict[str, Any]) -> str:
    d, su = results["dataset"], results["suite"]
    plots = _plots(results)
    rec = results.get("recommendation") or {}
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<title>jerc-eval report</title>", f"<style>{_CSS}</style></head><body>",
        "<h1>jerc-eval robustness report</h1>",
        f"<p class='meta'>{html.escape(d['name'])}: {d['n_train']} train / {d['n_test']} test images, "
        f"{d['num_classes']} classes · suite {html.escape(su['name'])} ({su['backend']} "
        f"{html.escape(str(su['backend_version']))}) · seed {results['config']['seed']} · jerc-eval "
        f"{results['jerc_eval_version']} · {results['created']}</p>",
    ]
    if results["config"].get("quick"):
        parts.append("<p class='headline' id='quick'>Quick subset (--quick): fewer corruptions, severities and "
                     "images than the full run; rerun without --quick for the numbers to report.</p>")
    if rec:
        parts.append(f"<p class='headline' id='recommendation'>{html.escape(rec.get('headline', ''))}</p>")
    parts += ["<h2>Summary</h2>", _summary_table(results),
              "<h2>Accuracy vs severity</h2><div class='plot' id='plot-accuracy'>",
              plots["accuracy"], "</div>"]
    bars = plots["drop"]
    if bars:
        parts += ["<h2>Drop per corruption</h2><div class='plot' id='plot-drop'>", bars, "</div>"]
    parts += ["<h2>Accuracy heatmap (corruption × severity)</h2><div class='plot' id='plot-heatmap'>",
              plots["heatmap"], "</div>"]
    spectra = plots["spectra"]
    if spectra:
        parts += ["<h2>Spectra and regime (linear theory, Section 4 of the paper)</h2>",
                  "<p class='meta'>Estimated in a 16×16 grey pixel basis from clean/corrupted pairs and sampled "
                  "augmentations; title: the regime and which paradigm needs less alignment "
                  "(see docs/recommendation.md for the assumptions).</p><div class='plot' id='plot-spectra'>",
                  spectra, "</div>"]
    parts += ["<h2>Full tables</h2>", markdown_to_html(render_markdown(results), skip_title=True),
              "</body></html>"]
    return "\n".join(parts)


def markdown_to_html(md: str, skip_title: bool = False) -> str:
    """The Markdown that :func:`render_markdown` writes (headings, pipe tables, bullets, quotes, paragraphs,
    **bold** and `code`) as HTML, every text escaped."""
    import re

    def inline(text: str) -> str:
        text = html.escape(text)
        text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
        return re.sub(r"`(.+?)`", r"<code>\1</code>", text)

    out: list[str] = []
    lines = md.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].rstrip()
        if line.startswith("|"):
            block = []
            while i < len(lines) and lines[i].startswith("|"):
                block.append([c.strip() for c in lines[i].strip().strip("|").split("|")])
                i += 1
            body = [r for r in block[1:] if not all(set(c) <= set("-: ") for c in r)]
            th = "".join(f"<th>{inline(c)}</th>" for c in block[0])
            rows = "".join("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in r) + "</tr>" for r in body)
            out.append(f"<table><thead><tr>{th}</tr></thead><tbody>{rows}</tbody></table>")
            continue
        if line.startswith("- "):
            items = []
            while i < len(lines) and lines[i].startswith("- "):
                items.append(f"<li>{inline(lines[i][2:])}</li>")
                i += 1
            out.append("<ul>" + "".join(items) + "</ul>")
            continue
        m = re.match(r"(#+) (.*)", line)
        if m:
            level = min(6, len(m.group(1)) + 1)  # under the page's own h1/h2
            if not (skip_title and len(m.group(1)) == 1):
                out.append(f"<h{level}>{inline(m.group(2))}</h{level}>")
        elif line.startswith(">"):
            out.append(f"<blockquote>{inline(line.lstrip('> '))}</blockquote>")
        elif line:
            out.append(f"<p>{inline(line)}</p>")
        i += 1
    return "\n".join(out)
