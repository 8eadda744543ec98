"""The cache gives no silent wrong numbers: every option is in the key, every entry is verified before use, and a
damaged entry of any kind is recomputed with the same final rows."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

import jerc_eval
from jerc_eval import cache as cache_mod
from jerc_eval.api import Option
from jerc_eval.cli import main
from jerc_eval.plugins import create_host

ROOT = Path(__file__).resolve().parent.parent
PLUGIN_FILES = [str(ROOT / "plugins" / "jerc-eval-timm" / "jerc_eval_timm.py"),
                str(ROOT / "plugins" / "jerc-eval-torchvision" / "jerc_eval_torchvision.py"),
                str(ROOT / "plugins" / "custom_encoder_template.py")]


# ================================================================================ key contract
def _extensions():
    host = create_host(plugin_files=PLUGIN_FILES)
    for kind in ("encoders", "suites", "datasets", "probes"):
        for entry in host.registry(kind):
            yield pytest.param(entry.obj, id=f"{kind}:{entry.name}")


def _sample(opt: Option, files: tuple[Path, Path], alt: bool):
    """A valid value of ``opt`` (``alt``: a different one)."""
    if opt.choices:
        base = opt.default if opt.default in opt.choices else opt.choices[0]
        return next(c for c in opt.choices if c != base) if alt else base
    if opt.type is Path:
        return files[alt]
    if opt.type is bool:
        return (not opt.default) if alt else bool(opt.default)
    default = None if opt.required or opt.default is None else opt.default
    if opt.type is int:
        return (default or 0) + (1 if alt else 0)
    if opt.type is float:
        return (default or 0.0) + (0.5 if alt else 0.0)
    text = default if default is not None else "value"
    if str(text).strip().startswith("{"):
        return '{"act_layer": "silu"}' if alt else text
    return f"{text}-other" if alt else text


def _identity_key(cls, opts):
    ext = cls.__new__(cls)
    ext.opts = dict(opts)
    return cache_mod.key("features", ext=cache_mod.identity(ext))


@pytest.mark.parametrize("cls", list(_extensions()))
def test_every_option_of_every_extension_changes_the_key(cls, tmp_path):
    files = (tmp_path / "a.bin", tmp_path / "b.bin")
    files[0].write_bytes(b"weights A")
    files[1].write_bytes(b"weights B")
    base = {k: _sample(o, files, False) for k, o in cls.options.items()}
    k0 = _identity_key(cls, base)
    assert _identity_key(cls, dict(base)) == k0  # deterministic
    for name, opt in cls.options.items():
        changed = _identity_key(cls, {**base, name: _sample(opt, files, True)})
        if opt.affects_result:
            assert changed != k0, f"{cls.name}: option {name!r} is not in the cache key"
        else:
            assert changed == k0, f"{cls.name}: option {name!r} is declared not to change the bytes"


def test_options_are_canonicalised_and_files_keyed_by_content(tmp_path):
    a, b, c = tmp_path / "a.pth", tmp_path / "b.pth", tmp_path / "c.pth"
    a.write_bytes(b"same")
    b.write_bytes(b"same")
    c.write_bytes(b"different")
    canon = cache_mod.canonical
    assert canon('{"a": 1, "b": {"c": [1, 2]}}') == canon(' { "b": {"c": [1,2]}, "a":1 }')
    assert canon('{"a": 1}') != canon('{"a": 1.5}') and canon({"x": 1}) == canon({"x": 1})
    assert canon(a) == canon(b) != canon(c)  # a copy of a checkpoint is the same checkpoint
    assert canon(float("nan")) == canon(float("nan")) and canon(0.1) != canon(0.1 + 1e-17 * 0 + 1e-16)


def test_a_plugin_files_content_is_in_the_key(tmp_path):
    plugin = tmp_path / "my_plugin.py"
    plugin.write_text((ROOT / "plugins" / "custom_encoder_template.py").read_text())
    cls = create_host(plugin_files=[str(plugin)]).registry("encoders").get("my-encoder")
    opts = {"checkpoint": plugin, "paradigm": "JE", "width": 8, "image_size": 32}
    before = _identity_key(cls, opts)
    plugin.write_text(plugin.read_text() + "\n# an edit that changes nothing the version says\n")
    cls2 = create_host(plugin_files=[str(plugin)]).registry("encoders").get("my-encoder")
    assert _identity_key(cls2, opts) != before


def test_factory_callable_file_and_json_kwargs_are_in_the_key(tmp_path):
    cls = create_host(plugin_files=PLUGIN_FILES).registry("encoders").get("factory")
    net = tmp_path / "net.py"
    net.write_text("def build(width=4):\n    return None\n")
    ck = tmp_path / "w.pth"
    ck.write_bytes(b"w")
    opts = {"callable": f"{net}:build", "checkpoint": ck, "kwargs": '{"width": 4}', "paradigm": "JE",
            "image_size": 32, "interpolation": "bilinear", "prefix": "", "drop": ""}
    base = _identity_key(cls, opts)
    assert _identity_key(cls, {**opts, "kwargs": '{"width": 8}'}) != base
    assert _identity_key(cls, {**opts, "kwargs": '{ "width":4 }'}) == base
    os.utime(net, None)
    net.write_text("def build(width=4):\n    return 1\n")
    assert _identity_key(cls, opts) != base


# ============================================================================== entry format
def test_entries_round_trip_and_every_damage_is_detected(tmp_path):
    c = cache_mod.Cache(tmp_path)
    arr = np.arange(12, dtype=np.float16).reshape(3, 4)
    assert c.put_array("features", "k" * 40, arr)
    np.testing.assert_array_equal(c.get_array("features", "k" * 40), arr)
    path = c.path("features", "k" * 40)
    good = path.read_bytes()
    damages = {"random bytes": os.urandom(len(good)), "empty": b"", "truncated": good[:-5],
               "bit flip": good[:-3] + bytes([good[-3] ^ 1]) + good[-2:],
               "zeroed payload": good[:-8] + b"\0" * 8, "legacy npy": b"\x93NUMPY" + good[6:]}
    for what, blob in damages.items():
        path.write_bytes(blob)
        assert c.get_array("features", "k" * 40) is None, what
        assert not path.exists(), f"{what}: a damaged entry is removed"
    assert [k for k, _, _ in c.recomputed] == ["features"] * len(damages)
    # an entry copied under another key is not that key's entry
    c.put_array("features", "a" * 40, arr)
    c.path("features", "b" * 40).parent.mkdir(parents=True, exist_ok=True)
    c.path("features", "b" * 40).write_bytes(c.path("features", "a" * 40).read_bytes())
    assert c.get_array("features", "b" * 40) is None
    assert "recomputed 7 damaged cache entries" in c.recomputed_line()


def test_stale_temp_files_are_swept_at_start(tmp_path):
    c = cache_mod.Cache(tmp_path)
    old, fresh = tmp_path / "features" / "ab" / ".x.entry.1.tmp", tmp_path / "probes" / "cd" / ".y.entry.2.tmp"
    for p in (old, fresh):
        p.parent.mkdir(parents=True)
        p.write_bytes(b"half")
    past = time.time() - 3600
    os.utime(old, (past, past))
    assert c.sweep() == 1 and not old.exists() and fresh.exists()  # fresh: maybe a run in progress


# ============================================================================== in the pipeline
def _cfg(ckpt, npz, tmp, tag, **kw):
    cfg = dict(encoders=["mae", "dino"], encoder_options={"mae": {"checkpoint": str(ckpt["mae"])},
                                                          "dino": {"checkpoint": str(ckpt["dino"])}},
               dataset="npz", dataset_options={"path": str(npz)}, corruptions=["gaussian_noise"],
               severities=[1, 5], out=str(tmp / tag), workers=1, cache_dir=str(tmp / "cache"), alignment=False,
               probe_options={"c_steps": 2, "max_iter": 50})
    cfg.update(kw)
    return cfg


def _entries(tmp, kind):
    return sorted((tmp / "cache" / kind).rglob("*.entry"))


def _damage(path: Path, how: str) -> None:
    blob = path.read_bytes()
    if how == "random":
        path.write_bytes(os.urandom(len(blob)))
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "truncated":
        path.write_bytes(blob[: len(blob) // 2])
    elif how == "zeroed":  # zero part of the payload, keep the header: the checksum catches it
        path.write_bytes(blob[:-64] + b"\0" * 64)


@pytest.mark.parametrize("kind", ["features", "probes", "alignment"])
@pytest.mark.parametrize("how", ["random", "empty", "truncated", "zeroed"])
def test_damaged_entries_of_every_kind_are_recomputed(checkpoints, tiny_npz, tmp_path, kind, how):
    kw = dict(alignment=kind == "alignment", floors=kind == "probes")
    cold = jerc_eval.evaluate(**_cfg(checkpoints, tiny_npz, tmp_path, "cold", **kw))
    entries = _entries(tmp_path, kind)
    assert entries
    for e in entries:
        _damage(e, how)
    said: list[str] = []
    warm = jerc_eval.evaluate(echo=said.append, **_cfg(checkpoints, tiny_npz, tmp_path, "warm", **kw))
    assert warm["rows"] == cold["rows"]
    if kind == "alignment":
        strip = lambda e: {k: v for k, v in e.items()}  # noqa: E731
        assert json.dumps(strip(warm["alignment_evidence"]), sort_keys=True) == \
            json.dumps(strip(cold["alignment_evidence"]), sort_keys=True)
    (line,) = [s for s in said if "recomputed" in s]
    assert f"{kind} x{len(entries)}" in line
    assert all(cache_mod.decode_entry(e.read_bytes(), kind) for e in entries)  # rewritten whole


def test_wrong_shape_feature_entry_is_recomputed(checkpoints, tiny_npz, tmp_path):
    cold = jerc_eval.evaluate(**_cfg(checkpoints, tiny_npz, tmp_path, "cold", floors=False))
    c = cache_mod.Cache(tmp_path / "cache")
    for e in _entries(tmp_path, "features"):
        c.put_array("features", e.name[:-len(cache_mod.SUFFIX)], np.zeros((3, 5), np.float16))  # sound, wrong
    warm = jerc_eval.evaluate(**_cfg(checkpoints, tiny_npz, tmp_path, "warm", floors=False))
    assert warm["rows"] == cold["rows"]


def test_changed_encoder_option_never_reuses_features(checkpoints, tiny_npz, tmp_path):
    """The bug this module exists for: an option missing from the key gave the other model's numbers."""
    a = jerc_eval.evaluate(**_cfg(checkpoints, tiny_npz, tmp_path, "a", floors=False, encoders=["mae"],
                                  encoder_options={"mae": {"checkpoint": str(checkpoints["mae"]), "pool": "cls"}}))
    b = jerc_eval.evaluate(**_cfg(checkpoints, tiny_npz, tmp_path, "b", floors=False, encoders=["mae"],
                                  encoder_options={"mae": {"checkpoint": str(checkpoints["mae"]), "pool": "avg"}}))
    fresh = jerc_eval.evaluate(**_cfg(checkpoints, tiny_npz, tmp_path, "c", floors=False, encoders=["mae"],
                                      no_cache=True,
                                      encoder_options={"mae": {"checkpoint": str(checkpoints["mae"]), "pool": "avg"}}))
    assert b["rows"] == fresh["rows"] and b["encoders"]["mae"]["fingerprint"] != a["encoders"]["mae"]["fingerprint"]


def test_damaged_dataset_render_is_rendered_again(tmp_path, monkeypatch):
    from jerc_eval.default_plugins.datasets import PhotoDigits

    with cache_mod.activated(cache_mod.Cache(tmp_path)) as c:
        ds = PhotoDigits(train_size=30, test_size=20)
        first = ds.load(0)
        (entry,) = sorted((tmp_path / "datasets").rglob("*.entry"))
        blob = entry.read_bytes()
        entry.write_bytes(blob[:-100] + bytes(b ^ 0xFF for b in blob[-100:]))  # bit flips in the npz
        again = ds.load(0)
        assert again.fingerprint == first.fingerprint and c.recomputed[0][0] == "datasets"
        entry.write_bytes(blob[: len(blob) // 3])  # truncated
        assert ds.load(0).fingerprint == first.fingerprint


# ============================================================================ the cache command
def test_cache_command_info_verify_clear(checkpoints, tiny_npz, tmp_path, capsys):
    jerc_eval.evaluate(**_cfg(checkpoints, tiny_npz, tmp_path, "a", floors=False))
    root = tmp_path / "cache"
    n_feat = len(_entries(tmp_path, "features"))
    assert main(["cache", "info", "--cache-dir", str(root), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kinds"]["features"]["entries"] == n_feat and info["kinds"]["probes"]["entries"] == 2
    victim = _entries(tmp_path, "features")[0]
    _damage(victim, "zeroed")
    (root / "features" / "zz").mkdir()
    stale = root / "features" / "zz" / ".q.entry.9.tmp"
    stale.write_bytes(b"x")
    os.utime(stale, (time.time() - 3600,) * 2)
    assert main(["cache", "verify", "--cache-dir", str(root)]) == 0
    out = capsys.readouterr().out
    assert f"{n_feat + 2} entries checked" in out and "1 removed" in out and "checksum mismatch" in out
    assert not victim.exists() and not stale.exists()
    assert main(["cache", "clear", "--cache-dir", str(root), "--kind", "probes"]) == 0
    assert not _entries(tmp_path, "probes") and _entries(tmp_path, "features")
    assert main(["cache", "clear", "--cache-dir", str(root)]) == 0
    assert not any(root.rglob("*.entry"))
