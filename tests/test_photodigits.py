"""PhotoDigits, the embedded default: splits without leakage, the 32 px stored size, the dataset plugin."""
from __future__ import annotations

import json

import numpy as np
import pytest

from jerc_eval.datasets import photodigits as pd


def test_test_images_never_reuse_a_train_digit_sample():
    pools = pd.digit_pools(0)
    assert not set(pools["train"]) & set(pools["test"])
    tr, te = pd.build_split("train", 50), pd.build_split("test", 30)
    assert set(tr.digit_ids) <= set(pools["train"]) and set(te.digit_ids) <= set(pools["test"])


def test_32px_is_the_render_downsampled_as_the_encoders_resize():
    import torch

    from jerc_eval.features import resize

    big, small = pd.build_split("test", 12), pd.build_split("test", 12, stored_size=32)
    assert big.images.shape == (12, 64, 64, 3) and small.images.shape == (12, 32, 32, 3)
    assert small.images.dtype == np.uint8
    np.testing.assert_array_equal(big.labels, small.labels)
    np.testing.assert_array_equal(big.digit_ids, small.digit_ids)
    # what an encoder with a 32 px input computes from the 64 px render, up to rounding to grey levels
    x = torch.from_numpy(big.images).permute(0, 3, 1, 2).float() / 255
    seen = resize(x, 32).permute(0, 2, 3, 1).numpy() * 255
    assert np.abs(small.images.astype(np.float64) - seen).max() <= 0.5 + 1e-3
    assert small.fingerprint != big.fingerprint


def test_dataset_plugin_defaults_to_32px_and_refuses_other_sizes(tmp_path, monkeypatch):
    from jerc_eval.errors import UsageError
    from jerc_eval.plugins import create_host

    monkeypatch.setenv("JERC_EVAL_CACHE", str(tmp_path))
    cls = create_host(entry_points=False).registry("datasets").get("photodigits")
    data = cls(train_size=20, test_size=10).load(0)
    assert data.train.images.shape == (20, 32, 32, 3) and data.test.images.shape == (10, 32, 32, 3)
    assert data.provenance["image_size"] == 32 and data.provenance["render_size"] == 64
    big = cls(train_size=20, test_size=10, image_size=64).load(0)
    assert big.test.images.shape == (10, 64, 64, 3) and big.fingerprint != data.fingerprint
    np.testing.assert_array_equal(big.test.labels, data.test.labels)
    assert len(list((tmp_path / "datasets").rglob("*.entry"))) == 2  # one cache entry per stored size
    with pytest.raises(UsageError, match="image_size"):
        cls(image_size=48)


def test_default_dataset_runs_with_cifar10_c_parameters(tmp_path, monkeypatch):
    """The default run corrupts the 32 px images with CIFAR-10-C's table (the suite's auto rule), and says so."""
    from jerc_eval.cli import main

    monkeypatch.setenv("JERC_EVAL_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "res"
    code = main(["run", "-e", "zoo-mae", "-d", "train_size", "60", "-d", "test_size", "30", "-c", "fog",
                 "--severities", "1,5", "--out", str(out), "--quiet", "--no-floors"])
    assert code in (0, None)
    doc = json.loads((out / "results.json").read_text())
    assert doc["suite"]["backend_version"].endswith("params=cifar10")
    assert doc["dataset"]["provenance"]["image_size"] == 32


def test_splits_rendered_side_by_side_equal_the_sequential_render():
    from jerc_eval.default_plugins.datasets import _render_splits

    opts = {"image_size": 32, "train_size": 40, "test_size": 24, "render_seed": 0}
    tr, te = _render_splits(opts)
    for split, got in (("train", tr), ("test", te)):
        ref = pd.build_split(split, opts[f"{split}_size"], 0, stored_size=32)
        assert got.fingerprint == ref.fingerprint and np.array_equal(got.digit_ids, ref.digit_ids)
