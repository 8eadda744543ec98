"""The fidelity harness on the CIFAR-10-C parameter table (`jerc-eval corruptions compare --params cifar10`): the
fast backend against the numpy port of make_cifar_c.py on tiny 32 px image sets; the ImageNet default unchanged.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from jerc_eval.corruptions import fast, reference
from jerc_eval.corruptions.fidelity import (
    DEFAULT_SIZE,
    TOL_MAD,
    compare,
    main,
    natural_images,
    reference_batch,
)
from jerc_eval.seeding import image_seeds

# deterministic corruptions (defocus_blur takes the reference code on a CPU), plain noise, and three whose CIFAR
# algorithm differs from ImageNet's
NAMES = ["gaussian_blur", "defocus_blur", "gaussian_noise", "zoom_blur", "frost", "elastic_transform"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny():
    """Three natural 32 x 32 crops (CIFAR size)."""
    return natural_images(32, 3)


def test_reference_of_the_cifar_table_is_the_make_cifar_c_port(tiny):
    s = image_seeds(0, "gaussian_blur", 5, len(tiny))
    got = reference_batch(tiny, "gaussian_blur", 5, s, "cifar10")
    np.testing.assert_array_equal(got, reference.corrupt_batch(tiny, "gaussian_blur", 5, s, params="cifar10"))
    assert not np.array_equal(got, reference_batch(tiny, "gaussian_blur", 5, s))  # imagecorruptions: ImageNet
    with pytest.raises(ValueError, match="parameter table"):
        reference_batch(tiny, "gaussian_blur", 5, s, "cifar100")
    with pytest.raises(ValueError, match="parameter table"):
        compare(tiny, ["gaussian_blur"], [1], params="cifar100")


def test_compare_on_the_cifar_table_passes_at_32px(tiny):
    rows = compare(tiny, NAMES, [1, 5], seed=0, replay=True, repeats=1, params="cifar10")
    assert [(r["corruption"], r["severity"]) for r in rows] == [(n, s) for n in NAMES for s in (1, 5)]
    for r in rows:
        assert r["params"] == "cifar10" and r["shape"] == [32, 32] and r["n_images"] == 3
        assert r["passed"], r
        if r["kind"] == "deterministic":
            assert r["mad"] <= TOL_MAD, r
            # on a CPU defocus_blur runs the reference code (MAD 0); its torch code path is checked separately
            assert ("torch_path_mad" in r) == (r["corruption"] in fast.CPU_REFERENCE_PATH), r
            assert r.get("torch_path_passed", True) and r.get("torch_path_mad", 0.0) <= TOL_MAD, r
        else:
            assert r["replay_passed"] and r["replay_mad"] <= TOL_MAD, r  # the port's own draws, replayed


def test_the_harness_would_catch_a_table_mixup(tiny):
    """Fast on one table against the reference on the other is far outside the tolerance: the cifar10 rows above
    pass because both sides use the same table, not because the check is lax."""
    s = image_seeds(0, "gaussian_blur", 5, len(tiny))
    fast_cifar = fast.corrupt_batch(tiny, "gaussian_blur", 5, s, params="cifar10")
    assert np.abs(fast_cifar.astype(np.int64) - reference_batch(tiny, "gaussian_blur", 5, s)).mean() > 5 * TOL_MAD
    rows = compare(tiny, ["gaussian_blur"], [5], params="imagenet")
    assert rows[0]["params"] == "imagenet" and rows[0]["passed"]


def test_main_params_cifar10_defaults_to_32px_and_records_the_table(tmp_path, capsys):
    out = tmp_path / "fid.json"
    rows = main(["--params", "cifar10", "--n", "2", "--repeats", "2", "--names", "gaussian_blur,shot_noise",
                 "--out", str(out)])
    doc = json.loads(out.read_text())
    meta = doc["meta"]
    assert meta["params"] == "cifar10" and meta["size"] == DEFAULT_SIZE["cifar10"] == 32 and meta["n_images"] == 2
    assert "make_cifar_c-port" in meta["reference_version"]
    assert len(rows) == len(doc["rows"]) == 10 and all(r["shape"] == [32, 32] for r in doc["rows"])
    assert all(r["n_samples"] == 4 for r in doc["rows"] if r["kind"] == "stochastic")
    printed = capsys.readouterr().out
    assert "parameter table cifar10" in printed and "10 rows, 0 failing check(s)" in printed


def test_main_keeps_the_imagenet_default(tmp_path):
    out = tmp_path / "fid.json"
    main(["--n", "1", "--repeats", "1", "--names", "contrast", "--out", str(out)])
    meta = json.loads(out.read_text())["meta"]
    assert meta["params"] == "imagenet" and meta["size"] == 64 and "make_cifar_c" not in meta["reference_version"]


def test_cli_compare_accepts_params(tmp_path, capsys):
    from jerc_eval.cli import main as cli_main

    out = tmp_path / "fid.json"
    assert cli_main(["corruptions", "compare", "--params", "cifar10", "--n", "1", "--repeats", "1",
                     "--names", "pixelate", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["meta"]["params"] == "cifar10"
    with pytest.raises(SystemExit) as exc:  # argparse: a usage error, exit 2
        cli_main(["corruptions", "compare", "--params", "cifar100"])
    assert exc.value.code == 2 and "invalid choice: 'cifar100'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli_main(["corruptions", "compare", "--params", "cifar10", "--size", "16"])
    assert exc.value.code == 2 and "at least 32" in capsys.readouterr().err
