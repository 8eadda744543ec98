"""Hermetic tests: no installed plugin leaks in, nothing is downloaded, caches live in tmp folders."""
from __future__ import annotations

import os

import numpy as np
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("JERC_EVAL_PLUGINS", "")  # no installed entry points unless a test allows them


@pytest.fixture(autouse=True)
def _hermetic(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("JERC_EVAL_PLUGINS", "")
    monkeypatch.delenv("JERC_EVAL_PLUGIN_FILES", raising=False)
    monkeypatch.delenv("JERC_EVAL_STRICT_PLUGINS", raising=False)
    monkeypatch.setenv("JERC_EVAL_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory):
    """Tiny encoders saved in the official layouts (MAE {'model'} + decoder keys; DINO plain; BYOL torchvision)."""
    import torch

    from jerc_eval.models import ResNet, VisionTransformer

    root = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    vit = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)
    sd = vit.state_dict()
    mae = dict(sd, mask_token=torch.zeros(1, 1, 16), **{"decoder_embed.weight": torch.zeros(16, 32),
                                                         "decoder_pred.bias": torch.zeros(192)})
    torch.save({"model": mae, "optimizer": {}, "epoch": 1}, root / "mae.pth")
    torch.save(sd, root / "dino.pth")
    res = ResNet(layers=(1, 1, 1, 1), widths=(8, 8, 16, 16))
    torch.save(res.state_dict(), root / "byol.pth")
    return {"root": root, "vit": vit, "resnet": res, "mae": root / "mae.pth", "dino": root / "dino.pth",
            "byol": root / "byol.pth"}


@pytest.fixture(scope="session")
def tiny_npz(tmp_path_factory):
    """A small learnable 32 px dataset: class = which quadrant holds a bright square, on noisy backgrounds."""
    rng = np.random.default_rng(0)

    def make(n):
        x = rng.integers(0, 120, size=(n, 32, 32, 3), dtype=np.uint8)
        y = rng.integers(0, 4, size=n)
        for i, c in enumerate(y):
            r, q = divmod(int(c), 2)
            x[i, r * 16 + 3:r * 16 + 13, q * 16 + 3:q * 16 + 13] = 250
        return x, y.astype(np.int64)

    xtr, ytr = make(240)
    xte, yte = make(120)
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    np.savez(path, x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    return path


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op torch thread for a module (the CPU is shared; avoids OpenMP oversubscription), restored after."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
