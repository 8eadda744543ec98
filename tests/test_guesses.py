"""An architecture detail the weights do not carry is never guessed silently: it is recorded in results with
the option that overrides it and warned about once; a zoo file through a generic adapter runs as the zoo built it."""
from __future__ import annotations

import numpy as np
import pytest

import jerc_eval
from jerc_eval.default_plugins.encoders import BYOLAdapter, DINOAdapter, ZooDINO, zoo_file
from jerc_eval.features import extract


@pytest.fixture(scope="module")
def small_stem(tmp_path_factory):
    """A CIFAR-style ResNet (3x3 stem): its stem stride is not in the weights."""
    import torch

    from jerc_eval.models import ResNet

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("small") / "byol_small.pth"
    torch.save(ResNet(layers=(1, 1, 1, 1), widths=(8, 8, 16, 16), stem="small").state_dict(), path)
    return path


def _run(checkpoints, tiny_npz, tmp_path, encoder, opts, said):
    return jerc_eval.evaluate(echo=said.append, encoders=[encoder], encoder_options={encoder: opts},
                              dataset="npz", dataset_options={"path": str(tiny_npz)}, corruptions=["contrast"],
                              severities=[1], out=str(tmp_path / "out"), workers=1, no_cache=True,
                              alignment=False, floors=False, probe_options={"c_steps": 2, "max_iter": 30})


def test_guessed_stem_stride_and_heads_are_recorded_and_warned(checkpoints, small_stem, tiny_npz, tmp_path):
    said: list[str] = []
    res = _run(checkpoints, tiny_npz, tmp_path, "byol", {"checkpoint": str(small_stem)}, said)
    guessed = res["encoders"]["byol"]["meta"]["guessed"]
    assert guessed["stem_stride"]["value"] == 1 and guessed["stem_stride"]["override"] == "-o stem_stride N"
    assert "image_size" in guessed  # a small-stem ResNet has no declared size: the dataset's is used
    warnings = [s for s in said if "warning" in s]
    assert len(warnings) == 2 and any("pass -o stem_stride N" in w for w in warnings)

    said.clear()
    res = _run(checkpoints, tiny_npz, tmp_path, "byol", {"checkpoint": str(small_stem), "stem_stride": 1,
                                                         "image_size": 32}, said)
    assert "guessed" not in res["encoders"]["byol"]["meta"] and not [s for s in said if "warning" in s]

    said.clear()
    res = _run(checkpoints, tiny_npz, tmp_path, "mae", {"checkpoint": str(checkpoints["mae"])}, said)
    assert res["encoders"]["mae"]["meta"]["guessed"]["num_heads"]["value"] == 1  # width 32: the table says 1
    assert any("guessed num_heads 1; pass -o num_heads N" in s for s in said)


def test_stem_stride_option_changes_the_network(small_stem):
    one = BYOLAdapter(checkpoint=str(small_stem), stem_stride=1, image_size=32).load()
    two = BYOLAdapter(checkpoint=str(small_stem), stem_stride=2, image_size=32).load()
    assert one.arch != two.arch and "stem-s2" in two.arch


@pytest.mark.parametrize("cls", [DINOAdapter, BYOLAdapter])
def test_a_zoo_file_through_a_generic_adapter_runs_as_the_zoo_built_it(cls):
    generic = cls(checkpoint=str(zoo_file(ZooDINO.zoo_filename if cls is DINOAdapter else "byol_resnet_zoo.pth")))
    loaded = generic.load()
    assert "guessed" not in loaded.meta and loaded.meta["zoo_manifest"]["arch_kwargs"]["stem_stride"] == 2
    zoo = (ZooDINO() if cls is DINOAdapter else __import__("jerc_eval.default_plugins.encoders", fromlist=["x"])
           .ZooBYOL()).load()
    assert loaded.arch == zoo.arch and loaded.preprocess == zoo.preprocess
    imgs = np.random.default_rng(0).integers(0, 255, size=(8, 32, 32, 3), dtype=np.uint8)
    np.testing.assert_array_equal(extract(loaded, imgs, 8), extract(zoo, imgs, 8))
