"""The hooks a jerc-eval plugin can implement. Signatures and docstrings only; no logic.

Every registration hook receives a ``register`` callback. Call it once per extension:
``register(ExtensionClass)`` (the class carries its ``name``) or ``register(obj, name=..., aliases=(...))``.
The core records which plugin registered what and rejects name collisions.
"""
from __future__ import annotations

from typing import Any, Callable

import pluggy

PROJECT = "jerc_eval"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

Register = Callable[..., None]


@hookspec
def register_encoders(register: Register) -> None:
    """Register encoder adapters (subclasses of :class:`jerc_eval.api.EncoderAdapter`)."""


@hookspec
def register_corruption_suites(register: Register) -> None:
    """Register corruption suites (subclasses of :class:`jerc_eval.api.CorruptionSuite`)."""


@hookspec
def register_datasets(register: Register) -> None:
    """Register labelled image datasets (subclasses of :class:`jerc_eval.api.Dataset`)."""


@hookspec
def register_probes(register: Register) -> None:
    """Register probes that fit on features and predict labels (subclasses of :class:`jerc_eval.api.Probe`)."""


@hookspec
def register_reporters(register: Register) -> None:
    """Register reporters that render a results document to files (subclasses of :class:`jerc_eval.api.Reporter`)."""


@hookspec(firstresult=True)
def recommend(results: dict[str, Any]) -> dict[str, Any] | None:
    """Return a JE-vs-RC recommendation for a results document, or None to defer to the next implementation.

    :param results: the results document (see ``docs/results-schema.md``) before the recommendation is attached.
    Note: the first non-None answer wins; the built-in recommendation runs last (``trylast``).
    """
