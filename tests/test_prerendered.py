"""Pre-rendered suites read released corrupted sets in the CIFAR-10-C and ImageNet-C layouts, chunk by chunk."""
import json
import shutil

import numpy as np
import pytest
from PIL import Image

import jerc_eval
from jerc_eval import engine, pipeline
from jerc_eval.api import CorruptionSuite
from jerc_eval.default_plugins.prerendered import CIFAR10C, ImageNetCFolder
from jerc_eval.errors import DataError, UsageError


@pytest.fixture(scope="module")
def cifar_c(tiny_npz, tmp_path_factory):
    """CIFAR-10-C layout for the tiny test set: severities stacked, labels repeated 5 times."""
    root = tmp_path_factory.mktemp("cifar10c")
    z = np.load(tiny_npz)
    x, y = z["x_test"], z["y_test"]
    for name, fn in {"contrast": lambda im, s: (im * (1 - 0.15 * s)).astype(np.uint8),
                     "gaussian_noise": lambda im, s: np.clip(im + 20.0 * s * np.random.default_rng(s).standard_normal(
                         im.shape), 0, 255).astype(np.uint8)}.items():
        np.save(root / f"{name}.npy", np.concatenate([fn(x, s) for s in range(1, 6)]))
    np.save(root / "labels.npy", np.tile(y, 5))
    return root


def _cfg(ckpt, npz, out, **kw):
    return dict(encoders=["dino"], encoder_options={"dino": {"checkpoint": str(ckpt["dino"])}}, dataset="npz",
                dataset_options={"path": str(npz)}, out=str(out), floors=False, probe_options={"c_steps": 2}, **kw)


def test_cifar10c_files_are_read_not_computed(checkpoints, tiny_npz, cifar_c, tmp_path):
    res = jerc_eval.evaluate(**_cfg(checkpoints, tiny_npz, tmp_path / "o", suite="cifar10-c",
                                    suite_options={"root": str(cifar_c)}, severities=[1, 5]))
    assert list(res["suite"]["corruptions"]) == ["gaussian_noise", "contrast"]
    assert res["suite"]["backend"] == "prerendered"
    rows = {(r["corruption"], r["severity"]): r for r in res["rows"]}
    assert rows[("contrast", 5)]["n"] == 120


def test_cifar10c_wrong_labels_rejected(checkpoints, tiny_npz, cifar_c, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in cifar_c.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    np.save(bad / "labels.npy", np.zeros(600, dtype=np.int64))
    with pytest.raises(DataError, match="labels.npy does not match"):
        jerc_eval.evaluate(**_cfg(checkpoints, tiny_npz, tmp_path / "o", suite="cifar10-c",
                                  suite_options={"root": str(bad)}))


def _imagenet_c(root):
    """ImageNet-C layout for 2 classes x 6 images (40 px): clean ROOT/val/{train,test}/<class>/ and corrupted
    ROOT/imagenet-c/fog/<severity>/<class>/, files named alike."""
    rng = np.random.default_rng(0)
    clean, corrupted = root / "val", root / "imagenet-c"
    for cls in ("n01", "n02"):
        for i in range(6):
            im = rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)
            for split in ("train", "test"):
                (clean / split / cls).mkdir(parents=True, exist_ok=True)
                Image.fromarray(im).save(clean / split / cls / f"{i}.png")
            for s in (1, 2):
                (corrupted / "fog" / str(s) / cls).mkdir(parents=True, exist_ok=True)
                Image.fromarray((im // (s + 1)).astype(np.uint8)).save(corrupted / "fog" / str(s) / cls / f"{i}.png")
    return clean, corrupted


def _folder_cfg(ckpt, clean, corrupted, out, **kw):
    return dict(encoders=["dino"], encoder_options={"dino": {"checkpoint": str(ckpt["dino"])}},
                dataset="imagefolder", dataset_options={"root": str(clean)}, suite="imagenet-c-folder",
                suite_options={"root": str(corrupted)}, severities=[1, 2], out=str(out), floors=False,
                probe_options={"c_steps": 2}, **kw)


def test_imagenet_c_folder_layout(checkpoints, tmp_path):
    clean, corrupted = _imagenet_c(tmp_path)
    res = jerc_eval.evaluate(**_folder_cfg(checkpoints, clean, corrupted, tmp_path / "o"))
    assert [(r["corruption"], r["severity"], r["n"]) for r in res["rows"]] == [
        ("clean", 0, 12), ("fog", 1, 12), ("fog", 2, 12)]


# ------------------------------------------------------------------------------------ streaming (issue #5)
def _no_load_cell(monkeypatch):
    """The built-in suites' load_cell raises: the streaming path must read cells with iter_cell only."""
    def load_cell(self, *args, **kw):
        raise AssertionError("load_cell reads a whole cell; the pipeline must stream pre-rendered cells")

    for cls in (CIFAR10C, ImageNetCFolder):
        monkeypatch.setattr(cls, "load_cell", load_cell)


def _record_chunks(monkeypatch, cls):
    seen = []
    real = cls.iter_cell

    def iter_cell(self, corruption, severity, n, chunk):
        for imgs in real(self, corruption, severity, n, chunk):
            seen.append((corruption, severity, len(imgs)))
            yield imgs

    monkeypatch.setattr(cls, "iter_cell", iter_cell)
    return seen


def _no_compute(monkeypatch):
    def extract(*args, **kw):
        raise AssertionError("features were extracted before the suite's cells were validated")

    monkeypatch.setattr(pipeline, "extract", extract)


def _evidence(res):
    return json.dumps({k: v for k, v in res["alignment_evidence"].items() if k != "timing_s"}, sort_keys=True)


def test_cifar10c_streams_chunks_smaller_than_a_cell(checkpoints, tiny_npz, cifar_c, tmp_path, monkeypatch):
    _no_load_cell(monkeypatch)
    kw = dict(suite="cifar10-c", suite_options={"root": str(cifar_c)}, severities=[1, 5], batch_size=16, workers=1)
    cache = dict(no_cache=False, cache_dir=str(tmp_path / "cache"))
    monkeypatch.setattr(pipeline, "STREAM_CHUNK", 4096)  # larger than the 120-image cells: one chunk per cell
    big = jerc_eval.evaluate(**_cfg(checkpoints, tiny_npz, tmp_path / "big", alignment=False, **cache, **kw))
    monkeypatch.setattr(pipeline, "STREAM_CHUNK", 40)  # rounded down to 32: two batches of 16
    seen = _record_chunks(monkeypatch, CIFAR10C)
    small = jerc_eval.evaluate(**_cfg(checkpoints, tiny_npz, tmp_path / "small", no_cache=True, **kw))
    assert small["rows"] == big["rows"]
    chunks = [(c, s, k) for c in ("gaussian_noise", "contrast") for s in (1, 5) for k in (32, 32, 32, 24)]
    assert seen == chunks
    seen.clear()
    # features cached, evidence not: the evidence's subset of every cell is read chunk by chunk too
    warm = jerc_eval.evaluate(**_cfg(checkpoints, tiny_npz, tmp_path / "warm", **cache, **kw))
    assert warm["rows"] == big["rows"] and _evidence(warm) == _evidence(small)
    assert seen == chunks


def test_imagenet_c_folder_streams_chunks_smaller_than_a_cell(checkpoints, tmp_path, monkeypatch):
    clean, corrupted = _imagenet_c(tmp_path)
    _no_load_cell(monkeypatch)
    monkeypatch.setattr(pipeline, "STREAM_CHUNK", 4096)
    big = jerc_eval.evaluate(**_folder_cfg(checkpoints, clean, corrupted, tmp_path / "big", batch_size=4,
                                           no_cache=True))
    monkeypatch.setattr(pipeline, "STREAM_CHUNK", 10)  # rounded down to 8: chunks of 8 + 4 for the 12 images
    seen = _record_chunks(monkeypatch, ImageNetCFolder)
    small = jerc_eval.evaluate(**_folder_cfg(checkpoints, clean, corrupted, tmp_path / "small", batch_size=4,
                                           no_cache=True))
    assert small["rows"] == big["rows"] and _evidence(small) == _evidence(big)
    assert seen == [("fog", 1, 8), ("fog", 1, 4), ("fog", 2, 8), ("fog", 2, 4)]


def test_imagenet_c_folder_iter_cell_order_and_labels(tmp_path):
    _, corrupted = _imagenet_c(tmp_path)
    suite = ImageNetCFolder(root=str(corrupted))
    chunks = list(suite.iter_cell("fog", 2, 12, 5))
    assert [len(c) for c in chunks] == [5, 5, 2]
    files = [corrupted / "fog" / "2" / cls / f"{i}.png" for cls in ("n01", "n02") for i in range(6)]
    assert np.array_equal(np.concatenate(chunks), np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files]))
    suite.validate_cells([("fog", 1), ("fog", 2)], np.repeat([0, 1], 6))
    with pytest.raises(DataError, match="do not line up"):
        suite.validate_cells([("fog", 2)], np.repeat([1, 0], 6))
    Image.fromarray(np.zeros((36, 36, 3), np.uint8)).save(corrupted / "fog" / "2" / "n02" / "5.png")
    with pytest.raises(DataError, match="differ in size"):
        list(suite.iter_cell("fog", 2, 12, 5))


def test_imagenet_c_folder_missing_or_short_cells_fail_before_compute(checkpoints, tmp_path, monkeypatch):
    clean, corrupted = _imagenet_c(tmp_path)
    _no_compute(monkeypatch)
    (corrupted / "fog" / "2" / "n02" / "3.png").unlink()
    with pytest.raises(DataError, match="fog/2 holds 11 images but the test set has 12"):
        jerc_eval.evaluate(**_folder_cfg(checkpoints, clean, corrupted, tmp_path / "o"))
    shutil.rmtree(corrupted / "fog" / "2")
    with pytest.raises(DataError, match="is missing"):
        jerc_eval.evaluate(**_folder_cfg(checkpoints, clean, corrupted, tmp_path / "o"))


def test_cifar10c_short_file_fails_before_compute(checkpoints, tiny_npz, cifar_c, tmp_path, monkeypatch):
    bad = tmp_path / "bad"
    shutil.copytree(cifar_c, bad)
    np.save(bad / "contrast.npy", np.load(bad / "contrast.npy")[:-1])
    _no_compute(monkeypatch)
    with pytest.raises(DataError, match="contrast.npy holds 599 images, expected 5 x 120"):
        jerc_eval.evaluate(**_cfg(checkpoints, tiny_npz, tmp_path / "o", suite="cifar10-c",
                                  suite_options={"root": str(bad)}, severities=[5]))
    np.save(bad / "contrast.npy", np.zeros((600, 32, 32), np.uint8))
    with pytest.raises(DataError, match=r"shape \(600, 32, 32\)"):
        CIFAR10C(root=str(bad)).validate_cells([("contrast", 1)], np.zeros(120))


def test_matched_protocol_needs_corrupted_train_images(checkpoints, tiny_npz, cifar_c, tmp_path, monkeypatch):
    _no_compute(monkeypatch)
    with pytest.raises(UsageError, match="corrupted train images"):
        jerc_eval.evaluate(**_cfg(checkpoints, tiny_npz, tmp_path / "o", suite="cifar10-c", probe_fit_on="matched",
                                  suite_options={"root": str(cifar_c)}))


class OnlyLoadCell(CorruptionSuite):
    """A third-party pre-rendered suite written before iter_cell existed."""

    name = "only-load-cell"
    corruptions = {"fog": "weather"}
    prerendered = True

    def load_cell(self, corruption, severity, n):
        return (np.arange(n * 12).reshape(n, 2, 2, 3) + severity).astype(np.uint8)

    def corrupt(self, images, corruption, severity, seeds):
        raise NotImplementedError


def test_default_iter_cell_slices_load_cell():
    suite = OnlyLoadCell()
    chunks = list(suite.iter_cell("fog", 2, 11, 4))
    assert [len(c) for c in chunks] == [4, 4, 3]
    assert np.array_equal(np.concatenate(chunks), suite.load_cell("fog", 2, 11))
    got = list(engine.read_chunks(suite, [("fog", 1), ("fog", 2)], 11, 4))
    assert [(cell, a, b) for cell, a, b, _ in got] == [(("fog", s), a, min(a + 4, 11)) for s in (1, 2)
                                                       for a in (0, 4, 8)]
    assert np.array_equal(np.concatenate([x for cell, _, _, x in got if cell == ("fog", 1)]),
                          suite.load_cell("fog", 1, 11))
    suite.validate_cells([("fog", 1)], np.zeros(11))  # the default checks nothing


def test_read_chunks_rejects_a_suite_that_yields_the_wrong_images():
    class Short(OnlyLoadCell):
        def iter_cell(self, corruption, severity, n, chunk):
            yield self.load_cell(corruption, severity, n)[:chunk]

    class Fixed(OnlyLoadCell):
        def iter_cell(self, corruption, severity, n, chunk):
            yield from CorruptionSuite.iter_cell(self, corruption, severity, n, 4)  # ignores the chunk asked for

    with pytest.raises(DataError, match="gave 4 images for fog/1 but the test set has 11"):
        list(engine.read_chunks(Short(), [("fog", 1)], 11, 4))
    with pytest.raises(DataError, match="iter_cell must yield"):
        list(engine.read_chunks(Fixed(), [("fog", 1)], 11, 3))


def test_plugin_suite_with_only_load_cell_runs(checkpoints, tiny_npz, cifar_c, tmp_path, monkeypatch):
    plugin = tmp_path / "legacy_suite.py"
    plugin.write_text(
        "from jerc_eval.api import CorruptionSuite\n"
        "from jerc_eval.default_plugins.prerendered import CIFAR10C\n"
        "from jerc_eval.hookspecs import hookimpl\n\n\n"
        "class Legacy(CIFAR10C):\n"
        "    name = 'legacy-c'\n"
        "    iter_cell = CorruptionSuite.iter_cell  # load_cell only, as before iter_cell existed\n"
        "    validate_cells = CorruptionSuite.validate_cells\n\n\n"
        "@hookimpl\n"
        "def register_corruption_suites(register):\n"
        "    register(Legacy)\n")
    monkeypatch.setattr(pipeline, "STREAM_CHUNK", 40)
    kw = dict(suite_options={"root": str(cifar_c)}, severities=[3], alignment=False, batch_size=16, workers=1,
              corruptions=["contrast"])
    new = jerc_eval.evaluate(**_cfg(checkpoints, tiny_npz, tmp_path / "new", suite="cifar10-c", **kw))
    old = jerc_eval.evaluate(plugin_files=(str(plugin),),
                             **_cfg(checkpoints, tiny_npz, tmp_path / "old", suite="legacy-c", **kw))
    strip = [{k: v for k, v in r.items() if k != "suite"} for r in old["rows"]]
    assert strip == [{k: v for k, v in r.items() if k != "suite"} for r in new["rows"]]
