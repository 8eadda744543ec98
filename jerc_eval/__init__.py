"""jerc-eval: how robust is a pretrained self-supervised image encoder, and why.

Python API::

    import jerc_eval
    results = jerc_eval.evaluate(encoders=["zoo-mae", "zoo-dino"], corruptions=["noise"], severities=[1, 3, 5])
    results["summary"]["zoo-dino"]["mean_drop"]
"""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def evaluate(progress: bool = False, echo: Any = None, plugin_files: tuple[str, ...] = (), **config: Any) -> dict:
    """Run an evaluation with :class:`jerc_eval.config.RunConfig` keys; returns the results document.

    Note: writes ``results.json`` and ``report.md`` under ``config["out"]`` (default ``jerc-eval-results``).
    """
    from .config import from_mapping
    from .pipeline import run
    from .plugins import create_host

    cfg = from_mapping(config, source="evaluate()")
    host = create_host(plugin_files=plugin_files)
    return run(cfg, host=host, echo=echo or (lambda _msg: None), progress=progress)


__all__ = ["__version__", "evaluate"]
