"""Checkpoint layouts people actually have (issue 15): torchvision ResNets without num_batches_tracked, MAE's
global-pool feature, what inspect-checkpoint says about MAE / DINO / solo-learn files, one input-size rule."""
from __future__ import annotations

import pickle

import pytest
import torch
import torch.nn.functional as F

from jerc_eval.default_plugins.encoders import BYOLAdapter, DINOAdapter, MAEAdapter, ZooBYOL
from jerc_eval.errors import CheckpointError
from jerc_eval.inspect_checkpoint import format_report, inspect, mae_sincos_pos_embed
from jerc_eval.models import ResNet, VisionTransformer


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _torchvision(name: str):
    import torchvision

    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so a wrong buffer would show in the features
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model


def _without_counters(model) -> dict:
    return {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}


@pytest.mark.parametrize("name, adapter", [("resnet18", BYOLAdapter), ("resnet50", BYOLAdapter),
                                           ("resnet50", DINOAdapter)])
def test_torchvision_resnet_without_num_batches_tracked_loads_strictly(tmp_path, name, adapter):
    """byol-convert's pretrain_res50x1.pth.tar: a torchvision state dict with fc.* and no num_batches_tracked."""
    model = _torchvision(name)
    sd = _without_counters(model)
    assert "fc.weight" in sd and not any(k.endswith("num_batches_tracked") for k in sd)
    path = tmp_path / "pretrain_res50x1.pth.tar"
    torch.save(sd, path)
    enc = adapter(checkpoint=path).load()
    n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert enc.meta["filled_keys"] == {"num_batches_tracked": n_bn, "value": 0,
                                       "why": "absent from the file; eval-mode BatchNorm does not read it"}
    assert all(int(b) == 0 for k, b in enc.module.state_dict().items() if k.endswith("num_batches_tracked"))
    model.fc = torch.nn.Identity()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(enc.module(x), model(x))
    assert enc.preprocess.input_size == 224  # an ImageNet ResNet: the declared size, for -e byol as for -e dino


def test_counters_present_are_not_recorded_as_filled(tmp_path):
    model = _torchvision("resnet18")
    path = tmp_path / "r18.pth"
    torch.save(model.state_dict(), path)
    assert "filled_keys" not in BYOLAdapter(checkpoint=path).load().meta


@pytest.mark.parametrize("drop", ["bn1.running_mean", "layer1.0.bn1.num_batches_tracked"])
def test_any_other_missing_key_is_still_an_error(tmp_path, drop):
    model = _torchvision("resnet18")
    sd = _without_counters(model) if drop.endswith("running_mean") else dict(model.state_dict())
    sd.pop(drop)  # a running mean; or one counter of many (not the no-counters layout): both are missing keys
    path = tmp_path / "broken.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match=r"1 missing, e\.g\. " + drop.replace(".", r"\.")):
        BYOLAdapter(checkpoint=path).load()


def test_input_size_rule():
    """ImageNet-pretrained ResNets run at their declared 224 unless -o image_size overrides; small 3x3-stem ResNets
    at the dataset's size; the zoo at the size zoo.json records (32), so the default run is unchanged."""
    small = BYOLAdapter.__new__(BYOLAdapter)
    small.opts, small._manifest, small.guessed = {"image_size": 0}, {}, {}  # not a zoo file
    assert small.input_size({"stem_kernel": 3}) == 0 and small.input_size({"stem_kernel": 7}) == 224
    assert small.guessed["image_size"]["value"] == 0  # the dataset's size: said, not silent
    small.opts = {"image_size": 96}
    assert small.input_size({"stem_kernel": 7}) == 96
    assert ZooBYOL().load().preprocess.input_size == ZooBYOL().entry()["hyperparameters"]["input_size"] == 32
    assert ZooBYOL(image_size=48).load().preprocess.input_size == 48


# ----------------------------------------------------------------------------------------------------- MAE
def _mae_file(tmp_path, vit, name="mae_pretrain_vit_tiny.pth"):
    sd = dict(vit.state_dict(), mask_token=torch.zeros(1, 1, 16), **{"decoder_embed.weight": torch.zeros(16, 32)})
    path = tmp_path / name
    torch.save({"model": sd}, path)
    return path


def test_mae_global_pool_is_mae_finetuning_definition(tmp_path):
    torch.manual_seed(0)
    vit = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2).eval()
    with torch.no_grad():  # a final norm far from identity: a feature that used it would differ
        vit.norm.weight.uniform_(0.2, 3.0)
        vit.norm.bias.uniform_(-1, 1)
    path = _mae_file(tmp_path, vit)
    enc = MAEAdapter(checkpoint=path, num_heads=2, pool="global").load()
    assert enc.feature_protocol == "mae-global-pool-patch-tokens-before-final-norm+fc_norm(w=1,b=0)"
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():  # models_vit.py forward_features, global_pool=True, written out
        t = vit.patch_embed.proj(x).flatten(2).transpose(1, 2)
        t = torch.cat([vit.cls_token.expand(3, -1, -1), t], 1) + vit.pos_embed
        for blk in vit.blocks:
            t = blk(t)
        want = F.layer_norm(t[:, 1:, :].mean(dim=1), (32,), torch.ones(32), torch.zeros(32), eps=1e-6)
        got = enc.module(x)
        avg = MAEAdapter(checkpoint=path, num_heads=2, pool="avg").load()
        assert avg.feature_protocol == "avg-patch-tokens-after-final-norm"
        assert not torch.allclose(avg.module(x), got, atol=1e-3)  # today's avg: mean after the final norm
    assert torch.allclose(got, want, atol=1e-5)


def test_mae_global_pool_matches_timm_fc_norm(tmp_path):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    vit = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2).eval()
    path = _mae_file(tmp_path, vit)
    enc = MAEAdapter(checkpoint=path, num_heads=2, pool="global").load()
    ref = timm.models.vision_transformer.VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2,
                                                           num_heads=2, num_classes=0, global_pool="avg",
                                                           fc_norm=True).eval()
    missing, unexpected = ref.load_state_dict(vit.state_dict(), strict=False)
    assert set(missing) == {"fc_norm.weight", "fc_norm.bias"} and set(unexpected) == {"norm.weight", "norm.bias"}
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert torch.allclose(enc.module(x), ref(x), atol=1e-5)


def _sincos_vit(dim=32, depth=1, patch=8, img=32):
    torch.manual_seed(0)
    vit = VisionTransformer(img_size=img, patch_size=patch, embed_dim=dim, depth=depth, num_heads=max(1, dim // 64))
    with torch.no_grad():
        vit.pos_embed.copy_(torch.from_numpy(mae_sincos_pos_embed(dim, img // patch)).float()[None])
    return vit


def test_inspect_recognises_mae_by_content_not_name(tmp_path):
    mae = tmp_path / "weights.pth"  # timm-style MAE encoder: no decoder, an uninformative name
    torch.save(_sincos_vit().state_dict(), mae)
    info = inspect(mae)
    assert info["suggestion"]["encoder"] == "mae" and "sin-cos" in info["format"]
    learned = tmp_path / "mae_vit_small.pth"  # named like MAE, but a learned position table
    torch.manual_seed(1)
    torch.save(VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=1).state_dict(), learned)
    info = inspect(learned)
    assert info["suggestion"]["encoder"] == "dino" and "not MAE" in info["format"]


@pytest.mark.parametrize("dim, opts", [(384, {"n_last_blocks": 4}), (768, {"n_last_blocks": 1, "avgpool": "true"})])
def test_inspect_suggests_dino_linear_eval_readout(tmp_path, dim, opts):
    torch.manual_seed(0)
    path = tmp_path / "checkpoint.pth"
    torch.save(VisionTransformer(img_size=32, patch_size=16, embed_dim=dim, depth=1, num_heads=6).state_dict(), path)
    info = inspect(path)
    s = info["suggestion"]
    assert s["encoder"] == "dino" and {k: s["options"][k] for k in opts} == opts
    text = format_report(info)
    assert "-o n_last_blocks " + str(opts["n_last_blocks"]) in text and "linear-eval readout" in text


def test_inspect_labels_solo_learn_lightning_not_lightly(tmp_path):
    model = _torchvision("resnet18")
    sd = {f"backbone.{k}": v for k, v in model.state_dict().items() if not k.startswith("fc.")}
    sd.update({"projector.0.weight": torch.zeros(4, 512), "predictor.0.weight": torch.zeros(4, 4)})
    path = tmp_path / "byol-ep=99.ckpt"
    torch.save({"epoch": 99, "global_step": 10, "pytorch-lightning_version": "2.1.0", "state_dict": sd}, path)
    info = inspect(path)
    assert "lightly" not in info["format"] and info["format"].startswith("solo-learn / PyTorch Lightning")
    assert info["suggestion"]["encoder"] == "byol"


def test_refused_global_is_named_in_both_torch_wordings(tmp_path, monkeypatch):
    path = tmp_path / "evil.pth"
    path.write_bytes(b"PK\x03\x04 not really")
    for text in ("Weights only load failed. Trying to load unsupported GLOBAL os.system whose module os is blocked.",
                 "Weights only load failed. Unsupported global: GLOBAL os.system was not an allowed global"):
        def boom(*a, _t=text, **k):
            raise pickle.UnpicklingError(_t)
        monkeypatch.setattr(torch, "load", boom)
        with pytest.raises(CheckpointError, match=r"needs code to load \(it needs os\.system\)"):
            inspect(path)


def test_wrong_architecture_names_file_and_adapter(tmp_path):
    path = tmp_path / "dino_vit_tiny.pth"
    torch.save(_sincos_vit().state_dict(), path)
    with pytest.raises(CheckpointError) as e:
        BYOLAdapter(checkpoint=path).load()
    msg = str(e.value)
    assert "-e byol cannot load dino_vit_tiny.pth" in msg and "-e dino or -e mae" in msg and "\n" not in msg
    res = tmp_path / "byol_r18.pth"
    torch.save(ResNet(layers=(1, 1, 1, 1), widths=(8, 8, 16, 16)).state_dict(), res)
    with pytest.raises(CheckpointError, match=r"-e mae cannot load byol_r18\.pth: .*-e byol or -e dino"):
        MAEAdapter(checkpoint=res).load()
