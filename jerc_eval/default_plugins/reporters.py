"""Built-in reporters: results.json (the machine-readable document) and report.md (the paper's table layout)."""
from __future__ import annotations

import json
import math
from typing import Any

from ..api import Reporter
from ..hookspecs import hookimpl


def _clean_json(obj: Any) -> Any:
    """NaN/inf are not JSON: write them as null."""
    if isinstance(obj, float) and (math.isnan(obj) or math.isinf(obj)):
        return None
    if isinstance(obj, dict):
        return {str(k): _clean_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean_json(v) for v in obj]
    return obj


class JSONReporter(Reporter):
    name = "json"
    description = "results.json: tidy rows, summaries, config, seeds, versions, hashes (schema jerc-eval/results v1)"
    filename = "results.json"

    def render(self, results: dict[str, Any]) -> str:
        return json.dumps(_clean_json(results), indent=1, sort_keys=False, default=str) + "\n"


class MarkdownReporter(Reporter):
    name = "markdown"
    description = "report.md: per encoder and corruption, S1..S5 accuracy and Drop = 100*(S1-S5)/S1 (paper layout)"
    filename = "report.md"

    def render(self, results: dict[str, Any]) -> str:
        from ..report.markdown import render_markdown

        return render_markdown(results)


class HTMLReporter(Reporter):
    name = "html"
    description = "report.html: self-contained page with plots (accuracy vs severity, Drop bars, heatmap)"
    filename = "report.html"

    def render(self, results: dict[str, Any]) -> str:
        from ..report.html import render_html

        return render_html(results)


@hookimpl
def register_reporters(register: Any) -> None:
    register(JSONReporter)
    register(MarkdownReporter)
    register(HTMLReporter)
