"""CIFAR-10-C parameter table (issue #4, item 5 "Small images"): values, selection (auto / explicit), the fast
torch code against the numpy port of make_cifar_c.py, severity ordering on 32 px images, and the table named in
results.  Small on purpose: 32 px crops, a few images, one tiny end-to-end run per table.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import jerc_eval
from jerc_eval.corruptions import ALL, fast, reference
from jerc_eval.corruptions.fidelity import TOL_MAD, natural_images
from jerc_eval.default_plugins.suites import ImageNetC
from jerc_eval.errors import UsageError

CIFAR = fast.PARAM_TABLES["cifar10"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def small():
    """Four natural 32 x 32 crops (CIFAR size)."""
    return np.ascontiguousarray(natural_images(64, 4)[:, 16:48, 16:48])


def _seeds(n, base=11):
    return np.arange(base, base + n, dtype=np.int64)


# ----------------------------------------------------------------------------------------------- the table
def test_table_matches_make_cifar_c():
    """Facts copied from hendrycks/robustness ImageNet-C/create_c/make_cifar_c.py."""
    assert CIFAR["gaussian_noise"] == [0.04, 0.06, 0.08, 0.09, 0.10]
    assert CIFAR["shot_noise"] == [500, 250, 100, 75, 50]
    assert CIFAR["impulse_noise"] == [0.01, 0.02, 0.03, 0.05, 0.07]
    assert CIFAR["contrast"] == [0.75, 0.5, 0.4, 0.3, 0.15]
    assert CIFAR["brightness"] == [0.05, 0.1, 0.15, 0.2, 0.3]
    assert CIFAR["jpeg_compression"] == [80, 65, 58, 50, 40]
    assert CIFAR["pixelate"] == [0.95, 0.9, 0.85, 0.75, 0.65]
    assert CIFAR["glass_blur"] == [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)]
    assert CIFAR["motion_blur"] == [(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)]
    assert CIFAR["frost"] == [(1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)]
    assert CIFAR["fog"] == [(0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)]
    assert CIFAR["snow"][4] == (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)
    assert CIFAR["spatter"][0] == (0.62, 0.1, 0.7, 0.7, 0.5, 0)
    assert CIFAR["saturate"][2] == (1.5, 0)
    # np.arange(1, 1.06 / 1.11 / 1.16 / 1.21 / 1.26, 0.01), as in the source; floating point makes the first two
    # include their end point (1.06, 1.11), so the source blurs with 7 / 12 / 16 / 21 / 26 zooms
    for z, stop in zip(CIFAR["zoom_blur"], (1.06, 1.11, 1.16, 1.21, 1.26)):
        np.testing.assert_array_equal(z, np.arange(1, stop, 0.01))
    assert [len(z) for z in CIFAR["zoom_blur"]] == [7, 12, 16, 21, 26]
    # elastic: the source's (IMSIZE*a, IMSIZE*s, IMSIZE*affine) with IMSIZE = 32
    assert [tuple(32 * v for v in c) for c in CIFAR["elastic_transform"]][1] == pytest.approx((1.6, 6.4, 2.24))
    assert set(CIFAR) == set(ALL) and all(len(v) == 5 for v in CIFAR.values())
    # the ImageNet table is untouched
    assert fast.PARAM_TABLES["imagenet"]["gaussian_noise"] == [0.08, 0.12, 0.18, 0.26, 0.38]
    assert fast.PARAM_TABLES["imagenet"]["contrast"] == [0.4, 0.3, 0.2, 0.1, 0.05]


def test_unknown_table_is_an_error(small):
    with pytest.raises(ValueError, match="parameter table"):
        fast.corrupt_batch(small, "contrast", 1, _seeds(4), params="cifar100")
    with pytest.raises(ValueError, match="parameter table"):
        reference.corrupt_batch(small, "contrast", 1, _seeds(4), params="cifar100")


# ------------------------------------------------------------------------------------------- selection
def test_auto_rule():
    assert fast.auto_params(32, 32) == "cifar10"
    assert fast.auto_params(32, 64) == "cifar10"  # the short side decides
    assert fast.auto_params(33, 33) == "imagenet"
    assert fast.auto_params(64, 64) == "imagenet"


def test_suite_option_auto_and_explicit(small):
    big = natural_images(64, 2)
    labels = np.zeros(4, dtype=np.int64)
    s32, s64 = ImageNetC(), ImageNetC()
    assert s32.params == "auto" and "params=auto" in s32.backend_version
    s32.validate(small, labels)
    s64.validate(big, labels[:2])
    assert s32.params == "cifar10" and s64.params == "imagenet"
    assert s32.backend_version.endswith("; params=cifar10") and "make_cifar_c-port" in s32.backend_version
    assert s64.backend_version.endswith("; params=imagenet")
    s64.backend = "fast"
    assert s64.backend_version.startswith("jerc-eval-fast==") and s64.backend_version.endswith("params=imagenet")
    explicit = ImageNetC(params="imagenet")
    explicit.validate(small, labels)  # an explicit choice is never overridden by the image size
    assert explicit.params == "imagenet"
    assert ImageNetC(params="cifar10").params == "cifar10"
    with pytest.raises(UsageError, match="params"):
        ImageNetC(params="cifar")


def test_suite_auto_without_validate_uses_the_batch_size(small):
    """A suite used directly (no validate) still picks the table from the images it is given."""
    s = _seeds(4)
    for backend in ("reference", "fast"):
        suite = ImageNetC()
        suite.backend = backend
        got = suite.corrupt(small, "gaussian_noise", 5, s)
        if backend == "fast":
            want = fast.corrupt_batch(small, "gaussian_noise", 5, s, params="cifar10")
        else:
            want = reference.corrupt_batch(small, "gaussian_noise", 5, s, params="cifar10")
        np.testing.assert_array_equal(got, want)
        imagenet = ImageNetC(params="imagenet")
        imagenet.backend = backend
        assert not np.array_equal(got, imagenet.corrupt(small, "gaussian_noise", 5, s))


# ------------------------------------------------------------------------------------ the corruptions
@pytest.mark.parametrize("name", ALL)
def test_fast_replays_the_make_cifar_c_port(name, small):
    """The reference's own numpy draws through the torch code reproduce the numpy port (algorithm check), and the
    fast backend's own draws give a corruption of similar strength."""
    s = _seeds(4)
    for sev in (1, 5):
        ref = reference.corrupt_batch(small, name, sev, s, params="cifar10")
        assert ref.shape == small.shape and ref.dtype == np.uint8
        rep = fast.corrupt_batch(small, name, sev, s, params="cifar10", compute_dtype=torch.float64,
                                 draws=fast.NumpyReplayDraws(s, "cpu"))  # torch code path, even on the CPU
        mad = np.abs(rep.astype(np.float64) - ref).mean()
        assert mad <= TOL_MAD, (name, sev, mad)
        out = fast.corrupt_batch(small, name, sev, s, params="cifar10")
        np.testing.assert_array_equal(out, fast.corrupt_batch(small, name, sev, s, params="cifar10"))
        np.testing.assert_array_equal(out[1:2], fast.corrupt_batch(small[1:2], name, sev, s[1:2], params="cifar10"))


@pytest.mark.parametrize("name", sorted(fast.CIFAR10_DIFFERENT_ALGORITHM))
def test_cifar_algorithms_on_other_sizes(name):
    """The CIFAR-specific algorithms generalise to non-square and larger images (explicit params=cifar10)."""
    x = np.ascontiguousarray(natural_images(64, 2)[:, :40, :33])
    s = _seeds(2)
    ref = reference.corrupt_batch(x, name, 3, s, params="cifar10")
    rep = fast.corrupt_batch(x, name, 3, s, params="cifar10", compute_dtype=torch.float64,
                             draws=fast.NumpyReplayDraws(s, "cpu"))
    assert ref.shape == x.shape and np.abs(rep.astype(np.float64) - ref).mean() <= TOL_MAD
    big = natural_images(64, 2)
    assert fast.corrupt_batch(big, name, 5, s, params="cifar10").shape == big.shape


def test_pixelate_cifar_is_pillow_box_box(small):
    from PIL import Image

    for sev in range(1, 6):
        c = CIFAR["pixelate"][sev - 1]
        want = np.stack([np.asarray(Image.fromarray(im).resize((int(32 * c),) * 2, Image.BOX)
                                    .resize((32, 32), Image.BOX)) for im in small])
        got = fast._pixelate_cifar(torch.from_numpy(small).double(), sev, None).to(torch.uint8).numpy()
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("backend", ["fast", "reference"])
@pytest.mark.parametrize("name", ["gaussian_noise", "gaussian_blur", "contrast", "shot_noise", "pixelate",
                                  "jpeg_compression"])
def test_severity_strengthens_on_32px(name, backend, small):
    s = _seeds(4, 3)
    fn = fast.corrupt_batch if backend == "fast" else reference.corrupt_batch
    mad = [np.abs(fn(small, name, sev, s, params="cifar10").astype(np.float64) - small).mean() for sev in range(1, 6)]
    assert all(b > a for a, b in zip(mad, mad[1:])), (name, np.round(mad, 2))


def test_cifar_table_is_milder_than_imagenet_at_32px(small):
    """Pitfall 6: ImageNet-C parameters are far too strong for 32 px images."""
    s = _seeds(4)
    for name in ("gaussian_noise", "gaussian_blur", "contrast"):
        cifar = np.abs(fast.corrupt_batch(small, name, 5, s, params="cifar10").astype(np.float64) - small).mean()
        inet = np.abs(fast.corrupt_batch(small, name, 5, s, params="imagenet").astype(np.float64) - small).mean()
        assert cifar < inet, name


# ------------------------------------------------------------------------------------------ end to end
def _cfg(ckpt, npz, out, **kw):
    cfg = dict(encoders=["dino"], encoder_options={"dino": {"checkpoint": str(ckpt["dino"])}}, dataset="npz",
               dataset_options={"path": str(npz)}, corruptions=["contrast"], severities=[5], out=str(out),
               workers=1, floors=False, probe_options={"c_steps": 2, "max_iter": 50})
    cfg.update(kw)
    return cfg


def test_results_name_the_table(checkpoints, tiny_npz, tmp_path):
    """tiny_npz holds 32 px images: auto picks cifar10; an explicit choice is recorded as given."""
    auto = jerc_eval.evaluate(**_cfg(checkpoints, tiny_npz, tmp_path / "auto"))
    doc = json.loads((tmp_path / "auto" / "results.json").read_text())
    assert doc["suite"]["backend_version"].endswith("; params=cifar10")
    assert "params=cifar10" in (tmp_path / "auto" / "report.md").read_text()
    inet = jerc_eval.evaluate(**_cfg(checkpoints, tiny_npz, tmp_path / "inet", backend="fast",
                                     suite_options={"params": "imagenet"}))
    assert inet["suite"]["backend_version"].endswith("; params=imagenet")
    assert inet["config"]["suite_options"] == {"params": "imagenet"}
    assert {r["backend"] for r in auto["rows"] if r["corruption"] == "contrast"} == {"reference"}


@pytest.mark.parametrize("params", ["cifar10", "imagenet"])
@pytest.mark.parametrize("name", sorted(reference._STACKED))
def test_batched_reference_path_is_bit_identical(name, params):
    """zoom_blur, brightness and saturate go through the reference code a batch at a time; every image must come
    out exactly as the one-image-at-a-time loop makes it, on square and non-square images (the 40 x 36 size hits
    scipy's zoom placing its last column a rounding error outside the input, which scipy fills with 0)."""
    rng = np.random.default_rng(7)
    for h, w in ((32, 32), (40, 36)):
        imgs = rng.integers(0, 256, (9, h, w, 3), dtype=np.uint8)
        seeds = np.arange(9)
        for sev in range(1, 6):
            got = reference.corrupt_batch(imgs, name, sev, seeds, params)
            want = np.stack([reference.corrupt_one(im, name, sev, int(s), params) for im, s in zip(imgs, seeds)])
            assert got.dtype == np.uint8 and np.array_equal(got, want), (name, params, h, w, sev)


def test_batched_reference_zoom_chunks_large_batches(monkeypatch):
    monkeypatch.setattr(reference, "_ZOOM_VALUES", 32 * 32 * 3 * 2)  # two images per call
    imgs = np.random.default_rng(3).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    got = reference.corrupt_batch(imgs, "zoom_blur", 5, np.zeros(5, dtype=np.int64), "cifar10")
    want = np.stack([reference.corrupt_one(im, "zoom_blur", 5, 0, "cifar10") for im in imgs])
    assert np.array_equal(got, want)


@pytest.mark.parametrize("name", ["brightness", "saturate"])
def test_batched_reference_hsv_chunks_large_batches(monkeypatch, name):
    monkeypatch.setattr(reference, "_ROWS_VALUES", 32 * 32 * 3 * 2)  # two images per call
    imgs = np.random.default_rng(4).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    for params in ("cifar10", "imagenet"):
        got = reference.corrupt_batch(imgs, name, 4, np.zeros(5, dtype=np.int64), params)
        want = np.stack([reference.corrupt_one(im, name, 4, 0, params) for im in imgs])
        assert np.array_equal(got, want), params
