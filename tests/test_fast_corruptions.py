"""Tests for the fast torch corruption backend (jerc_eval.corruptions.fast) against the reference imagecorruptions.

Small on purpose (64x64 natural crops, a few images): the whole file runs in well under a minute on 2 cores.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from jerc_eval.corruptions import ALL, SEVERITIES, fast
from jerc_eval.corruptions.fidelity import TOL_MAD, TOL_PSNR_DB, compare, natural_images, psnr

STOCHASTIC = set(fast.STOCHASTIC)

# Severity chains that are not monotone in PSNR *in the reference parameters themselves* (checked on the reference
# too); for these only severity 1 vs 5 is required to order.
NOT_MONOTONE = {
    "glass_blur": "reference parameters: s4 (sigma 1.1, 2 iters) blurs less than s3 (sigma 1, 3 iters) on small crops",
    "frost": "texture choice (6 textures) dominates the PSNR; s3-s5 overlap",
    "fog": "a random fractal dominates the PSNR; s3-s5 overlap",
    "saturate": "not a monotone family: s1/s2 desaturate, s3-s5 oversaturate",
}

# Stochastic corruptions whose per-image PSNR depends so strongly on a few draws (texture, angle, fractal, drop
# layout) that 8 images cannot resolve a 0.5 dB mean difference: for these the strict 0.5 dB check is a known miss
# for sampling reasons, not an algorithmic one (replay with the reference's own draws must still match exactly).
NOISY_PSNR = {"frost", "fog", "motion_blur", "snow", "spatter"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def imgs():
    return natural_images(64, 8)


@pytest.fixture(scope="module")
def fidelity_rows(imgs):
    return compare(imgs, ALL, SEVERITIES, seed=0, replay=True, repeats=1)


def _seeds(n, base=123):
    return np.arange(base, base + n, dtype=np.int64)


@pytest.mark.parametrize("name", ALL)
def test_shape_dtype_determinism_and_batch_independence(name, imgs):
    x = imgs[:4]
    sev = 3
    s = _seeds(4)
    y = fast.corrupt_batch(x, name, sev, s)
    assert isinstance(y, np.ndarray) and y.dtype == np.uint8 and y.shape == x.shape
    assert y.min() >= 0 and y.max() <= 255
    assert not np.array_equal(y, x), "corruption left the images unchanged"
    # deterministic given seeds
    np.testing.assert_array_equal(y, fast.corrupt_batch(x, name, sev, s))
    # image i's output does not depend on the rest of the batch (alone, or in another batch order)
    np.testing.assert_array_equal(y[2:3], fast.corrupt_batch(x[2:3], name, sev, s[2:3]))
    perm = [3, 1, 2, 0]
    np.testing.assert_array_equal(y[perm], fast.corrupt_batch(x[perm], name, sev, s[perm]))
    # torch in -> torch out, same values
    yt = fast.corrupt_batch(torch.from_numpy(x), name, sev, s)
    assert isinstance(yt, torch.Tensor) and yt.dtype == torch.uint8
    np.testing.assert_array_equal(yt.numpy(), y)
    if name in STOCHASTIC and name != "glass_blur":
        # different seeds -> different draws (glass_blur too, but its small shuffles can coincide on flat areas)
        assert not np.array_equal(y, fast.corrupt_batch(x, name, sev, s + 1000))


@pytest.mark.parametrize("name", ALL)
def test_odd_sizes(name):
    rng = np.random.default_rng(0)
    x = natural_images(64, 2)[:, :33, :47].copy()
    y = fast.corrupt_batch(x, name, 5, _seeds(2))
    assert y.shape == (2, 33, 47, 3) and y.dtype == np.uint8
    g = rng.integers(0, 256, size=(1, 40, 36), dtype=np.uint8)  # greyscale (N, H, W) -> 3 channels like the reference
    assert fast.corrupt_batch(g, name, 2, _seeds(1)).shape == (1, 40, 36, 3)


@pytest.mark.parametrize("name", ALL)
def test_severity_monotonicity(name, imgs):
    x = imgs[:4]
    ps = [psnr(x, fast.corrupt_batch(x, name, sev, _seeds(4, 7))).mean() for sev in SEVERITIES]
    assert ps[-1] < ps[0], f"{name}: severity 5 ({ps[-1]:.2f} dB) not worse than severity 1 ({ps[0]:.2f} dB)"
    if name in NOT_MONOTONE:
        return
    assert all(b < a for a, b in zip(ps, ps[1:])), f"{name}: PSNR by severity {np.round(ps, 2)}"


def test_api_and_errors(imgs):
    assert fast.available() == list(ALL) and isinstance(fast.FAST_VERSION, str)
    with pytest.raises(ValueError):
        fast.corrupt_batch(imgs[:2], "nope", 1, _seeds(2))
    with pytest.raises(ValueError):
        fast.corrupt_batch(imgs[:2], "contrast", 6, _seeds(2))
    with pytest.raises(ValueError):
        fast.corrupt_batch(imgs[:2], "contrast", 1, _seeds(3))
    with pytest.raises(ValueError):
        fast.corrupt_batch(imgs[:2, :31], "contrast", 1, _seeds(2))
    with pytest.raises(TypeError):
        fast.corrupt_batch(imgs[:2].astype(np.float32), "contrast", 1, _seeds(2))


def test_device_code_paths_agree_on_cpu():
    """The conv2d / gather paths used on accelerators give the CPU paths' results."""
    t = torch.rand(3, 40, 37, dtype=torch.float64)
    w = fast._gauss_weights(2.0, 4.0)
    for axis in (1, 2):
        a = fast._conv_axis(t, w, axis, "nearest", impl="slices")
        b = fast._conv_axis(t, w, axis, "nearest", impl="conv")
        torch.testing.assert_close(a, b)
    x = torch.rand(3, 40, 37, 3, dtype=torch.float64)
    ang = np.array([-40.0, 5.0, 44.0])
    torch.testing.assert_close(fast._motion_blur(x, 15, 8, ang, impl="slices"),
                               fast._motion_blur(x, 15, 8, ang, impl="gather"))


@pytest.mark.parametrize("name", ALL)
def test_fidelity(name, fidelity_rows):
    rows = [r for r in fidelity_rows if r["corruption"] == name]
    assert len(rows) == len(SEVERITIES)
    for r in rows:
        if r["kind"] == "deterministic":
            assert r["mad"] <= TOL_MAD, r
        else:
            # the reference's own numpy draws replayed through the fast code reproduce the reference
            assert r["replay_mad"] <= TOL_MAD, r
            # PSNR distribution: mean paired difference within 0.5 dB + 3 standard errors
            assert r["passed"], r


@pytest.mark.parametrize("name", sorted(STOCHASTIC))
def test_fidelity_psnr_strict(name, fidelity_rows):
    if name in NOISY_PSNR:
        pytest.xfail("known miss for sampling reasons: per-image PSNR spread from a few draws (texture / angle / "
                     "fractal / drop layout) gives SE ~0.2-1 dB at 8 images; algorithm verified by replay")
    for r in (r for r in fidelity_rows if r["corruption"] == name):
        assert abs(r["value"]) <= TOL_PSNR_DB, r
