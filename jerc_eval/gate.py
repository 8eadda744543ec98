"""Release gate over a results document: a TOML policy, one check per (encoder, rule, target), JUnit/markdown.

    policy = load_policy("gate.toml")
    report = evaluate_gate(load_results("results/results.json"), policy, baseline=load_results("baseline.json"))
    report.passed, to_junit_xml(report), to_markdown(report)

Units: accuracies are fractions in [0, 1] as in ``results.json``; Drop and mCE are percent; regression is
percentage points. See ``docs/gate.md``.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import re
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, TextIO

from . import metrics as m
from .results import write_files_atomically
from .errors import UsageError

SCHEMA = "jerc-eval/results"  # same as jerc_eval.results.SCHEMA (not imported: that module is heavier)
SCHEMA_VERSION = 1
FAMILY_NAMES = ("noise", "blur", "weather", "digital", "extra")


# ------------------------------------------------------------------------------------------ results documents
def validate_results(doc: Any, source: str = "results") -> dict:
    """Check that ``doc`` is a jerc-eval results document (schema ``jerc-eval/results`` v1); UsageError otherwise."""
    if not isinstance(doc, dict) or "schema" not in doc:
        raise UsageError(f"{source} is not a jerc-eval results document (no 'schema' field); "
                         f"pass the results.json written by `jerc-eval run`")
    if doc["schema"] != SCHEMA:
        raise UsageError(f"{source} is not a jerc-eval results document (schema {doc['schema']!r}, expected "
                         f"{SCHEMA!r}); pass the results.json written by `jerc-eval run`")
    version = doc.get("schema_version")
    if version != SCHEMA_VERSION:
        raise UsageError(f"{source} has results schema version {version!r}; this jerc-eval reads version "
                         f"{SCHEMA_VERSION}: rerun `jerc-eval run` or upgrade jerc-eval")
    if not isinstance(doc.get("rows"), list) or not isinstance(doc.get("summary", {}), dict):
        raise UsageError(f"{source} is a truncated results document (no 'rows' list); rerun `jerc-eval run`")
    return doc


def load_results(path: str | os.PathLike, what: str = "results") -> dict:
    """Read and validate a results document; every problem is a one-line UsageError naming the file."""
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"{what} file {str(p)!r} is a folder; pass the results.json inside it")
    if not p.is_file():
        raise UsageError(f"{what} file {str(p)!r} does not exist; pass the results.json written by `jerc-eval run`")
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UsageError(f"{what} file {str(p)!r} is not readable JSON ({first}); pass the results.json written "
                         f"by `jerc-eval run`") from None
    return validate_results(doc, f"{what} file {str(p)!r}")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_row(r: dict, source: str) -> None:
    """A row's numbers are numbers (accuracy a fraction, n and correct counts, ci95 two fractions)."""
    where = f"{source}: row {r.get('encoder')!r} {r.get('corruption')!r} severity {r.get('severity')!r}"
    fix = "rerun `jerc-eval run` (the file was edited or damaged)"
    if not _is_number(r.get("accuracy")) or not 0 <= r["accuracy"] <= 1:
        raise UsageError(f"{where} has accuracy {r.get('accuracy')!r}, not a number in 0..1; {fix}")
    for key in ("n", "correct"):
        if key in r and not (isinstance(r[key], int) and not isinstance(r[key], bool) and r[key] >= 0):
            raise UsageError(f"{where} has {key} {r[key]!r}, not a count; {fix}")
    ci = r.get("ci95")
    if ci is not None and not (isinstance(ci, list) and len(ci) == 2 and all(_is_number(v) for v in ci)):
        raise UsageError(f"{where} has ci95 {ci!r}, not two numbers; {fix}")


_SUMMARY_TEXT = ("family", "vs_floor")  # the only text leaves of a summary


def _check_summary(summary: Any, source: str) -> None:
    """``summary`` maps encoder -> a table whose leaves are numbers, null or true/false (``family`` is text)."""
    if summary is None:
        return
    fix = "rerun `jerc-eval run` (the file was edited or damaged)"
    if not isinstance(summary, dict):
        raise UsageError(f"{source} has a malformed summary (not a table of encoders); {fix}")

    def walk(node: Any, trail: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k in _SUMMARY_TEXT and isinstance(v, str):
                    continue
                walk(v, f"{trail}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{trail}[{i}]")
        elif not (node is None or isinstance(node, bool) or _is_number(node)):
            raise UsageError(f"{source} has a malformed summary: {trail} is {node!r}, not a number; {fix}")

    for enc, table in summary.items():
        if not isinstance(table, dict):
            raise UsageError(f"{source} has a malformed summary: summary.{enc} is {table!r}, not a table; {fix}")
        walk(table, f"summary.{enc}")


class ResultsLookupError(KeyError):
    """An encoder, corruption, severity or family that a results document does not hold (with a did-you-mean)."""

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return str(self.args[0]) if self.args else ""


def _unknown(kind: str, name: Any, available: Iterable[Any]) -> ResultsLookupError:
    avail = [str(a) for a in available]
    close = difflib.get_close_matches(str(name), avail, n=2, cutoff=0.6)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return ResultsLookupError(f"no {kind} {name!r} in these results.{hint} Available: {', '.join(avail) or '(none)'}")


class ResultsView(dict):
    """A results document (it *is* the dict) with accessors that read naturally in release tests::

        r.accuracy("dino")                        # clean accuracy, a fraction
        r.accuracy("dino", "gaussian_noise", 5)   # one cell
        r.accuracy("dino", "fog")                 # mean over the evaluated severities
        r.drop("dino", "pixelate"); r.drop("dino")  # paper Drop in %, per corruption / mean over corruptions
        r.mce("dino")                              # AlexNet-normalized mCE (only meaningful on ImageNet-C)

    Unknown names raise :class:`ResultsLookupError` (a KeyError) with a did-you-mean.
    """

    def __init__(self, doc: dict, path: str | None = None):
        super().__init__(validate_results(doc, path or "results"))
        self.path = path
        self._cells: dict[tuple[str, str, int], dict] = {}
        try:
            for r in self["rows"]:
                self._cells[(str(r["encoder"]), str(r["corruption"]), int(r["severity"]))] = r
        except (KeyError, TypeError, ValueError):
            raise UsageError(f"{path or 'results'} has malformed rows (each needs encoder, corruption, severity); "
                             f"rerun `jerc-eval run`") from None
        for r in self["rows"]:
            _check_row(r, path or "results")
        _check_summary(self.get("summary"), path or "results")
        names = list(self.get("summary") or {}) or list(self.get("encoders") or {})
        self._encoders = names + [e for e in dict.fromkeys(e for e, _, _ in self._cells) if e not in names]

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ResultsView":
        return cls(load_results(path), str(path))

    # -- names
    @property
    def encoders(self) -> list[str]:
        return list(self._encoders)

    def corruptions(self, encoder: str | None = None) -> list[str]:
        out: list[str] = []
        for enc, corr, _ in self._cells:
            if corr != "clean" and corr not in out and (encoder is None or enc == encoder):
                out.append(corr)
        return out

    def severities(self, encoder: str, corruption: str) -> list[int]:
        return sorted(s for e, c, s in self._cells if e == encoder and c == corruption)

    def _encoder(self, encoder: str) -> str:
        if encoder not in self.encoders:
            raise _unknown("encoder", encoder, self.encoders)
        return encoder

    def _corruption(self, encoder: str, corruption: str) -> str:
        if corruption != "clean" and corruption not in self.corruptions(encoder):
            raise _unknown("corruption", corruption, self.corruptions(encoder))
        return corruption

    # -- cells
    def row(self, encoder: str, corruption: str = "clean", severity: int | None = None) -> dict:
        """The tidy row of one (encoder, corruption, severity); clean is severity 0."""
        self._corruption(self._encoder(encoder), corruption)
        sev = 0 if corruption == "clean" else severity
        if sev is None:
            raise TypeError(f"row() of corruption {corruption!r} needs a severity "
                            f"(evaluated: {self.severities(encoder, corruption)})")
        try:
            return self._cells[(encoder, corruption, int(sev))]
        except KeyError:
            raise _unknown(f"severity of {corruption!r} for encoder {encoder!r}:", int(sev),
                           self.severities(encoder, corruption)) from None

    def accuracy(self, encoder: str, corruption: str = "clean", severity: int | None = None) -> float:
        """Top-1 accuracy (fraction). Clean by default; a corruption without severity gives the mean over the
        evaluated severities."""
        if corruption != "clean" and severity is None:
            self._corruption(self._encoder(encoder), corruption)
            accs = [self._cells[(encoder, corruption, s)]["accuracy"] for s in self.severities(encoder, corruption)]
            return sum(accs) / len(accs)
        return float(self.row(encoder, corruption, severity)["accuracy"])

    def error(self, encoder: str, corruption: str = "clean", severity: int | None = None) -> float:
        """Top-1 error, ``1 - accuracy``."""
        return 1.0 - self.accuracy(encoder, corruption, severity)

    def ci95(self, encoder: str, corruption: str = "clean", severity: int | None = None) -> tuple[float, float]:
        """The 95 % Wilson interval of one cell's accuracy."""
        lo, hi = self.row(encoder, corruption, severity)["ci95"]
        return float(lo), float(hi)

    def summary(self, encoder: str) -> dict:
        """``summary[encoder]`` of the document (computed from the rows when the document has none)."""
        self._encoder(encoder)
        s = (self.get("summary") or {}).get(encoder)
        if s is None:
            from .summary import encoder_summary

            if (encoder, "clean", 0) not in self._cells:
                raise UsageError(f"{self.path or 'results'} has no summary and no clean row for encoder {encoder!r}; "
                                 f"rerun `jerc-eval run`")
            s = encoder_summary(self["rows"], encoder, int((self.get("dataset") or {}).get("num_classes") or 2))
        return s

    def drop(self, encoder: str, corruption: str | None = None) -> float | None:
        """The paper's Drop = 100·(S1−S5)/S1 in percent; without a corruption, the mean Drop over corruptions.
        None when severities 1 and 5 were not both evaluated."""
        s = self.summary(encoder)
        if corruption is None:
            return s.get("mean_drop")
        self._corruption(encoder, corruption)
        return s["corruptions"][corruption].get("drop")

    def family_drop(self, encoder: str, family: str) -> float:
        """Mean Drop (percent) over the corruptions of one family."""
        fams = self.summary(encoder).get("family_drop") or {}
        if family not in fams:
            raise _unknown("family", family, fams)
        return fams[family]

    def errors(self, encoder: str) -> tuple[dict[str, dict[int, float]], float | None]:
        """``({corruption: {severity: error}}, clean_error)`` for the mCE functions of :mod:`jerc_eval.metrics`."""
        return m.errors_from_rows(self["rows"], self._encoder(encoder))

    def _no_mce_mixing(self, baseline: "ResultsView | None") -> None:
        reason = mce_mixing(self, baseline)
        if reason:
            raise UsageError(reason)

    def mce(self, encoder: str, baseline: "ResultsView | None" = None, baseline_encoder: str | None = None) -> float:
        """mCE in percent vs AlexNet (only meaningful on ImageNet-C itself) or vs a baseline results document.
        Refused (UsageError) when it would mix suites, backends or parameter tables (:func:`mce_mixing`)."""
        self._no_mce_mixing(baseline)
        errs, _ = self.errors(encoder)
        base = None if baseline is None else baseline.errors(baseline_encoder or encoder)[0]
        return m.mce(errs, base)

    def relative_mce(self, encoder: str, baseline: "ResultsView | None" = None,
                     baseline_encoder: str | None = None) -> float:
        """Relative mCE in percent vs AlexNet (only meaningful on ImageNet-C itself) or vs a baseline document."""
        self._no_mce_mixing(baseline)
        errs, clean = self.errors(encoder)
        if clean is None:
            raise _unknown("clean row for encoder", encoder, [])
        if baseline is None:
            return m.relative_mce(errs, clean)
        b_errs, b_clean = baseline.errors(baseline_encoder or encoder)
        return m.relative_mce(errs, clean, b_errs, b_clean)


# ------------------------------------------------------------------------------------------ policy
@dataclass(frozen=True)
class Policy:
    """Gate rules; a rule left as None (or an empty table) is not checked."""

    min_clean_accuracy: float | None = None          # fraction in [0, 1]
    max_drop: float | None = None                    # mean paper Drop over corruptions, percent
    max_drop_per_corruption: dict[str, float] = field(default_factory=dict)   # percent
    max_family_drop: dict[str, float] = field(default_factory=dict)           # percent
    max_mce: float | None = None                     # percent, vs baseline if given else AlexNet
    max_regression: float | None = None              # percentage points beyond the combined 95 % interval
    encoders: list[str] | None = None                # None: every encoder in the results
    source: str = "policy"

    def rules(self) -> list[str]:
        scalars = ("min_clean_accuracy", "max_drop", "max_mce", "max_regression")
        out = [k for k in scalars if getattr(self, k) is not None]
        out += [k for k in ("max_drop_per_corruption", "max_family_drop") if getattr(self, k)]
        return out

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in dataclasses.asdict(self).items() if k != "source" and v not in (None, {}, [])}
        return d


POLICY_KEYS = tuple(f.name for f in dataclasses.fields(Policy) if f.name != "source")


def _number(key: str, value: Any, source: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UsageError(f"policy key {key!r} in {source} should be a number, got {value!r}")
    if value < 0:
        raise UsageError(f"policy key {key!r} in {source} should not be negative, got {value!r}")
    return float(value)


def _table(key: str, value: Any, source: str) -> dict[str, float]:
    if not isinstance(value, dict):
        raise UsageError(f"policy key {key!r} in {source} should be a table of name = number "
                         f"(e.g. [{key}] then gaussian_noise = 30), got {value!r}")
    return {str(k): _number(f"{key}.{k}", v, source) for k, v in value.items()}


def policy_from_mapping(data: dict[str, Any], base: Policy | None = None, source: str = "policy") -> Policy:
    """Validate policy keys (unknown ones are a UsageError with a did-you-mean) over ``base``."""
    if not isinstance(data, dict):
        raise UsageError(f"{source} must be a table of policy keys")
    values: dict[str, Any] = {}
    nested: dict[str, Any] = {}
    for key, value in data.items():  # "max_family_drop.noise = 5" (e.g. from --set) means a table entry
        head, dot, rest = str(key).partition(".")
        if dot and head in ("max_drop_per_corruption", "max_family_drop") and rest:
            table = nested.setdefault(head, {})
            if not isinstance(table, dict):
                raise UsageError(f"policy key {head!r} in {source} should be a table of name = number")
            table[rest] = value
        elif key in nested and isinstance(value, dict):
            nested[key].update(value)
        else:
            nested[key] = value
    for key, value in nested.items():
        if key not in POLICY_KEYS:
            close = difflib.get_close_matches(key, POLICY_KEYS, n=1, cutoff=0.5)
            hint = f" Did you mean: {close[0]}?" if close else ""
            raise UsageError(f"unknown policy key {key!r} in {source}.{hint} Keys: {', '.join(POLICY_KEYS)}")
        if key in ("max_drop_per_corruption", "max_family_drop"):  # tables merge over the base policy's
            values[key] = {**(getattr(base, key) if base else {}), **_table(key, value, source)}
        elif key == "encoders":
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value) or not value:
                raise UsageError(f"policy key 'encoders' in {source} should be a non-empty list of encoder names, "
                                 f"got {value!r}")
            values[key] = list(value)
        elif value is None:
            values[key] = None
        else:
            values[key] = _number(key, value, source)
    mca = values.get("min_clean_accuracy")
    if mca is not None and mca > 1:
        raise UsageError(f"policy key 'min_clean_accuracy' in {source} is a fraction in [0, 1] like results.json "
                         f"accuracies, got {mca:g}; write {mca / 100:g} for {mca:g} %")
    return dataclasses.replace(base or Policy(), source=source if base is None else base.source, **values)


def load_policy(path: str | os.PathLike) -> Policy:
    """Read a TOML gate policy (keys: see :data:`POLICY_KEYS`, docs/gate.md)."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"policy file {str(p)!r} does not exist; check the path given to --policy")
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ModuleNotFoundError:
            raise UsageError("reading a TOML policy on Python 3.10 needs `pip install tomli`") from None
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"policy file {p.name!r} does not parse ({str(exc).splitlines()[0]}); fix its TOML "
                         f"syntax") from None
    return policy_from_mapping(data, source=f"policy file {p.name!r}")


# ------------------------------------------------------------------------------------------ checks
@dataclass(frozen=True)
class Check:
    """One (encoder, rule, target) check. ``measured``/``threshold`` are in ``unit`` (%, pts or a fraction)."""

    encoder: str
    rule: str
    target: str
    passed: bool
    measured: float | None
    threshold: float
    message: str
    unit: str = "%"

    @property
    def status(self) -> str:
        return "pass" if self.passed else "fail"

    @property
    def name(self) -> str:
        return f"{self.rule}[{self.target}]"

    def to_dict(self) -> dict[str, Any]:
        return {"encoder": self.encoder, "rule": self.rule, "target": self.target, "status": self.status,
                "measured": self.measured, "threshold": self.threshold, "unit": self.unit, "message": self.message}


@dataclass
class GateReport:
    checks: list[Check]
    policy: Policy
    results_source: str | None = None
    baseline_source: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "results": self.results_source, "baseline": self.baseline_source,
                "policy": self.policy.to_dict(), "warnings": list(self.warnings),
                "checks": [c.to_dict() for c in self.checks]}


def _fmt(x: float | None, unit: str) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if unit == "fraction":  # accuracies are stored as fractions, shown in percent
        return f"{100 * x:.1f} %"
    return f"{x:.2f} {unit}".rstrip()


def _at_most(encoder: str, rule: str, target: str, measured: float | None, threshold: float, what: str,
             unit: str = "%", note: str = "") -> Check:
    if measured is None or math.isnan(measured):
        return Check(encoder, rule, target, False, None, threshold,
                     f"{what} was not measured{note or ''}; cannot show it is at most {_fmt(threshold, unit)}", unit)
    ok = measured <= threshold
    msg = f"{what} {_fmt(measured, unit)} {'<=' if ok else '>'} {_fmt(threshold, unit)}{note}"
    return Check(encoder, rule, target, ok, measured, threshold, msg, unit)


def _known_names(view: ResultsView, table: dict) -> tuple[list[str], list[str]]:
    corrs = list(dict.fromkeys([*table["alexnet_top1_error"], *view.corruptions(),
                                *((view.get("suite") or {}).get("corruptions") or {})]))
    fams = list(dict.fromkeys([*table["families"], *((view.get("suite") or {}).get("corruptions") or {}).values()]))
    return corrs, fams


def _check_policy_names(policy: Policy, view: ResultsView) -> list[str]:
    table = m.imagenet_c_table()
    corrs, fams = _known_names(view, table)
    for key, known, kind in (("max_drop_per_corruption", corrs, "corruption"), ("max_family_drop", fams, "family")):
        for name in getattr(policy, key):
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
                hint = f" Did you mean: {close[0]}?" if close else ""
                raise UsageError(f"{policy.source}: [{key}] names unknown {kind} {name!r}.{hint} "
                                 f"Known: {', '.join(known)}")
    if policy.encoders is None:
        return view.encoders
    for enc in policy.encoders:
        if enc not in view.encoders:
            close = difflib.get_close_matches(enc, view.encoders, n=1, cutoff=0.6)
            hint = f" Did you mean: {close[0]}?" if close else ""
            raise UsageError(f"{policy.source}: encoder {enc!r} is not in the results.{hint} "
                             f"Evaluated: {', '.join(view.encoders)}")
    return list(policy.encoders)


_PARAMS_RE = re.compile(r"(?:^|;)\s*params=([^;\s]+)")
# suites without a params= suffix whose table is known: imagenet-c written before the table was recorded (ImageNet's
# was the only one), and the released sets read by the prerendered suites
_IMPLIED_TABLE = {"imagenet-c": "imagenet", "imagenet-c-folder": "imagenet", "cifar10-c": "cifar10"}


def param_table(doc: dict) -> str | None:
    """The corruption parameter table a results document was computed with (``"imagenet"`` | ``"cifar10"``), read
    from the ``; params=...`` suffix of ``suite.backend_version``.  Without the suffix: ``"imagenet"`` for an
    ``imagenet-c`` document written before the table was recorded (ImageNet's was the only one) and for the
    released ImageNet-C (``imagenet-c-folder``), ``"cifar10"`` for the released CIFAR-10-C (``cifar10-c``), None for
    other (plugin) suites."""
    suite = doc.get("suite") or {}
    found = _PARAMS_RE.search(str(suite.get("backend_version") or ""))
    if found:
        return found.group(1)
    return _IMPLIED_TABLE.get(str(suite.get("name")))


def _suite_mismatch(view: dict, base: dict) -> str | None:
    """A one-line reason why results and baseline corruptions are not the same thing, or None.  Suite name and
    parameter table must match (the backend is compared by the callers: a warning for per-cell regression, an
    error for mCE)."""
    s, b = view.get("suite") or {}, base.get("suite") or {}
    if s.get("name") and b.get("name") and s["name"] != b["name"]:
        return (f"results used corruption suite {s['name']!r} but the baseline used {b['name']!r}: cells of "
                f"different suites are different images; rerun with --suite {b['name']} or regenerate the baseline "
                f"with --suite {s['name']}")
    t, bt = param_table(view), param_table(base)
    if t and bt and t != bt:
        return (f"results used the {t!r} corruption parameter table (suite.backend_version params={t}) but the "
                f"baseline used {bt!r} (params={bt}): severities of different tables are different corruption "
                f"strengths; rerun with -S params {bt} or regenerate the baseline with -S params {t}")
    return None


def _fingerprint_guard(view: ResultsView, base: ResultsView, warnings: list[str]) -> None:
    d, b = view.get("dataset") or {}, base.get("dataset") or {}
    fp, bfp = d.get("fingerprint"), b.get("fingerprint")
    if fp and bfp and fp != bfp:
        raise UsageError(f"the baseline was evaluated on a different dataset ({b.get('name')!r} fingerprint "
                         f"{str(bfp)[:12]} vs {d.get('name')!r} fingerprint {str(fp)[:12]}): comparisons across "
                         f"datasets are meaningless; regenerate the baseline on the same dataset")
    if not (fp and bfp):
        warnings.append("a dataset fingerprint is missing: cannot confirm that results and baseline share a dataset")
    reason = _suite_mismatch(view, base)
    if reason:
        raise UsageError(reason)
    x, y = (view.get("suite") or {}).get("backend"), (base.get("suite") or {}).get("backend")
    if x and y and x != y:
        warnings.append(f"results and baseline differ in suite backend ({x!r} vs {y!r}): same corruptions, different "
                        f"random draws, so per-cell regressions compare only within their intervals and max_mce "
                        f"cannot use this baseline; rerun with --backend {y} for a like-for-like comparison")
    x, y = (view.get("probe") or {}).get("name"), (base.get("probe") or {}).get("name")
    if x and y and x != y:
        warnings.append(f"results and baseline differ in probe name ({x!r} vs {y!r}): numbers may not compare")


def mce_mixing(view: dict, base: dict | None = None) -> str | None:
    """Why an mCE of ``view`` against ``base`` (None: AlexNet) would mix backends or parameter tables, or None.

    CE_c divides this run's errors by the normalizer's, with no interval to absorb a systematic difference, so
    numerator and denominator must come from the same suite, backend and table.  AlexNet's published errors are
    ImageNet-C's: they normalise only the ``imagenet`` table."""
    t = param_table(view)
    if base is None:
        if t is not None and t != "imagenet":
            return (f"AlexNet's published errors are ImageNet-C's (params=imagenet) but these results used the {t!r} "
                    f"table (params={t}): mCE would mix tables; pass --baseline with a previous release evaluated "
                    f"with the same table")
        return None
    s, b = view.get("suite") or {}, base.get("suite") or {}
    reason = _suite_mismatch(view, base)
    if reason:
        return f"mCE against the baseline would mix corruptions: {reason}"
    if s.get("backend") and b.get("backend") and s["backend"] != b["backend"]:
        return (f"mCE against the baseline would mix backends: results used backend {s['backend']!r}, the baseline "
                f"{b['backend']!r}; rerun with --backend {b['backend']} or regenerate the baseline with "
                f"--backend {s['backend']}")
    return None


def _mce_checks(view: ResultsView, enc: str, policy: Policy, base: ResultsView | None,
                warnings: list[str]) -> Check:
    suite = (view.get("suite") or {}).get("name")
    errs, clean = view.errors(enc)
    if suite != "imagenet-c":
        raise UsageError(f"{policy.source}: max_mce needs the imagenet-c suite, but the results used suite "
                         f"{suite!r}; remove max_mce from the policy")
    missing = m.missing_for_mce(errs)
    if missing:
        raise UsageError(f"{policy.source}: max_mce needs all 15 common ImageNet-C corruptions at severities 1-5, "
                         f"but encoder {enc!r} lacks {_short(missing)}; run the full default suite "
                         f"(`jerc-eval run` without -c/-s) or remove max_mce")
    mixing = mce_mixing(view, base)
    if mixing:
        raise UsageError(f"{policy.source}: max_mce: {mixing}")
    if base is None:
        value, rel = m.mce(errs), (m.relative_mce(errs, clean) if clean is not None else None)
        target, versus = "vs AlexNet", "AlexNet"
        ds = (view.get("dataset") or {}).get("name", "?")
        if "imagenet" not in str(ds).lower():
            note = f" AlexNet-normalized mCE is only meaningful on ImageNet-C; dataset {ds!r} is not"
            if note not in warnings:
                warnings.append(note.strip())
    else:
        if enc not in base.encoders:
            raise UsageError(f"{policy.source}: max_mce against the baseline needs encoder {enc!r} in the baseline "
                             f"(it has {', '.join(base.encoders)}); gate shared encoders with the key `encoders`")
        b_errs, b_clean = base.errors(enc)
        b_missing = m.missing_for_mce(b_errs)
        if b_missing:
            raise UsageError(f"{policy.source}: max_mce against the baseline needs the baseline's encoder {enc!r} "
                             f"at all 15 common corruptions x 5 severities; it lacks {_short(b_missing)}")
        value = m.mce(errs, b_errs)
        rel = m.relative_mce(errs, clean, b_errs, b_clean) if clean is not None and b_clean is not None else None
        target, versus = "vs baseline", "baseline"
    extra = f" (relative mCE {_fmt(rel, '%')}, unnormalized mCE i.e. mean error {_fmt(m.unnormalized_mce(errs), '%')})"
    return _at_most(enc, "max_mce", target, value, policy.max_mce, f"mCE vs {versus}", "%", extra)


def _short(items: list[str], n: int = 8) -> str:
    return ", ".join(items[:n]) + (f" (+{len(items) - n} more)" if len(items) > n else "")


def _regression_checks(view: ResultsView, enc: str, base: ResultsView, threshold: float,
                       warnings: list[str]) -> list[Check]:
    if enc not in base.encoders:
        raise UsageError(f"the baseline has no encoder {enc!r} (it has {', '.join(base.encoders)}); gate only "
                         f"shared encoders with the policy key `encoders`")
    mine = {(c, s): r for (e, c, s), r in view._cells.items() if e == enc}
    theirs = {(c, s): r for (e, c, s), r in base._cells.items() if e == enc}
    shared = [k for k in mine if k in theirs]
    if not shared:
        raise UsageError(f"results and baseline share no (corruption, severity) cell for encoder {enc!r}")
    only_base = [f"{c}@{s}" if c != "clean" else "clean" for (c, s) in theirs if (c, s) not in mine]
    if only_base:
        warnings.append(f"{enc}: the baseline has cells these results lack, not compared: {_short(only_base)}")
    checks = []
    for c, s in sorted(shared, key=lambda k: (k[0] != "clean", k[0], k[1])):
        a, b = mine[(c, s)], theirs[(c, s)]
        loss, margin, excess = m.regression_beyond_ci(a["accuracy"], a["ci95"], b["accuracy"], b["ci95"])
        target = "clean" if c == "clean" else f"{c}@{s}"
        ok = excess <= threshold
        msg = (f"accuracy {100 * a['accuracy']:.1f} % vs baseline {100 * b['accuracy']:.1f} % "
               f"({-loss:+.2f} pts; combined 95 % CI ±{margin:.2f} pts; {excess:.2f} pts beyond it "
               f"{'<=' if ok else '>'} {threshold:g} allowed)")
        checks.append(Check(enc, "max_regression", target, ok, excess, threshold, msg, "pts"))
    return checks


def evaluate_gate(results: dict, policy: Policy, baseline: dict | None = None) -> GateReport:
    """Apply ``policy`` to a results document (and a baseline document for max_regression / max_mce).

    Raises UsageError for a policy that cannot apply (unknown encoder/corruption/family names, max_mce without
    the complete ImageNet-C suite, max_regression without a baseline, a baseline on another dataset, suite or
    corruption parameter table, max_mce that would mix backends or tables).
    """
    view = results if isinstance(results, ResultsView) else ResultsView(results, "results")
    base = None
    if baseline is not None:
        base = baseline if isinstance(baseline, ResultsView) else ResultsView(baseline, "baseline")
    if not policy.rules():
        raise UsageError(f"{policy.source} has no rules; set at least one of {', '.join(POLICY_KEYS[:-1])}")
    if policy.max_regression is not None and base is None:
        raise UsageError(f"{policy.source}: max_regression needs a baseline results document (--baseline)")
    warnings: list[str] = []
    if base is not None:
        _fingerprint_guard(view, base, warnings)
        if policy.max_regression is None and policy.max_mce is None:
            warnings.append("a baseline was given but no rule uses it (max_regression, max_mce)")
    encoders = _check_policy_names(policy, view)
    checks: list[Check] = []
    for enc in encoders:
        s = view.summary(enc)
        if policy.min_clean_accuracy is not None:
            acc = s.get("clean_accuracy")
            ok = acc is not None and acc >= policy.min_clean_accuracy
            lo, hi = s.get("clean_ci95") or (None, None)
            ci = f" (95 % CI {100 * lo:.1f}-{100 * hi:.1f})" if lo is not None else ""
            limit = policy.min_clean_accuracy
            msg = (f"clean accuracy {_fmt(acc, 'fraction')}{ci} {'>=' if ok else '<'} {_fmt(limit, 'fraction')}"
                   if acc is not None else "clean accuracy was not measured")
            checks.append(Check(enc, "min_clean_accuracy", "clean", ok, acc, limit, msg, "fraction"))
        if policy.max_drop is not None:
            checks.append(_at_most(enc, "max_drop", "mean", s.get("mean_drop"), policy.max_drop,
                                   "mean paper Drop over corruptions", "%",
                                   "" if s.get("mean_drop") is not None else " (needs severities 1 and 5)"))
        per = s.get("corruptions") or {}
        for corr, limit in policy.max_drop_per_corruption.items():
            d = per.get(corr)
            note = ""
            if d is None:
                note = " (corruption not evaluated in this run)"
            elif d.get("drop") is None:
                note = " (needs severities 1 and 5)"
            elif d.get("near_chance"):
                note = " (S1 too close to chance: this Drop is noise)"
            checks.append(_at_most(enc, "max_drop_per_corruption", corr, None if d is None else d.get("drop"),
                                   limit, f"{corr} Drop", "%", note))
        fams = s.get("family_drop") or {}
        for fam, limit in policy.max_family_drop.items():
            checks.append(_at_most(enc, "max_family_drop", fam, fams.get(fam), limit, f"{fam} family mean Drop", "%",
                                   "" if fam in fams else " (no corruption of this family with severities 1 and 5)"))
        if policy.max_mce is not None:
            checks.append(_mce_checks(view, enc, policy, base, warnings))
        if policy.max_regression is not None and base is not None:
            checks.extend(_regression_checks(view, enc, base, policy.max_regression, warnings))
    return GateReport(checks, policy, view.path, None if base is None else base.path, warnings)


# ------------------------------------------------------------------------------------------ renderers
_BAD_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _x(text: Any) -> str:
    return _BAD_XML.sub("?", str(text))


def to_junit_xml(report: GateReport, suite_name: str = "jerc-eval gate") -> str:
    """JUnit XML: one ``<testsuite>`` (inside ``<testsuites>``), one ``<testcase>`` per check, a ``<failure>``
    with the message for each failing check."""
    n, nf = len(report.checks), len(report.failures)
    root = ET.Element("testsuites", name=_x(suite_name), tests=str(n), failures=str(nf), errors="0", time="0")
    suite = ET.SubElement(root, "testsuite", name=_x(suite_name), tests=str(n), failures=str(nf), errors="0",
                          skipped="0", time="0")
    props = ET.SubElement(suite, "properties")
    for key, value in (("results", report.results_source), ("baseline", report.baseline_source),
                       ("policy", json.dumps(report.policy.to_dict(), sort_keys=True))):
        if value:
            ET.SubElement(props, "property", name=key, value=_x(value))
    for c in report.checks:
        case = ET.SubElement(suite, "testcase", classname=_x(f"jerc_eval.gate.{c.encoder}"), name=_x(c.name),
                             time="0")
        if c.passed:
            ET.SubElement(case, "system-out").text = _x(c.message)
        else:
            fail = ET.SubElement(case, "failure", message=_x(c.message), type="GateFailure")
            fail.text = _x(f"encoder {c.encoder}, rule {c.rule}, target {c.target}: {c.message}")
    if report.warnings:
        ET.SubElement(suite, "system-err").text = _x("\n".join(report.warnings))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _display_rows(report: GateReport) -> list[tuple[str, str, str, str, str, str, str]]:
    """Every failing check; passing checks too, except that passing max_regression cells collapse to one line
    per encoder (their worst cell)."""
    rows = []
    collapsed: dict[str, list[Check]] = {}
    for c in report.checks:
        if c.rule == "max_regression" and c.passed:
            collapsed.setdefault(c.encoder, []).append(c)
            continue
        rows.append(("PASS" if c.passed else "FAIL", c.encoder, c.rule, c.target, _fmt(c.measured, c.unit),
                     _fmt(c.threshold, c.unit), c.message))
    for enc, cs in collapsed.items():
        worst = max(cs, key=lambda c: c.measured or 0.0)
        rows.append(("PASS", enc, "max_regression", f"{len(cs)} cells", _fmt(worst.measured, "pts"),
                     _fmt(worst.threshold, "pts"), f"worst {worst.target}: {worst.message}"))
    return rows


def to_text(report: GateReport) -> str:
    """The console table."""
    rows = _display_rows(report)
    head = ("status", "encoder", "rule", "target", "measured", "threshold")
    widths = [max(len(head[i]), *(len(r[i]) for r in rows)) if rows else len(head[i]) for i in range(6)]
    line = lambda cells: "  ".join(str(v).ljust(w) for v, w in zip(cells, widths)).rstrip()  # noqa: E731
    out = [line(head), line(["-" * w for w in widths])] + [line(r[:6]) for r in rows]
    fails = report.failures
    if fails:
        out += ["", "failed checks:"] + [f"  {c.encoder} {c.name}: {c.message}" for c in fails]
    out += [f"warning: {w}" for w in report.warnings]
    out.append(f"gate {'passed' if report.passed else 'FAILED'}: {len(report.checks) - len(fails)} of "
               f"{len(report.checks)} checks passed")
    return "\n".join(out)


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(report: GateReport) -> str:
    """A markdown summary for CI job pages (e.g. ``cat gate.md >> $GITHUB_STEP_SUMMARY``)."""
    n, fails = len(report.checks), report.failures
    verdict = "✅ passed" if report.passed else "❌ failed"
    out = [f"## jerc-eval release gate: {verdict}", "",
           f"{n - len(fails)} of {n} checks passed"
           + (f" · results `{report.results_source}`" if report.results_source else "")
           + (f" · baseline `{report.baseline_source}`" if report.baseline_source else ""), ""]
    if fails:
        out += ["### Failed checks", "", "| encoder | rule | target | measured | threshold | message |",
                "|---|---|---|---:|---:|---|"]
        out += [f"| {_md(c.encoder)} | {c.rule} | {_md(c.target)} | {_fmt(c.measured, c.unit)} | "
                f"{_fmt(c.threshold, c.unit)} | {_md(c.message)} |" for c in fails]
        out.append("")
    out += ["### All checks", "", "| status | encoder | rule | target | measured | threshold |",
            "|---|---|---|---|---:|---:|"]
    out += [f"| {'✅' if r[0] == 'PASS' else '❌'} | {_md(r[1])} | {r[2]} | {_md(r[3])} | {r[4]} | {r[5]} |"
            for r in _display_rows(report)]
    if report.warnings:
        out += ["", "### Warnings", ""] + [f"- {_md(w)}" for w in report.warnings]
    out += ["", "<details><summary>policy</summary>", "", "```json",
            json.dumps(report.policy.to_dict(), indent=2, sort_keys=True), "```", "", "</details>", ""]
    return "\n".join(out)


# ------------------------------------------------------------------------------------------ CLI entry
def gate_main(results_path: str | os.PathLike, baseline_path: str | os.PathLike | None = None,
              policy_path: str | os.PathLike | None = None, junit_path: str | os.PathLike | None = None,
              summary_path: str | os.PathLike | None = None, overrides: dict[str, Any] | None = None,
              out: TextIO | None = None, as_json: bool = False) -> int:
    """``jerc-eval gate``: 0 when every check passes, 1 when the gate fails.

    Usage problems (missing/invalid files, bad policy keys, a policy that cannot apply) raise
    :class:`jerc_eval.errors.UsageError` (exit code 2 through the CLI); anything else is an internal error (3).
    ``overrides`` are policy keys that win over the policy file. Without a policy, a baseline alone gates with
    ``max_regression = 0`` (no regression beyond the 95 % intervals). Prints a table to ``out`` (stdout) and
    writes the JUnit XML and markdown summary atomically (also when the gate fails).
    """
    out = out or sys.stdout
    results = ResultsView.load(results_path)
    baseline = ResultsView(load_results(baseline_path, "baseline"), str(baseline_path)) if baseline_path else None
    policy = load_policy(policy_path) if policy_path else None
    if overrides:
        policy = policy_from_mapping(dict(overrides), base=policy, source=policy.source if policy else "overrides")
    if policy is None:
        if baseline is None:
            raise UsageError("nothing to gate: pass --policy FILE (see docs/gate.md) or --baseline FILE")
        policy = Policy(max_regression=0.0, source="default policy (max_regression = 0)")
    report = evaluate_gate(results, policy, baseline)
    files: dict[Path, str] = {}
    if junit_path:
        files[Path(junit_path)] = to_junit_xml(report)
    if summary_path:
        files[Path(summary_path)] = to_markdown(report)
    if files:
        write_files_atomically(files)
    print(json.dumps(to_json(report), indent=2) if as_json else to_text(report), file=out)
    _github(report, out)
    return report.exit_code


GATE_SCHEMA = "jerc-eval/gate"
GATE_SCHEMA_VERSION = 1


def to_json(report: GateReport) -> dict[str, Any]:
    """The machine-readable verdict (``gate --json``, docs/gate.md): schema, verdict, exit code, the results and
    baseline files, the policy, warnings and every check with its numbers."""
    return {"schema": GATE_SCHEMA, "schema_version": GATE_SCHEMA_VERSION,
            "verdict": "pass" if report.passed else "fail", "exit_code": report.exit_code,
            "n_checks": len(report.checks), "n_failed": len(report.failures), **report.to_dict()}


def _github(report: GateReport, out: TextIO) -> None:
    """On GitHub Actions: the Markdown summary appended to ``$GITHUB_STEP_SUMMARY`` and one ``::error``
    annotation per failing check (``GITHUB_ACTIONS=true``); nothing elsewhere."""
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        try:
            with open(summary, "a", encoding="utf-8") as fh:
                fh.write(to_markdown(report) + "\n")
        except OSError as exc:
            print(f"warning: could not append to GITHUB_STEP_SUMMARY {summary!r} ({exc.strerror or exc})",
                  file=sys.stderr)
    if os.environ.get("GITHUB_ACTIONS") == "true":
        for c in report.failures:
            text = c.message.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
            print(f"::error title=jerc-eval gate: {c.encoder} {c.name}::{text}", file=out)
