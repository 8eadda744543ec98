"""Every on-disk cache of jerc-eval: what its keys hash, and how its entries are written and verified.

Kinds (one folder each under the cache root): ``features`` (fp16 feature arrays of an encoder on one split and
corruption cell, and of random-init floors), ``probes`` (fitted probes), ``alignment`` (the alignment evidence)
and ``datasets`` (rendered datasets such as PhotoDigits).

**Keys.** :func:`key` hashes a kind and the parts that can change the entry's bytes, always together with
:func:`byte_versions` (jerc-eval, torch, torchvision, numpy) and :data:`ENTRY_FORMAT`. An extension enters a key
through :func:`identity`: its registry name, class, ``version``, the sha256 of the source file that defines it
(a ``--plugin`` file's content, a plugin module edited without a version bump) and *every* validated option,
canonicalised (:func:`canonical`: dicts sorted, JSON strings parsed, files by content, folders by the names,
sizes and modification times of their files). An option declared ``Option(..., affects_result=False)`` (a
download switch, say) is left out. Third-party extensions get all of this without writing any key code.

**Entries.** One file per entry: a magic line, one JSON header line (kind, key, sha256 and size of the payload,
dtype and shape of an array) and the payload. A read checks all of it; an entry that fails is removed, counted
in :attr:`Cache.recomputed`, and reported once by the run, which recomputes it. Writes go to a ``*.tmp`` file
beside the entry and are renamed into place; ``*.tmp`` files left by a killed run are swept when the next run
starts (:meth:`Cache.sweep`). ``jerc-eval cache info|verify|clear`` works on the same files.
"""
from __future__ import annotations

import hashlib
import inspect
import io
import json
import math
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

MAGIC = b"JERC-EVAL-CACHE\n"
ENTRY_FORMAT = 2  # bump when the meaning of an entry changes in a way no key part captures
KINDS = ("features", "probes", "alignment", "datasets")
SUFFIX = ".entry"
TMP_GRACE_S = 60.0  # a *.tmp touched this recently may belong to a run in progress: it is left alone


class DamagedEntry(Exception):
    """A cache entry that failed verification (the message says how)."""


# =========================================================================================== keys
def byte_versions() -> dict[str, str]:
    """The versions of the packages whose code computes the cached bytes."""
    import torch
    import torchvision

    from . import __version__

    return {"jerc_eval": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "numpy": np.__version__}


_FILE_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes, memoised per (path, size, mtime) within the process."""
    path = Path(path).resolve()
    st = path.stat()
    memo = (str(path), st.st_size, st.st_mtime_ns)
    if memo not in _FILE_DIGESTS:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        _FILE_DIGESTS[memo] = h.hexdigest()
    return _FILE_DIGESTS[memo]


FOLDER_DEPTH = 4


def folder_digest(path: Path) -> str:
    """A folder by the relative names, sizes and modification times of its files and folders down to
    ``FOLDER_DEPTH`` levels (enough for ImageNet-C's ``corruption/severity/class/image``), not by content: such a
    root holds tens of gigabytes; ``__pycache__`` and hidden folders are skipped. Adding, removing, replacing or
    rewriting a file changes it."""
    path = Path(path).resolve()
    h = hashlib.sha256()
    for top, dirs, files in os.walk(path):
        rel = Path(top).relative_to(path)
        dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))  # written by imports
        if len(rel.parts) >= FOLDER_DEPTH - 1:
            dirs[:] = []
        for name in sorted(files) + [f"{d}/" for d in dirs]:
            try:
                st = os.stat(os.path.join(top, name.rstrip("/")))
            except OSError:
                continue
            size = 0 if name.endswith("/") else st.st_size
            h.update(f"{(rel / name).as_posix()}\0{size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def canonical(value: Any) -> Any:
    """A JSON-ready form of ``value`` that is equal exactly when the values mean the same thing.

    Dicts are key-sorted (by JSON), tuples become lists, strings holding a JSON object or array are parsed
    (``'{"a": 1}'`` and ``'{ "a":1 }'`` give one key, ``'{"a": 2}'`` another), paths become the content digest
    of the file (or the listing digest of the folder) they name, floats keep every bit (``repr``; NaN and
    infinities by name), numpy scalars and arrays their values.
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        f = float(value)
        return {"float": repr(f)} if not math.isfinite(f) else f
    if isinstance(value, str):
        text = value.strip()
        if text[:1] in ("{", "["):
            try:
                return {"json": canonical(json.loads(text))}
            except ValueError:
                pass
        return value
    if isinstance(value, Path):
        if value.is_file():
            return {"file_sha256": file_digest(value)}
        if value.is_dir():
            return {"folder": folder_digest(value)}
        return {"missing_path": str(value)}
    if isinstance(value, dict):
        items = [(json.dumps(canonical(k), sort_keys=True), canonical(v)) for k, v in value.items()]
        return {"dict": sorted(items)}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    if isinstance(value, np.ndarray):
        return {"array": canonical(value.tolist()), "dtype": value.dtype.str}
    if hasattr(value, "__dict__") and not callable(value):  # a dataclass such as Preprocess
        return {"object": type(value).__qualname__, "fields": canonical(vars(value))}
    return {"repr": repr(value)}


def source_digest(obj: Any) -> str | None:
    """sha256 of the source file of a class or module (None when it has none, e.g. a class made in a REPL)."""
    try:
        path = inspect.getsourcefile(obj) or inspect.getfile(obj)
    except (TypeError, OSError):
        return None
    return file_digest(Path(path)) if path and Path(path).is_file() else None


def result_options(ext: Any) -> dict[str, Any]:
    """The options of an extension that can change what it computes (all but ``affects_result=False``)."""
    declared = getattr(type(ext), "options", {})
    return {k: v for k, v in getattr(ext, "opts", {}).items()
            if getattr(declared.get(k), "affects_result", True)}


def identity(ext: Any) -> dict[str, Any]:
    """What identifies an extension's computation: name, class, version, source file and options."""
    cls = type(ext)
    return {"name": getattr(ext, "name", cls.__name__), "class": f"{cls.__module__}.{cls.__qualname__}",
            "version": str(getattr(cls, "version", "")), "source_sha256": source_digest(cls),
            "options": canonical(result_options(ext)),
            "extra": canonical(ext.cache_parts()) if hasattr(ext, "cache_parts") else None}


def key(kind: str, **parts: Any) -> str:
    """The cache key of an entry of ``kind``: a hash of ``parts`` (canonicalised) and :func:`byte_versions`."""
    if kind not in KINDS:
        raise ValueError(f"unknown cache kind {kind!r}")
    doc = {"kind": kind, "format": ENTRY_FORMAT, "versions": byte_versions(), "parts": canonical(parts)}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:40]


def encoder_identity(adapter: Any, encoder: Any) -> dict[str, Any]:
    """An encoder's features depend on the adapter (with its options and checkpoint content) and on what it
    loaded: weights, read-out protocol, preprocessing and architecture (inferred details included)."""
    return {"adapter": identity(adapter), "weights_sha256": encoder.weights_sha256,
            "protocol": encoder.feature_protocol, "preprocess": canonical(encoder.preprocess),
            "arch": encoder.arch, "guessed": canonical(encoder.meta.get("guessed", {}))}


def suite_identity(suite: Any) -> dict[str, Any]:
    """A corruption suite: the extension, its backend and the backend's version (which names its parameter
    table); the run seed enters the feature key separately."""
    return {"suite": identity(suite), "backend": suite.backend,
            "backend_version": str(getattr(suite, "backend_version", ""))}


def fingerprint(parts: dict[str, Any]) -> str:
    """A short stable digest of canonical ``parts`` (recorded in results; not a cache key by itself)."""
    return hashlib.sha256(json.dumps(canonical(parts), sort_keys=True).encode()).hexdigest()[:32]


# ========================================================================================= entries
def _header_bytes(header: dict[str, Any]) -> bytes:
    return json.dumps(header, sort_keys=True).encode() + b"\n"


def encode_entry(kind: str, key_: str, payload: bytes, **meta: Any) -> bytes:
    from . import __version__

    header = {"kind": kind, "key": key_, "sha256": hashlib.sha256(payload).hexdigest(), "size": len(payload),
              "jerc_eval": __version__, "created": time.time(), **meta}
    return MAGIC + _header_bytes(header) + payload


def decode_entry(blob: bytes, kind: str | None = None, key_: str | None = None) -> tuple[dict, bytes]:
    """(header, payload) of an entry's bytes; raises :class:`DamagedEntry` unless every check passes."""
    if not blob.startswith(MAGIC):
        raise DamagedEntry("not a jerc-eval cache entry" if blob else "empty file")
    end = blob.find(b"\n", len(MAGIC))
    if end < 0:
        raise DamagedEntry("truncated header")
    try:
        header = json.loads(blob[len(MAGIC):end])
    except ValueError:
        raise DamagedEntry("unreadable header") from None
    if not isinstance(header, dict):
        raise DamagedEntry("unreadable header")
    payload = blob[end + 1:]
    if kind is not None and header.get("kind") != kind:
        raise DamagedEntry(f"kind {header.get('kind')!r}, expected {kind!r}")
    if key_ is not None and header.get("key") != key_:
        raise DamagedEntry("written for another key")
    if header.get("size") != len(payload):
        raise DamagedEntry(f"{len(payload)} payload bytes, header says {header.get('size')}")
    if header.get("sha256") != hashlib.sha256(payload).hexdigest():
        raise DamagedEntry("checksum mismatch")
    return header, payload


def array_payload(arr: np.ndarray) -> tuple[bytes, dict[str, Any]]:
    arr = np.ascontiguousarray(arr)
    return arr.tobytes(), {"dtype": arr.dtype.str, "shape": list(arr.shape)}


def array_from(header: dict, payload: bytes) -> np.ndarray:
    try:
        dtype, shape = np.dtype(header["dtype"]), tuple(int(s) for s in header["shape"])
    except (KeyError, TypeError, ValueError):
        raise DamagedEntry("no dtype/shape in the header") from None
    if math.prod(shape) * dtype.itemsize != len(payload):
        raise DamagedEntry(f"{len(payload)} bytes do not hold a {dtype} array of shape {shape}")
    return np.frombuffer(payload, dtype=dtype).reshape(shape).copy()


def _write_all(fh: Any, blob: bytes) -> None:
    fh.write(blob)


def write_atomically(path: Path, blob: bytes) -> None:
    """``blob`` to ``path`` through a ``*.tmp`` beside it and a rename; the temp file goes on any failure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            _write_all(fh, blob)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


class Cache:
    """The cache root of a run: typed get/put per kind, every read verified, damaged entries recomputed."""

    def __init__(self, root: Path | None, enabled: bool = True):
        self.root = Path(root) if root is not None else None
        self.enabled = enabled and root is not None
        self.hits: dict[str, int] = {k: 0 for k in KINDS}
        self.misses: dict[str, int] = {k: 0 for k in KINDS}
        self.recomputed: list[tuple[str, str, str]] = []  # (kind, key, why)
        self.write_errors: list[str] = []

    # ----------------------------------------------------------------------------------- paths
    def path(self, kind: str, key_: str) -> Path:
        assert self.root is not None
        return self.root / kind / key_[:2] / f"{key_}{SUFFIX}"

    def has(self, kind: str, key_: str) -> bool:
        return self.enabled and self.path(kind, key_).is_file()

    # ------------------------------------------------------------------------------ read/write
    def _read(self, kind: str, key_: str) -> tuple[dict, bytes] | None:
        if not self.enabled:
            self.misses[kind] += 1
            return None
        path = self.path(kind, key_)
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            self.misses[kind] += 1
            return None
        except OSError as exc:
            return self._damaged(kind, key_, f"unreadable ({exc.strerror or exc})")
        try:
            return decode_entry(blob, kind, key_)
        except DamagedEntry as exc:
            return self._damaged(kind, key_, str(exc))

    def _damaged(self, kind: str, key_: str, why: str) -> None:
        self.misses[kind] += 1
        self.recomputed.append((kind, key_, why))
        try:
            self.path(kind, key_).unlink()
        except OSError:
            pass
        return None

    def _write(self, kind: str, key_: str, payload: bytes, **meta: Any) -> bool:
        if not self.enabled:
            return False
        try:
            write_atomically(self.path(kind, key_), encode_entry(kind, key_, payload, **meta))
        except OSError as exc:
            from .checks import no_space_message
            from .errors import UsageError

            full = no_space_message(exc, self.root)
            if full:  # the results would not fit either: one line, exit 2, the temp file already gone
                raise UsageError(full) from None
            self.write_errors.append(f"{self.root}: {exc.strerror or exc}")  # read-only: it costs time only
            return False
        return True

    def get_array(self, kind: str, key_: str, rows: int | None = None) -> np.ndarray | None:
        """The array under ``key_``; with ``rows``, only a 2-D array of that many rows counts (features of a
        split must have one row per image: anything else is damaged, removed and recomputed)."""
        got = self._read(kind, key_)
        if got is None:
            return None
        try:
            arr = array_from(*got)
            if rows is not None and (arr.ndim != 2 or len(arr) != rows):
                raise DamagedEntry(f"{arr.shape} array where {rows} rows were expected")
        except DamagedEntry as exc:
            return self._damaged(kind, key_, str(exc))
        self.hits[kind] += 1
        return arr

    def put_array(self, kind: str, key_: str, arr: np.ndarray) -> bool:
        payload, meta = array_payload(arr)
        return self._write(kind, key_, payload, **meta)

    def get_json(self, kind: str, key_: str) -> Any:
        got = self._read(kind, key_)
        if got is None:
            return None
        try:
            doc = json.loads(got[1])
        except ValueError:
            return self._damaged(kind, key_, "unreadable JSON")
        self.hits[kind] += 1
        return doc

    def put_json(self, kind: str, key_: str, doc: Any) -> bool:
        return self._write(kind, key_, json.dumps(doc).encode(), encoding="json")

    def get_arrays(self, kind: str, key_: str, names: tuple[str, ...]) -> dict[str, np.ndarray] | None:
        """Several named arrays stored together (an ``.npz`` payload), all of ``names`` present."""
        got = self._read(kind, key_)
        if got is None:
            return None
        try:
            with np.load(io.BytesIO(got[1]), allow_pickle=False) as z:
                arrays = {n: z[n] for n in names}
        except (OSError, ValueError, KeyError, EOFError):
            return self._damaged(kind, key_, "unreadable arrays")
        self.hits[kind] += 1
        return arrays

    def put_arrays(self, kind: str, key_: str, arrays: dict[str, np.ndarray]) -> bool:
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return self._write(kind, key_, buf.getvalue(), encoding="npz")

    def discard(self, kind: str, key_: str, why: str) -> None:
        """An entry that verified but cannot be used (a layout this version cannot read): remove, recompute."""
        self.hits[kind] -= 1
        self._damaged(kind, key_, why)

    # ------------------------------------------------------------------------------ housekeeping
    def sweep(self, before: float | None = None) -> int:
        """Remove ``*.tmp`` files last touched before ``before`` (default: now) minus a grace period, which
        a killed write leaves behind; returns how many went."""
        if not self.enabled or not self.root.is_dir():
            return 0
        limit = (time.time() if before is None else before) - TMP_GRACE_S
        gone = 0
        for tmp in self.root.rglob("*.tmp"):
            try:
                if tmp.is_file() and tmp.stat().st_mtime < limit:
                    tmp.unlink()
                    gone += 1
            except OSError:
                continue
        return gone

    def recomputed_line(self) -> str | None:
        """One line naming the damaged entries this run recomputed, or None."""
        if not self.recomputed:
            return None
        by_kind: dict[str, list[str]] = {}
        for kind, key_, why in self.recomputed:
            by_kind.setdefault(kind, []).append(f"{key_[:10]} ({why})")
        parts = [f"{kind} x{len(v)}: {', '.join(v[:3])}{' ...' if len(v) > 3 else ''}" for kind, v in by_kind.items()]
        return (f"jerc-eval: recomputed {len(self.recomputed)} damaged cache "
                f"entr{'y' if len(self.recomputed) == 1 else 'ies'} under {self.root}: {'; '.join(parts)}")


# ---------------------------------------------------------------------- the cache of the running call
_ACTIVE: list[Cache] = []


def default_root() -> Path:
    env = os.environ.get("JERC_EVAL_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "jerc-eval"


def active() -> Cache:
    """The cache of the run in progress (datasets render into it), else the default cache."""
    return _ACTIVE[-1] if _ACTIVE else Cache(default_root())


@contextmanager
def activated(cache: Cache) -> Iterator[Cache]:
    _ACTIVE.append(cache)
    try:
        yield cache
    finally:
        _ACTIVE.remove(cache)


# ================================================================================ cache command
def scan(root: Path) -> dict[str, Any]:
    """Entries, bytes, stray temp files and files of other layouts (an older jerc-eval) per kind."""
    out: dict[str, Any] = {"root": str(root), "kinds": {}, "tmp_files": 0, "other_files": 0, "other_bytes": 0}
    if not root.is_dir():
        return out
    for p in root.rglob("*"):
        if not p.is_file():
            continue
        size = p.stat().st_size
        kind = p.relative_to(root).parts[0]
        if p.name.endswith(".tmp"):
            out["tmp_files"] += 1
        elif p.suffix == SUFFIX and kind in KINDS:
            k = out["kinds"].setdefault(kind, {"entries": 0, "bytes": 0})
            k["entries"] += 1
            k["bytes"] += size
        else:
            out["other_files"] += 1
            out["other_bytes"] += size
    return out


def verify(root: Path, remove: bool = True) -> dict[str, Any]:
    """Read and check every entry under ``root``; failing entries (and stray temp files) are removed."""
    report: dict[str, Any] = {"root": str(root), "checked": 0, "ok": 0, "failed": [], "removed_tmp": 0}
    if not root.is_dir():
        return report
    for kind in KINDS:
        for p in sorted((root / kind).rglob(f"*{SUFFIX}")):
            report["checked"] += 1
            try:
                header, payload = decode_entry(p.read_bytes(), kind, p.name[:-len(SUFFIX)])
                if "shape" in header:
                    array_from(header, payload)
                report["ok"] += 1
            except (DamagedEntry, OSError) as exc:
                report["failed"].append({"kind": kind, "file": str(p), "why": str(exc)})
                if remove:
                    p.unlink(missing_ok=True)
    if remove:
        report["removed_tmp"] = Cache(root).sweep(before=time.time())
    return report


def clear(root: Path, kind: str | None = None) -> int:
    """Remove every file under ``root`` (or under one kind's folder); returns how many."""
    import shutil

    base = root / kind if kind else root
    if not base.exists():
        return 0
    n = sum(1 for p in base.rglob("*") if p.is_file())
    if kind:
        shutil.rmtree(base)
    else:
        for child in root.iterdir():
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    return n
