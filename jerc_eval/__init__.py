"""jerc-eval: how robust is a pretrained self-supervised image encoder, and why.

Python API::

    import jerc_eval
    results = jerc_eval.evaluate(encoders=["zoo-mae", "zoo-dino"], corruptions=["noise"], severities=[1, 3, 5])
    results["summary"]["zoo-dino"]["mean_drop"]
"""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def evaluate(progress: bool = False, echo: Any = None, plugin_files: tuple[str, ...] = (),
             modules: dict[str, Any] | None = None, **config: Any) -> dict:
    """Run an evaluation with :class:`jerc_eval.config.RunConfig` keys; returns the results document.

    ``modules`` maps aliases to ready encoders (:class:`jerc_eval.ModuleEncoder`, a ``torch.nn.Module`` with its
    preprocessing and paradigm); they run beside the named ``encoders`` (without ``encoders``: alone).
    Note: writes ``results.json`` and ``report.md`` under ``config["out"]`` (default ``jerc-eval-results``).
    """
    from .config import from_mapping
    from .pipeline import run
    from .plugins import create_host

    if modules:
        config = {**config, "encoders": [*config.get("encoders", []), *modules]}
    cfg = from_mapping(config, source="evaluate()")
    host = create_host(plugin_files=plugin_files)
    return run(cfg, host=host, echo=echo or (lambda _msg: None), progress=progress, modules=modules)


def __getattr__(name: str) -> Any:  # jerc_eval.ModuleEncoder without importing torch at package import
    if name == "ModuleEncoder":
        from .module_encoder import ModuleEncoder

        return ModuleEncoder
    raise AttributeError(name)


__all__ = ["__version__", "evaluate", "ModuleEncoder"]
