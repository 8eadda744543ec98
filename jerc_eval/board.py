"""``jerc-eval compare a.json b.json ...``: one leaderboard across results documents (RobustBench-style).

Rows are (results file, encoder): clean accuracy, mean corrupted accuracy, mCE where it is defined (ImageNet-C's
own parameter table, the 15 common corruptions at every severity), mean Drop with its 95 % interval and the Drop
per family; sorted by mean corrupted accuracy. Runs that are not comparable (another dataset, suite, backend or
parameter table) are refused with one line naming the difference.
"""
from __future__ import annotations

import csv
import html
import io
import math
from pathlib import Path
from typing import Any

from .errors import UsageError

FAMILIES = ("noise", "blur", "weather", "digital")
COLUMNS = ("rank", "encoder", "run", "paradigm", "clean", "mean corrupted", "mCE", "mean Drop", "±95%",
           *(f"{f} Drop" for f in FAMILIES))


def _comparable(views: list[Any]) -> None:
    first = views[0]
    for v in views[1:]:
        for what, get in (("dataset", lambda d: d["dataset"].get("fingerprint")),
                          ("suite", lambda d: d["suite"].get("name")),
                          ("corruption backend and parameter table", lambda d: d["suite"].get("backend_version")),
                          ("corruptions", lambda d: sorted(d["suite"].get("corruptions") or {})),
                          ("severities", lambda d: list(d["suite"].get("severities") or []))):
            a, b = get(first), get(v)
            if a != b:
                shown = lambda x: x if len(str(x)) < 60 else f"{str(x)[:57]}..."  # noqa: E731
                raise UsageError(f"{v.path} and {first.path} differ in their {what} ({shown(b)!r} vs {shown(a)!r}); "
                                 f"compare only runs on the same dataset, suite, corruption table, corruptions and "
                                 f"severities")


def board_rows(paths: list[str]) -> list[dict[str, Any]]:
    """The leaderboard's rows, best mean corrupted accuracy first."""
    from .gate import ResultsView

    if not paths:
        raise UsageError("compare needs at least one results.json; pass RESULTS [RESULTS ...]")
    views = [ResultsView.load(p) for p in paths]
    _comparable(views)
    stems = [Path(p).parent.name or Path(p).stem for p in paths]
    if len(set(stems)) < len(stems):
        stems = [str(p) for p in paths]
    rows = []
    for view, run in zip(views, stems):
        for enc in view.encoders:
            s = view.summary(enc)
            try:
                mce = view.mce(enc)
            except (UsageError, KeyError, ValueError):
                mce = None  # not defined here (another table, a subset of corruptions or severities)
            fam = s.get("family_drop") or {}
            se = s.get("mean_drop_se")
            rows.append({"encoder": enc, "run": run, "paradigm": view["encoders"][enc].get("paradigm"),
                         "clean": s["clean_accuracy"], "mean corrupted": s["mean_corrupted_accuracy"], "mCE": mce,
                         "mean Drop": s.get("mean_drop"), "±95%": None if se is None else 1.96 * se,
                         **{f"{f} Drop": fam.get(f) for f in FAMILIES}})
    rows.sort(key=lambda r: (-(r["mean corrupted"] if r["mean corrupted"] is not None else -1), r["encoder"]))
    for i, r in enumerate(rows, 1):
        r["rank"] = i
    return rows


def _cell(key: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if key in ("clean", "mean corrupted"):
        return f"{100 * value:.1f}"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def to_text(rows: list[dict[str, Any]]) -> str:
    table = [list(COLUMNS)] + [[_cell(c, r[c]) for c in COLUMNS] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(cell.rjust(w) if i not in (1, 2, 3) else cell.ljust(w)
                               for i, (cell, w) in enumerate(zip(row, widths))) for row in table)


def to_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(COLUMNS)
    for r in rows:
        w.writerow(["" if r[c] is None else r[c] for c in COLUMNS])
    return buf.getvalue()


def to_html(rows: list[dict[str, Any]], sources: list[str]) -> str:
    """A self-contained page (no scripts, nothing fetched)."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(c, r[c]))}</td>" for c in COLUMNS) + "</tr>"
                   for r in rows)
    files = "".join(f"<li><code>{html.escape(s)}</code></li>" for s in sources)
    return ("<!doctype html><html lang='en'><head><meta charset='utf-8'><title>jerc-eval board</title><style>"
            "body{font-family:system-ui,sans-serif;margin:2rem;max-width:80rem}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:.25rem .5rem;text-align:right}th{background:#f4f4f4}"
            "td:nth-child(2),td:nth-child(3),td:nth-child(4){text-align:left}</style></head><body>"
            "<h1>jerc-eval board</h1><p>Sorted by mean corrupted accuracy (%). mCE only where defined (ImageNet-C's "
            "table, all 15 corruptions x 5 severities); Drop = 100·(S1−S5)/S1 with its 95 % interval.</p>"
            f"<table id='board'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
            f"<h2>Runs</h2><ul>{files}</ul></body></html>")


def compare_main(paths: list[str], html_path: str | None = None, csv_path: str | None = None) -> int:
    from .results import write_files_atomically

    rows = board_rows(paths)
    files: dict[Path, str] = {}
    if html_path:
        files[Path(html_path)] = to_html(rows, list(paths))
    if csv_path:
        files[Path(csv_path)] = to_csv(rows)
    if files:
        write_files_atomically(files)
    print(to_text(rows))
    return 0
