"""Pre-rendered suites read released corrupted sets in the CIFAR-10-C and ImageNet-C layouts."""
import numpy as np
import pytest
from PIL import Image

import jerc_eval
from jerc_eval.errors import DataError


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


def test_imagenet_c_folder_layout(checkpoints, tmp_path):
    rng = np.random.default_rng(0)
    clean, corrupted = tmp_path / "val", tmp_path / "imagenet-c"
    for cls in ("n01", "n02"):
        for i in range(6):
            im = rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)
            for split in ("train", "test"):
                (clean / split / cls).mkdir(parents=True, exist_ok=True)
                Image.fromarray(im).save(clean / split / cls / f"{i}.png")
            for s in (1, 2):
                (corrupted / "fog" / str(s) / cls).mkdir(parents=True, exist_ok=True)
                Image.fromarray((im // (s + 1)).astype(np.uint8)).save(corrupted / "fog" / str(s) / cls / f"{i}.png")
    res = jerc_eval.evaluate(encoders=["dino"], encoder_options={"dino": {"checkpoint": str(checkpoints["dino"])}},
                             dataset="imagefolder", dataset_options={"root": str(clean)}, suite="imagenet-c-folder",
                             suite_options={"root": str(corrupted)}, severities=[1, 2], out=str(tmp_path / "o"),
                             floors=False, probe_options={"c_steps": 2})
    assert [(r["corruption"], r["severity"], r["n"]) for r in res["rows"]] == [
        ("clean", 0, 12), ("fog", 1, 12), ("fog", 2, 12)]
