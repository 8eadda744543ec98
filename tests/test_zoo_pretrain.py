"""The zoo trainer (jerc_eval.zoo.pretrain): determinism, continued pretraining from a checkpoint, background swap."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from jerc_eval.datasets import photodigits as pd
from jerc_eval.zoo import WEIGHTS_DIR
from jerc_eval.zoo import pretrain as P

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def small():
    return pd.build_split("train", n=128)


@pytest.fixture(scope="module")
def lay():
    """The digit layers of ``small`` and a few background crops: the JE recipes swap backgrounds."""
    return P.Layers(pd.build_layers("train", n=128), pd.background_bank(16), 32)


def _tiny(**kw):
    return {"epochs": 1, "warmup_epochs": 1, **kw}


@pytest.mark.parametrize("method", ["mae", "dino", "byol"])
def test_same_seed_same_weights(small, lay, method):
    a = P.train_method(method, small.images, 3, _tiny(), log=lambda _m: None, layers=lay)[1]
    b = P.train_method(method, small.images, 3, _tiny(), log=lambda _m: None, layers=lay)[1]
    a, b = a.get("model", a), b.get("model", b)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = P.train_method(method, small.images, 4, _tiny(), log=lambda _m: None, layers=lay)[1]
    c = c.get("model", c)
    assert not all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("method", ["mae", "dino", "byol"])
def test_init_continues_from_the_shipped_checkpoint(small, lay, method):
    state = torch.load(WEIGHTS_DIR / P.CONFIGS[method]["file"], map_location="cpu", weights_only=True)
    enc, saved, stats = P.train_method(method, small.images, 0, _tiny(lr=1e-9), log=lambda _m: None, init=state,
                                       layers=lay)
    ref = state.get("model", state)
    own = enc.state_dict()
    floats = [k for k in own if own[k].is_floating_point() and "running" not in k and k in ref]
    assert floats
    # a learning rate of ~0: the encoder is still the checkpoint (BatchNorm statistics aside)
    assert max(float((own[k] - ref[k]).abs().max()) for k in floats) < 1e-4
    fresh = P.train_method(method, small.images, 0, _tiny(lr=1e-9), log=lambda _m: None,
                           layers=lay)[0].state_dict()
    assert max(float((fresh[k] - ref[k]).abs().max()) for k in floats) > 1e-2


def test_init_that_does_not_fit_is_refused(small, lay):
    with pytest.raises(ValueError, match="does not fit"):
        P.train_method("byol", small.images, 0, _tiny(), log=lambda _m: None, init={"nonsense.weight": torch.ones(1)},
                       layers=lay)


@pytest.mark.parametrize("method", ["dino", "byol"])
def test_je_recipes_swap_backgrounds_and_need_the_layers(small, method):
    assert all(v["bg_swap_p"] == P.SWAP_P for v in P.RECIPES[method]["views"])
    with pytest.raises(ValueError, match="layers"):
        P.train_method(method, small.images, 0, _tiny(), log=lambda _m: None)


def test_mae_sees_the_images_as_they_are():
    assert not any(v.get("bg_swap_p") for v in P.RECIPES["mae"]["views"])


def test_dino_keeps_many_more_prototypes_than_bottleneck_dimensions():
    """With K not far above the bottleneck width the student can output a uniform distribution for every input
    (all prototypes at the same angle to one direction): the collapse the ViT pilots hit (docs/zoo.md)."""
    cfg = P.CONFIGS["dino"]
    assert cfg["out_dim"] >= 32 * cfg["head_bottleneck"]
    assert P.RECIPES["dino"]["views"] and all(v["size"] == cfg["input_size"] for v in P.RECIPES["dino"]["views"])


def test_background_swap_re_renders_the_digit():
    layers = pd.build_layers("train", n=8)
    assert layers["cover"].shape == (8, 64, 64) and layers["colour"].shape == (8, 3)
    assert layers["cover"].min() >= 0 and layers["cover"].max() <= 1
    np.testing.assert_array_equal(layers["labels"], pd.build_split("train", n=8).labels)
    bank = pd.background_bank(4)
    lay = P.Layers(layers, bank, 32)
    x = torch.rand(8, 3, 32, 32)
    idx = torch.arange(8)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(lay.swap(x, idx, 0.0, g), x)
    out = lay.swap(x, idx, 1.0, torch.Generator().manual_seed(0))
    a = lay.cover
    # every output is some bank crop under the image's own digit layer
    cands = [lay.bank[j] * (1 - a) + lay.colour * a for j in range(len(bank))]
    err = torch.stack([(out - c).abs().amax(dim=(1, 2, 3)) for c in cands]).amin(0)
    assert float(err.max()) < 1e-6
    rec = lay.swap(x, idx, 1.0, torch.Generator().manual_seed(0), recolour_p=1.0)
    assert not torch.allclose(rec, out)


@pytest.mark.parametrize("method", ["mae", "byol"])
def test_on_epoch_sees_the_encoder_and_changes_nothing(small, lay, method):
    seen = []

    def on_epoch(epoch, enc):
        assert not enc.training
        with torch.no_grad():
            seen.append((epoch, enc(torch.zeros(2, 3, 32, 32)).shape))

    a = P.train_method(method, small.images, 5, _tiny(epochs=2), log=lambda _m: None, on_epoch=on_epoch,
                       layers=lay)[1]
    b = P.train_method(method, small.images, 5, _tiny(epochs=2), log=lambda _m: None, layers=lay)[1]
    assert [e for e, _ in seen] == [1, 2]
    a, b = a.get("model", a), b.get("model", b)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_sinkhorn_knopp_targets_use_every_prototype_equally(lay):
    g = torch.Generator().manual_seed(0)
    logits = (0.3 * torch.randn(64, 16, generator=g) + 1.2 * (torch.arange(16) == 0)) / 0.04
    soft = logits.softmax(-1).mean(0)
    assert float(soft[0]) > 0.9  # a teacher that sends almost every image to one prototype
    q = P.sinkhorn_knopp(logits, iters=3)
    assert q.shape == (64, 16) and torch.allclose(q.sum(1), torch.ones(64), atol=1e-5)
    usage = q.mean(0)  # pushed towards equipartition over the batch
    assert float(usage[0]) < 0.2
    exact = P.sinkhorn_knopp(logits, iters=200).mean(0)
    assert torch.allclose(exact, torch.full((16,), 1 / 16), atol=2e-3)
    # and DINO trains with it in place of the EMA centering
    sd = P.train_method("dino", pd.build_split("train", n=128).images, 0, _tiny(centering="sinkhorn_knopp"),
                        log=lambda _m: None, layers=lay)[1]
    assert all(torch.isfinite(v).all() for v in sd.values())


def test_one_command_trains_the_schedule_then_its_warm_restarts(small, tmp_path, monkeypatch):
    """``CONFIGS[m]["restarts"]``: the default command trains the schedule, then warm-restarts from what it saved;
    the weights equal those of the schedule run and an ``--init-from`` continuation run as two commands, and
    zoo.json records the whole budget."""
    import json

    cache = tmp_path / "data"
    cache.mkdir()
    splits = (("train", small.images, small.labels), ("test", small.images[:64], small.labels[:64]))
    for split, images, labels in splits:
        np.save(cache / f"{split}_x.npy", images)
        np.save(cache / f"{split}_y.npy", labels)
    monkeypatch.setitem(P.CONFIGS, "mae", {**P.CONFIGS["mae"], "epochs": 1, "warmup_epochs": 1, "restarts": [1]})
    common = ["--methods", "mae", "--data-cache", str(cache), "--threads", "1"]
    one, two = tmp_path / "one", tmp_path / "two"
    P.main(["--out", str(one), *common])
    P.main(["--out", str(two), "--epochs", "1", *common])
    first_sha = P._sha256(two / P.CONFIGS["mae"]["file"])
    P.main(["--out", str(two), "--init-from", str(two), "--epochs", "1", *common])
    a = torch.load(one / P.CONFIGS["mae"]["file"], weights_only=True)["model"]
    b = torch.load(two / P.CONFIGS["mae"]["file"], weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    entry = json.loads((one / "zoo.json").read_text())["encoders"]["mae_vit_zoo"]
    assert entry["epochs"] == 2 and entry["images_seen"] == 2 * (len(small.images) // 64) * 64
    assert entry["continued_from"]["file_sha256"] == first_sha and entry["continued_from"]["epochs"] == 1
    assert entry["hyperparameters"]["restarts"] == [1] and entry["sha256"] == P._sha256(one / entry["file"])


def test_a_restart_can_switch_to_an_architecture_with_the_same_weights(small, tmp_path, monkeypatch):
    """A restart given as ``{"epochs": n, "arch": name}`` trains on from the saved weights in that architecture (the
    JE ResNets' stride-2 stem); one command equals the schedule run plus an ``--init-from --arch`` continuation,
    and zoo.json names what ships: the last phase's architecture and the random-init floor of that one."""
    import json

    cache = tmp_path / "data"
    cache.mkdir()
    for split, images, labels in (("train", small.images, small.labels), ("test", small.images[:64], small.labels[:64])):
        np.save(cache / f"{split}_x.npy", images)
        np.save(cache / f"{split}_y.npy", labels)
    monkeypatch.setitem(P.CONFIGS, "byol", {**P.CONFIGS["byol"], "epochs": 1, "warmup_epochs": 1,
                                            "restarts": [{"epochs": 1, "arch": "resnet_zoo_s2"}]})
    assert P.phases("byol") == [{"epochs": 1, "arch": "resnet_zoo"}, {"epochs": 1, "arch": "resnet_zoo_s2"}]
    monkeypatch.setattr(P, "BG_BANK", 16)
    layers = pd.build_layers
    monkeypatch.setattr(pd, "build_layers", lambda split, seed=0: layers(split, n=len(small.images), seed=seed))
    common = ["--methods", "byol", "--data-cache", str(cache), "--threads", "1"]
    one, two = tmp_path / "one", tmp_path / "two"
    P.main(["--out", str(one), *common])
    P.main(["--out", str(two), "--epochs", "1", *common])
    P.main(["--out", str(two), "--init-from", str(two), "--epochs", "1", "--arch", "resnet_zoo_s2", *common])
    a = torch.load(one / P.CONFIGS["byol"]["file"], weights_only=True)
    b = torch.load(two / P.CONFIGS["byol"]["file"], weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for out in (one, two):
        entry = json.loads((out / "zoo.json").read_text())["encoders"]["byol_resnet_zoo"]
        assert entry["arch"] == "resnet_zoo_s2" and entry["arch_kwargs"]["stem_stride"] == 2
        assert entry["epochs"] == 2 and entry["continued_from"]["epochs"] == 1
    with pytest.raises(SystemExit):  # --arch names the architecture of one --epochs phase
        P.main(["--out", str(two), "--arch", "resnet_zoo_s2", *common])
