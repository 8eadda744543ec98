"""The results document (schema ``jerc-eval/results`` v1) and writing reports atomically.

See ``docs/results-schema.md`` for every field.
"""
from __future__ import annotations

import datetime as dt
import importlib.metadata as md
import os
import platform
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import summary as summ
from .errors import UsageError

if TYPE_CHECKING:
    from .api import LoadedDataset, Reporter
    from .pipeline import Evaluator, Plan
    from .plugins import Host

SCHEMA = "jerc-eval/results"
SCHEMA_VERSION = 1
_PACKAGES = ("jerc-eval", "torch", "torchvision", "numpy", "scikit-learn", "scikit-image", "scipy",
             "imagecorruptions-imaug", "imagecorruptions", "pluggy", "opencv-python-headless", "numba")


def package_versions() -> dict[str, str]:
    out = {}
    for name in _PACKAGES:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            continue
    return out


def git_revision() -> str | None:
    here = Path(__file__).resolve().parent.parent
    if not (here / ".git").exists():
        return None
    try:
        rev = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=False).stdout.strip()
        return rev or None
    except (OSError, subprocess.SubprocessError):
        return None


def environment(device: str, torch_threads: int | None = None) -> dict[str, Any]:
    import torch

    return {"python": platform.python_version(), "platform": platform.platform(), "device": device,
            "cuda": torch.cuda.get_device_name(0) if device.startswith("cuda") else None,
            "torch_threads": torch_threads if torch_threads is not None else torch.get_num_threads(), "cpu_count": os.cpu_count(), "packages": package_versions(),
            "git_revision": git_revision()}


def _encoder_record(ev: Evaluator, plan: Plan, floor: dict | None) -> dict[str, Any]:
    e = ev.encoder
    return {"adapter": ev.adapter.name, "adapter_version": ev.adapter.version, "plugin": plan.plugin_of[ev.name],
            "options": {k: str(v) if isinstance(v, Path) else v for k, v in ev.adapter.opts.items()},
            "paradigm": e.paradigm, "arch": e.arch, "feature_protocol": e.feature_protocol,
            "weights_sha256": e.weights_sha256, "preprocess": dict(e.preprocess.__dict__),
            "augmentation": e.augmentation, "meta": e.meta, "fingerprint": ev.fp, "probe": ev.probe_info,
            "floor": floor}


def build_results(plan: Plan, host: Host, data: LoadedDataset, evals: dict[str, Evaluator], rows: list[dict],
                  floors: dict[str, Any], timing: dict[str, float],
                  evidence: dict[str, Any] | None = None) -> dict[str, Any]:
    from . import __version__
    from .pipeline import config_dict
    from .recommend import recommend

    n_cls = len(data.class_names)
    summaries = {n: summ.encoder_summary(rows, n, n_cls) for n in evals}
    for n, s in summaries.items():
        s["vs_floor"] = summ.vs_floor(s, floors.get(n))
    paradigms = {n: ev.encoder.paradigm for n, ev in evals.items()}
    results: dict[str, Any] = {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION, "jerc_eval_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "config": config_dict(plan.cfg),
        "seeds": {"run": plan.cfg.seed,
                  "corruption": "image i of (corruption c, severity s): (sha256(run, c, s)[:4] + i) mod 2^31-1",
                  "probe_folds": "train rows sorted by sha256('jerc-eval/probe-order/<run>/' + image bytes); "
                                 "within each class the i-th row is in fold i mod k",
                  "random_init": "sha256(run, 'random-init', adapter)[:4]"},
        "environment": environment(plan.device, plan.torch_threads),
        "dataset": {"name": plan.cfg.dataset, "fingerprint": data.fingerprint, "n_train": int(len(data.train.labels)),
                    "n_test": int(len(data.test.labels)), "num_classes": n_cls,
                    "image_size": list(data.test.images.shape[1:3]), "provenance": data.provenance},
        "suite": {"name": plan.suite.name, "backend": plan.suite.backend,
                  "backend_version": getattr(plan.suite, "backend_version", ""),
                  "corruptions": {c: plan.suite.corruptions[c] for c in plan.corruptions},
                  "severities": plan.severities},
        "probe": {"name": plan.probe.name, "options": plan.probe.opts},
        "encoders": {n: _encoder_record(ev, plan, floors.get(n)) for n, ev in evals.items()},
        "rows": rows,
        "summary": summaries,
        "comparison": summ.compare_paradigms(summaries, paradigms),
        "alignment_evidence": evidence,
        "plugins": host.plugin_info(),
        "timing": dict(timing),
    }
    results["recommendation"] = recommend(host, results)
    return results


def write_files_atomically(files: dict[Path, str]) -> None:
    """Stage every file as a temp file next to its target, then os.replace each: no half-written reports."""
    staged: list[tuple[str, Path]] = []
    umask = os.umask(0o022)
    os.umask(umask)
    try:
        for final, text in files.items():
            if final.is_dir():
                raise UsageError(f"cannot write {str(final)!r}: it is a folder; pass a file name")
            try:
                final.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
            except OSError as exc:
                raise UsageError(f"cannot write {str(final)!r} ({exc.strerror or exc}); pass a writable path") from None
            staged.append((tmp, final))
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    fh.write(text)
            except OSError as exc:
                from .checks import no_space_message

                full = no_space_message(exc, final.parent)
                if full is None:
                    raise
                raise UsageError(full) from None  # the staged temporary files are removed below
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; reports are ordinary files
    except BaseException:
        for tmp, _ in staged:
            os.unlink(tmp)
        raise
    for tmp, final in staged:
        os.replace(tmp, final)



def write_outputs(results: dict[str, Any], reporters: list[Reporter], out: Path) -> list[Path]:
    """Render every report in memory first, then move each into place; a failure leaves no partial file."""
    files = {out / r.filename: r.render(results) for r in reporters}
    write_files_atomically(files)
    return list(files)


def to_frame(results: Any) -> Any:
    """The tidy rows of a results document (a path to results.json, or the document) as a pandas DataFrame:
    one row per (encoder, corruption, severity) with the encoder's alias, adapter and paradigm, the corruption's
    family, n, correct, accuracy and its 95 % interval (``ci95_low``, ``ci95_high``). Needs pandas
    (``pip install pandas``)."""
    import json

    try:
        import pandas as pd
    except ImportError:
        raise UsageError("to_frame needs pandas; pip install pandas (or jerc-eval[pandas])") from None
    doc = results if isinstance(results, dict) else json.loads(Path(results).read_text(encoding="utf-8"))
    if doc.get("schema") != SCHEMA:
        raise UsageError(f"{results if not isinstance(results, dict) else 'the document'} is not a jerc-eval "
                         f"results document (schema {doc.get('schema')!r})")
    encoders = doc.get("encoders") or {}
    records = []
    for r in doc["rows"]:
        e = encoders.get(r["encoder"], {})
        lo, hi = r.get("ci95") or (None, None)
        records.append({"encoder": r["encoder"], "adapter": e.get("adapter"), "paradigm": e.get("paradigm"),
                        "corruption": r["corruption"], "family": r["family"], "severity": r["severity"],
                        "n": r["n"], "correct": r["correct"], "accuracy": r["accuracy"], "ci95_low": lo,
                        "ci95_high": hi, "dataset": r.get("dataset"), "probe": r.get("probe"),
                        "suite": r.get("suite"), "backend": r.get("backend")})
    return pd.DataFrame.from_records(records)
