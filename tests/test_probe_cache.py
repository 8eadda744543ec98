"""Fitted probes are cached: a warm run loads every probe (clean, random-init floors, matched cells) instead of
refitting, and gives exactly the results of the cold run."""
import json

import numpy as np
import pytest

import jerc_eval
from jerc_eval.default_plugins.probes import KNNProbe, LogRegProbe, SGDHeadProbe
from jerc_eval.probes import ProbeCache, _decode, _encode


def _cfg(ckpt, npz, tmp, tag, **kw):
    cfg = dict(encoders=["mae", "dino"], encoder_options={"mae": {"checkpoint": str(ckpt["mae"])},
                                                          "dino": {"checkpoint": str(ckpt["dino"])}},
               dataset="npz", dataset_options={"path": str(npz)}, corruptions=["gaussian_noise", "contrast"],
               severities=[1, 5], out=str(tmp / tag), workers=1, cache_dir=str(tmp / "cache"), alignment=False,
               probe_options={"c_steps": 2, "max_iter": 50})
    cfg.update(kw)
    return cfg


def _count_fits(monkeypatch, cls, forbid=False):
    calls = []
    real = cls.fit

    def fit(self, *args, **kw):
        calls.append(self.name)
        if forbid:
            raise AssertionError(f"{self.name} probe refitted although its fit is cached")
        return real(self, *args, **kw)

    monkeypatch.setattr(cls, "fit", fit)
    return calls


def _doc(out):
    doc = json.loads((out / "results.json").read_text())
    for volatile in ("created", "timing"):
        doc.pop(volatile)
    doc["config"].pop("out")
    return doc


def _same(a, b):
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _probe_files(tmp):
    return sorted((tmp / "cache" / "probes").rglob("*.entry"))


def test_warm_run_loads_every_probe_and_is_bit_identical(checkpoints, tiny_npz, tmp_path, monkeypatch):
    cold = jerc_eval.evaluate(**_cfg(checkpoints, tiny_npz, tmp_path, "cold"))
    assert len(_probe_files(tmp_path)) == 4  # 2 encoders + their 2 random-init floors
    assert all(cold["encoders"][n]["floor"] for n in ("mae", "dino"))
    with monkeypatch.context() as m:
        _count_fits(m, LogRegProbe, forbid=True)
        warm = jerc_eval.evaluate(**_cfg(checkpoints, tiny_npz, tmp_path, "warm"))
    assert warm["rows"] == cold["rows"]
    assert warm["summary"] == cold["summary"]
    assert _same(warm["comparison"], cold["comparison"])  # NaN where no corruption qualifies
    for n in ("mae", "dino"):
        assert warm["encoders"][n]["probe"] == cold["encoders"][n]["probe"]  # C, grid scores (float keys), ...
        assert warm["encoders"][n]["floor"] == cold["encoders"][n]["floor"]
    assert _same(_doc(tmp_path / "warm"), _doc(tmp_path / "cold"))  # the whole results.json


def test_no_cache_and_changed_options_refit(checkpoints, tiny_npz, tmp_path, monkeypatch):
    jerc_eval.evaluate(**_cfg(checkpoints, tiny_npz, tmp_path, "a", floors=False))
    calls = _count_fits(monkeypatch, LogRegProbe)
    jerc_eval.evaluate(**_cfg(checkpoints, tiny_npz, tmp_path, "b", floors=False, no_cache=True))
    assert calls == ["logreg", "logreg"]
    calls.clear()
    jerc_eval.evaluate(**_cfg(checkpoints, tiny_npz, tmp_path, "c", floors=False,
                              probe_options={"c_steps": 2, "max_iter": 49}))
    assert calls == ["logreg", "logreg"]  # another option: another key
    calls.clear()
    jerc_eval.evaluate(**_cfg(checkpoints, tiny_npz, tmp_path, "d", floors=False, seed=1))
    assert calls == ["logreg", "logreg"]  # another seed (the C hold-out split depends on it)
    calls.clear()
    jerc_eval.evaluate(**_cfg(checkpoints, tiny_npz, tmp_path, "e", floors=False))
    assert calls == []


def test_damaged_entry_is_refitted_not_trusted(checkpoints, tiny_npz, tmp_path, monkeypatch):
    cold = jerc_eval.evaluate(**_cfg(checkpoints, tiny_npz, tmp_path, "a", floors=False, encoders=["dino"],
                                     encoder_options={"dino": {"checkpoint": str(checkpoints["dino"])}}))
    (entry,) = _probe_files(tmp_path)
    entry.write_bytes(entry.read_bytes()[:100])
    calls = _count_fits(monkeypatch, LogRegProbe)
    warm = jerc_eval.evaluate(**_cfg(checkpoints, tiny_npz, tmp_path, "b", floors=False, encoders=["dino"],
                                     encoder_options={"dino": {"checkpoint": str(checkpoints["dino"])}}))
    assert calls == ["logreg"] and warm["rows"] == cold["rows"]
    from jerc_eval.cache import decode_entry

    json.loads(decode_entry(entry.read_bytes(), "probes")[1])  # rewritten whole


def test_matched_protocol_probes_are_cached(checkpoints, tiny_npz, tmp_path, monkeypatch):
    kw = dict(probe_fit_on="matched", floors=False, encoders=["dino"], severities=[3],
              encoder_options={"dino": {"checkpoint": str(checkpoints["dino"])}})
    cold = jerc_eval.evaluate(**_cfg(checkpoints, tiny_npz, tmp_path, "a", **kw))
    assert len(_probe_files(tmp_path)) == 1 + 2  # clean + one per cell
    with monkeypatch.context() as m:
        _count_fits(m, LogRegProbe, forbid=True)
        warm = jerc_eval.evaluate(**_cfg(checkpoints, tiny_npz, tmp_path, "b", **kw))
    assert warm["rows"] == cold["rows"] and warm["summary"] == cold["summary"]
    assert all("probe_train_accuracy" in r for r in warm["rows"] if r["corruption"] != "clean")


def test_sgd_head_is_cached_and_knn_is_not(checkpoints, tiny_npz, tmp_path, monkeypatch):
    kw = dict(probe="sgd", probe_options={"epochs": 2}, severities=[5], corruptions=["contrast"])
    cold = jerc_eval.evaluate(**_cfg(checkpoints, tiny_npz, tmp_path, "a", **kw))
    assert len(_probe_files(tmp_path)) == 4
    with monkeypatch.context() as m:
        _count_fits(m, SGDHeadProbe, forbid=True)
        warm = jerc_eval.evaluate(**_cfg(checkpoints, tiny_npz, tmp_path, "b", **kw))
    assert warm["rows"] == cold["rows"] and warm["encoders"] == cold["encoders"]
    calls = _count_fits(monkeypatch, KNNProbe)
    kw = dict(probe="knn", probe_options={}, severities=[5], corruptions=["contrast"], floors=False)
    a = jerc_eval.evaluate(**_cfg(checkpoints, tiny_npz, tmp_path, "c", **kw))
    b = jerc_eval.evaluate(**_cfg(checkpoints, tiny_npz, tmp_path, "d", **kw))
    assert a["rows"] == b["rows"] and calls == ["knn"] * 4 and len(_probe_files(tmp_path)) == 4


def test_info_round_trips_exactly():
    info = {"C": 0.1, "val_accuracy_by_C": {0.001: 0.5, 1.0: 0.75}, "c_grid": [0.001, 1.0], "t": (1, "a"),
            "n": None, "ok": True, "weird": {"__items__": 1, (1, 2): [float("inf"), -0.0]}}
    back = _decode(json.loads(json.dumps(_encode(info))))
    assert back == info and type(back["t"]) is tuple and list(back["val_accuracy_by_C"]) == [0.001, 1.0]
    assert str(back["weird"][(1, 2)][1]) == "-0.0"


def test_unknown_models_are_not_stored(tmp_path):
    from jerc_eval.api import FittedProbe

    cache = ProbeCache(tmp_path)
    assert not cache.store("k" * 40, FittedProbe(predict=lambda x: np.zeros(len(x)), info={}))
    assert cache.load("k" * 40, "cpu") is None and cache.misses == 1
    assert not ProbeCache(tmp_path, enabled=False).store("k" * 40, None)


@pytest.mark.parametrize("cls", [LogRegProbe, SGDHeadProbe])
def test_loaded_model_predicts_identically(tmp_path, cls):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 12)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + 2 * (x[:, 1] > 0)
    probe = cls(**({"c_steps": 3} if cls is LogRegProbe else {"epochs": 3}))
    fitted = probe.fit(x, y, 4, 0, "cpu")
    cache = ProbeCache(tmp_path)
    assert cache.store("a" * 40, fitted)
    back = cache.load("a" * 40, "cpu")
    xt = rng.normal(size=(500, 12)).astype(np.float32)
    assert np.array_equal(back.predict(xt), fitted.predict(xt)) and back.info == fitted.info
