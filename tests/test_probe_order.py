"""The probe's model selection does not depend on how the data is stored: the same images as an .npz, as an
image folder and as an .npz with the train rows permuted give the same chosen C and the same clean accuracy."""
from __future__ import annotations

import numpy as np
import pytest

import jerc_eval


def _as_folder(npz, root):
    from PIL import Image

    z = np.load(npz)
    for split in ("train", "test"):
        for i, (img, label) in enumerate(zip(z[f"x_{split}"], z[f"y_{split}"])):
            d = root / split / f"class{int(label)}"
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(d / f"{i:05d}.png")  # lossless: the same pixels, another container
    return root


def _permuted(npz, path):
    z = dict(np.load(npz))
    perm = np.random.default_rng(1).permutation(len(z["y_train"]))
    z["x_train"], z["y_train"] = z["x_train"][perm], z["y_train"][perm]
    np.savez(path, **z)
    return path


def _run(checkpoints, tmp_path, tag, dataset, options):
    return jerc_eval.evaluate(encoders=["mae", "dino"], dataset=dataset, dataset_options=options,
                              encoder_options={"mae": {"checkpoint": str(checkpoints["mae"])},
                                               "dino": {"checkpoint": str(checkpoints["dino"])}},
                              corruptions=["contrast"], severities=[3], out=str(tmp_path / tag), workers=1,
                              no_cache=True, alignment=False, floors=False, probe_options={"max_iter": 100})


def test_same_images_in_any_container_or_order_give_the_same_probe(checkpoints, tiny_npz, tmp_path):
    runs = {"npz": _run(checkpoints, tmp_path, "npz", "npz", {"path": str(tiny_npz)}),
            "permuted": _run(checkpoints, tmp_path, "perm", "npz",
                             {"path": str(_permuted(tiny_npz, tmp_path / "perm.npz"))}),
            "folder": _run(checkpoints, tmp_path, "folder", "imagefolder",
                           {"root": str(_as_folder(tiny_npz, tmp_path / "folder"))})}
    clean = {k: {r["encoder"]: r["accuracy"] for r in res["rows"] if r["corruption"] == "clean"}
             for k, res in runs.items()}
    for enc in ("mae", "dino"):
        probes = {k: res["encoders"][enc]["probe"] for k, res in runs.items()}
        assert probes["npz"]["folds"] == 5 and len(probes["npz"]["cv_fold_accuracy_by_C"]) == 6
        assert probes["npz"] == probes["permuted"]  # the train rows are fitted in their canonical order
        assert probes["folder"]["C"] == probes["npz"]["C"]
        assert probes["folder"]["cv_accuracy_by_C"] == pytest.approx(probes["npz"]["cv_accuracy_by_C"], abs=0.01)
        assert abs(clean["folder"][enc] - clean["npz"][enc]) <= 0.005
        assert clean["permuted"][enc] == clean["npz"][enc]
    assert runs["npz"]["rows"] == runs["permuted"]["rows"]


def _process_state():
    import os
    import random

    import torch

    return {"threads": torch.get_num_threads(), "torch_rng": torch.random.get_rng_state().numpy().tobytes(),
            "np_rng": repr(np.random.get_state()), "py_rng": repr(random.getstate()), "env": dict(os.environ),
            "err": np.geterr(), "print": np.get_printoptions(), "dtype": str(torch.get_default_dtype())}


def test_two_evaluate_calls_leave_the_process_as_it_was(checkpoints, tiny_npz, tmp_path):
    """Floors seed torch, the in-process reference corruptions seed np.random, the alignment step limits BLAS
    threads: none of it may outlive the call, and the second call gives the first call's rows."""
    import torch

    before_threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        kw = dict(encoders=["mae"], encoder_options={"mae": {"checkpoint": str(checkpoints["mae"])}},
                  dataset="npz", dataset_options={"path": str(tiny_npz)}, corruptions=["gaussian_noise"],
                  severities=[2], workers=1, no_cache=True, alignment=True, probe_options={"c_steps": 2})
        state = _process_state()
        first = jerc_eval.evaluate(out=str(tmp_path / "a"), **kw)
        assert _process_state() == state
        second = jerc_eval.evaluate(out=str(tmp_path / "b"), **kw)
        assert _process_state() == state
        assert first["rows"] == second["rows"]
        assert first["environment"]["torch_threads"] == second["environment"]["torch_threads"] == 2
    finally:
        torch.set_num_threads(before_threads)


def test_same_seed_runs_differ_only_in_created_and_timing(checkpoints, tiny_npz, tmp_path):
    """docs/results-schema.md: `created` and `timing` (clock readings, the alignment estimator's included) are the
    only fields two runs with one seed on one machine may differ in; here one cold and one warm run."""
    import json

    kw = dict(encoders=["mae", "dino"], encoder_options={"mae": {"checkpoint": str(checkpoints["mae"])},
                                                         "dino": {"checkpoint": str(checkpoints["dino"])}},
              dataset="npz", dataset_options={"path": str(tiny_npz)}, corruptions=["gaussian_noise", "fog"],
              severities=[1, 5], workers=1, cache_dir=str(tmp_path / "cache"), alignment=True,
              probe_options={"c_steps": 2, "max_iter": 50})
    docs = []
    for tag in ("a", "b"):
        jerc_eval.evaluate(out=str(tmp_path / tag), **kw)
        doc = json.loads((tmp_path / tag / "results.json").read_text())
        assert "timing_s" not in doc["alignment_evidence"]
        assert ("alignment_evidence" in doc["timing"]) == (tag == "a")  # the warm run reads it from the cache
        for volatile in ("created", "timing"):
            doc.pop(volatile)
        doc["config"].pop("out")
        docs.append(json.dumps(doc, sort_keys=True))
    assert docs[0] == docs[1]
