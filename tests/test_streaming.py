"""Corrupted cells are corrupted, encoded and dropped in chunks: results never depend on the chunk size."""
import json

import numpy as np
import pytest

import jerc_eval
from jerc_eval import pipeline
from jerc_eval.default_plugins.suites import ImageNetC
from jerc_eval.engine import corrupt_cells, corrupt_chunks


def _cfg(ckpt, npz, tmp, tag, **kw):
    cfg = dict(encoders=["mae", "dino"], encoder_options={"mae": {"checkpoint": str(ckpt["mae"])},
                                                          "dino": {"checkpoint": str(ckpt["dino"])}},
               dataset="npz", dataset_options={"path": str(npz)}, corruptions=["gaussian_noise", "contrast"],
               severities=[1, 5], out=str(tmp / tag), workers=1, batch_size=16, floors=False, no_cache=True,
               probe_options={"c_steps": 2, "max_iter": 50})
    cfg.update(kw)
    return cfg


def _same(a, b):
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _record_extract(monkeypatch):
    sizes = []
    real = pipeline.extract

    def extract(encoder, images, *args, **kw):
        sizes.append(len(images))
        return real(encoder, images, *args, **kw)

    monkeypatch.setattr(pipeline, "extract", extract)
    return sizes


def test_chunks_match_whole_cells():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, size=(11, 32, 32, 3), dtype=np.uint8)
    cells = [("gaussian_noise", 2), ("contrast", 4)]
    whole = dict(corrupt_cells(ImageNetC(), images, cells, run_seed=3, workers=1))
    for workers, chunk, task, overlap in ((1, 4, 3, True), (2, 3, 1, True), (2, 100, 4, True), (2, 4, 250, False),
                                          (2, 100, 250, False)):
        got: dict = {}
        for cell, a, b, imgs in corrupt_chunks(ImageNetC(), images, cells, 3, workers, chunk=chunk, task=task,
                                               overlap=overlap):
            assert len(imgs) == b - a <= chunk
            got.setdefault(cell, []).append((a, imgs))
        assert list(got) == cells
        for cell in cells:
            assert [a for a, _ in got[cell]] == list(range(0, 11, chunk))
            assert np.array_equal(np.concatenate([x for _, x in got[cell]]), whole[cell])


def test_small_chunks_give_the_rows_of_one_chunk(checkpoints, tiny_npz, tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "STREAM_CHUNK", 4096)  # larger than the 120 test images: one chunk per cell
    big = jerc_eval.evaluate(**_cfg(checkpoints, tiny_npz, tmp_path, "big"))
    monkeypatch.setattr(pipeline, "STREAM_CHUNK", 40)  # rounded down to 32, two batches of 16
    sizes = _record_extract(monkeypatch)
    small = jerc_eval.evaluate(**_cfg(checkpoints, tiny_npz, tmp_path, "small"))
    assert small["rows"] == big["rows"] and _same(small["summary"], big["summary"])
    evidence = [{k: v for k, v in r["alignment_evidence"].items() if k != "timing_s"} for r in (small, big)]
    assert _same(*evidence)  # the corrupted subset kept for the evidence is the same too
    corrupted = [n for n in sizes if n <= 32]  # 4 cells x 2 encoders, 120 images each: 32 + 32 + 32 + 24
    assert corrupted == [32, 32, 32, 32, 32, 32, 24, 24] * 4  # chunk by chunk, each encoder in turn
    assert sorted(set(sizes) - {32, 24}) == [120, 240]  # only the clean sets are encoded whole


def test_matched_protocol_streams_both_splits_and_any_worker_count(checkpoints, tiny_npz, tmp_path, monkeypatch):
    kw = dict(probe_fit_on="matched", encoders=["dino"], severities=[2], alignment=False,
              encoder_options={"dino": {"checkpoint": str(checkpoints["dino"])}})
    monkeypatch.setattr(pipeline, "STREAM_CHUNK", 4096)
    big = jerc_eval.evaluate(**_cfg(checkpoints, tiny_npz, tmp_path, "big", workers=2, **kw))
    monkeypatch.setattr(pipeline, "STREAM_CHUNK", 48)
    # in-process corruption of the test and train streams interleaves: neither may see the other's images
    small = jerc_eval.evaluate(**_cfg(checkpoints, tiny_npz, tmp_path, "small", workers=1, **kw))
    assert small["rows"] == big["rows"]


def test_damaged_cached_cell_is_recomputed(checkpoints, tiny_npz, tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "STREAM_CHUNK", 32)
    kw = dict(no_cache=False, cache_dir=str(tmp_path / "cache"), alignment=False, severities=[3])
    cold = jerc_eval.evaluate(**_cfg(checkpoints, tiny_npz, tmp_path, "a", **kw))
    files = sorted((tmp_path / "cache" / "features").rglob("*.entry"))
    assert len(files) == 2 * (2 + 2)  # clean train + test, 2 cells, per encoder
    for f in files:
        f.write_bytes(b"damaged")
    warm = jerc_eval.evaluate(**_cfg(checkpoints, tiny_npz, tmp_path, "b", **kw))
    assert warm["rows"] == cold["rows"]


@pytest.mark.parametrize("bs,chunk", [(256, 1024), (300, 1024), (16, 8), (7, 50)])
def test_chunk_is_a_whole_number_of_batches(bs, chunk, monkeypatch):
    from types import SimpleNamespace

    monkeypatch.setattr(pipeline, "STREAM_CHUNK", chunk)
    got = pipeline.stream_chunk(SimpleNamespace(cfg=SimpleNamespace(batch_size=bs)))
    assert got % bs == 0 and got >= 1 and (got <= chunk or got == bs)
