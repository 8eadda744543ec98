"""CE / mCE / relative mCE against hand computations; the packaged ImageNet-C table; the paper's Drop values."""
import json
import math
import random
from pathlib import Path

import pytest

from jerc_eval import metrics as m

SHARED = Path("/work/shared/data")
COMMON = ["gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
          "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression"]
EXTRA = ["speckle_noise", "gaussian_blur", "spatter", "saturate"]


def _raw_alexnet():
    """The AlexNet table read straight from the package file, without the metrics module."""
    table = json.loads((Path(m.__file__).parent / "data" / "imagenet_c.json").read_text())
    return table["alexnet_top1_error"], table["alexnet_clean_top1_error"]


def _flat(value):
    return {c: {s: value for s in range(1, 6)} for c in COMMON}


def test_mce_equals_hand_computation():
    alex, _ = _raw_alexnet()
    errors = {c: {s: 0.05 * s + 0.01 * i for s in range(1, 6)} for i, c in enumerate(COMMON)}
    hand = 0.0
    for c in COMMON:
        num = den = 0.0
        for s in range(1, 6):
            num += errors[c][s]
            den += alex[c][s - 1]
        hand += num / den
    assert m.mce(errors) == pytest.approx(100 * hand / 15, rel=1e-12)
    # one corruption by hand with the published numbers: sum of AlexNet's gaussian_noise errors is 4.43214
    assert m.corruption_error({s: 0.5 for s in range(1, 6)}, m.alexnet_errors()["gaussian_noise"]) == \
        pytest.approx(2.5 / 4.43214, rel=1e-9)


def test_alexnet_against_itself_is_100():
    alex = m.alexnet_errors()
    assert m.mce(alex) == pytest.approx(100.0)
    assert m.relative_mce(alex, m.alexnet_clean_error()) == pytest.approx(100.0)
    assert m.alexnet_clean_error() == 0.4348


def test_relative_mce_hand_computation():
    alex, alex_clean = _raw_alexnet()
    clean = 0.2
    # every corruption degrades half as much as AlexNet's (E_s - E_clean = 0.5 (A_s - A_clean)): relative CE = 0.5
    errors = {c: {s: clean + 0.5 * (alex[c][s - 1] - alex_clean) for s in range(1, 6)} for c in COMMON}
    assert m.relative_mce(errors, clean) == pytest.approx(50.0)
    num = sum(errors["fog"][s] - clean for s in range(1, 6))
    den = sum(a - alex_clean for a in alex["fog"])
    assert m.relative_corruption_error(errors["fog"], clean, m.alexnet_errors()["fog"], alex_clean) == \
        pytest.approx(num / den)


def test_custom_baseline_replaces_alexnet():
    base = _flat(0.4)
    assert m.mce(_flat(0.2), baseline=base) == pytest.approx(50.0)
    assert m.mce(base, baseline=base) == pytest.approx(100.0)
    # relative: degradation 0.1 vs the baseline's 0.2 -> 50
    assert m.relative_mce(_flat(0.2), 0.1, baseline=base, baseline_clean_error=0.2) == pytest.approx(50.0)
    with pytest.raises(m.MCEInputError, match="baseline_clean_error"):
        m.relative_mce(_flat(0.2), 0.1, baseline=base)


def test_unnormalized_mce_is_the_mean_error():
    errors = {c: {s: 0.1 * s for s in range(1, 6)} for c in COMMON}
    assert m.unnormalized_mce(errors) == pytest.approx(30.0)
    assert "UNNORMALIZED" in m.unnormalized_mce.__doc__


def test_extra_corruptions_never_count():
    assert list(m.mce_corruptions()) == COMMON
    assert not set(EXTRA) & set(m.mce_corruptions())
    errors = _flat(0.3)
    with_extras = dict(errors, **{c: {s: 0.99 for s in range(1, 6)} for c in EXTRA})
    assert m.mce(with_extras) == m.mce(errors)
    assert m.unnormalized_mce(with_extras) == m.unnormalized_mce(errors)
    # a model evaluated on the 4 extras only cannot get an mCE
    with pytest.raises(m.MCEInputError):
        m.mce({c: {s: 0.5 for s in range(1, 6)} for c in EXTRA})


def test_missing_corruption_is_detected_not_averaged_away():
    errors = _flat(0.3)
    del errors["fog"]
    with pytest.raises(m.MCEInputError, match="fog") as info:
        m.mce(errors)
    assert info.value.missing == ["fog"]
    for fn in (m.unnormalized_mce, lambda e: m.relative_mce(e, 0.1)):
        with pytest.raises(m.MCEInputError, match="fog"):
            fn(errors)
    errors = _flat(0.3)
    del errors["snow"][3]
    assert m.missing_for_mce(errors) == ["snow@3"]
    with pytest.raises(m.MCEInputError, match="snow@3"):
        m.mce(errors)
    assert m.missing_for_mce(_flat(0.3)) == []
    # a custom baseline that lacks a corruption is named too
    base = _flat(0.4)
    del base["contrast"]
    assert m.missing_for_mce(_flat(0.3), base) == ["contrast (baseline)"]


def test_severity_mismatch_is_an_error():
    with pytest.raises(m.MCEInputError, match="same severities"):
        m.corruption_error({1: 0.2, 5: 0.4}, {1: 0.3, 3: 0.4, 5: 0.5})


def test_keyed_by_name_not_position():
    alex = m.alexnet_errors()
    errors = {c: {s: min(1.0, alex[c][s] * (0.3 + 0.04 * i)) for s in range(1, 6)} for i, c in enumerate(COMMON)}
    items = list(errors.items())
    random.Random(0).shuffle(items)
    shuffled = {c: {str(s): e for s, e in reversed(list(sev.items()))} for c, sev in items}  # str keys, reversed
    assert list(shuffled) != COMMON
    assert m.mce(shuffled) == pytest.approx(m.mce(errors), rel=1e-12)
    assert m.relative_mce(shuffled, 0.2) == pytest.approx(m.relative_mce(errors, 0.2), rel=1e-12)


def test_errors_from_rows():
    rows = [{"encoder": "a", "corruption": "clean", "severity": 0, "accuracy": 0.9},
            {"encoder": "a", "corruption": "fog", "severity": 1, "accuracy": 0.7},
            {"encoder": "b", "corruption": "fog", "severity": 1, "accuracy": 0.1}]
    errors, clean = m.errors_from_rows(rows, "a")
    assert errors == {"fog": {1: pytest.approx(0.3)}} and clean == pytest.approx(0.1)


def test_regression_beyond_ci():
    loss, margin, excess = m.regression_beyond_ci(0.70, (0.68, 0.72), 0.80, (0.785, 0.815))
    assert loss == pytest.approx(10.0)
    assert margin == pytest.approx(100 * math.hypot(0.02, 0.015))
    assert excess == pytest.approx(10.0 - margin)
    assert m.regression_beyond_ci(0.81, (0.79, 0.83), 0.80, (0.78, 0.82))[2] == 0.0  # an improvement


def test_packaged_table_loads_through_importlib_resources():
    table = m.imagenet_c_table()
    assert "AlexNet" in table["about"] and table["provenance"]
    assert sorted(table["families"]) == ["blur", "digital", "extra", "noise", "weather"]
    assert all(len(v) == 5 for v in table["alexnet_top1_error"].values())
    assert len(table["alexnet_top1_error"]) == 19
    table["common_in_mce"].clear()  # callers get a copy
    assert len(m.mce_corruptions()) == 15


@pytest.mark.skipif(not (SHARED / "imagenet_c.json").is_file(), reason="shared imagenet_c.json not present")
def test_packaged_table_matches_shared_facts():
    shared = json.loads((SHARED / "imagenet_c.json").read_text())
    table = m.imagenet_c_table()
    for key in ("families", "common_in_mce", "severities", "alexnet_top1_error", "alexnet_clean_top1_error",
                "about"):
        assert table[key] == shared[key], key


@pytest.mark.skipif(not (SHARED / "paper_table1.json").is_file(), reason="shared paper_table1.json not present")
def test_paper_table1_drop_reproduces():
    paper = json.loads((SHARED / "paper_table1.json").read_text())
    cols = paper["columns"]
    i1, i5, idrop = cols.index("S1"), cols.index("S5"), cols.index("drop_percent")
    checked = 0
    for enc, per in paper["rows"].items():
        drops = []
        for corr, vals in per.items():
            drop = m.paper_drop(vals[i1] / 100, vals[i5] / 100)
            assert round(drop, 1) == pytest.approx(vals[idrop]), (enc, corr)
            drops.append(round(drop, 1))
            checked += 1
        # the paper averages its rounded per-corruption Drops (MAE: unrounded mean 25.04, rounded-first 25.07)
        assert round(m.mean(drops), 1) == pytest.approx(paper["mean_drop_percent"][enc]), enc
    assert checked == 9
