"""Checkpoint formats met in the wild: each saved in its official layout, loaded through its adapter, and checked
to give exactly the features of the directly built model. Plus the loud failures, the Haiku converter's
restricted unpickler, the adapter plugins (entry points, template) and inspect-checkpoint's suggestions."""
from __future__ import annotations

import argparse
import collections
import json
import pickle
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from jerc_eval.default_plugins.encoders import (MAE_DECODER_KEYS, BYOLAdapter, DINOAdapter, MAEAdapter,
                                                tf_same_padding)
from jerc_eval.errors import CheckpointError, OfflineError, PluginError, UsageError
from jerc_eval.inspect_checkpoint import format_report, inspect
from jerc_eval.models import ResNet, VisionTransformer
from jerc_eval.plugins import create_host

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = ROOT / "plugins"


# ------------------------------------------------------------------------------------------------ helpers
def feats(loaded, x):
    with torch.no_grad():
        return loaded.module.eval()(x)


def ref(model, x):
    with torch.no_grad():
        return model.eval()(x)


def close(a, b):
    return a.shape == b.shape and torch.allclose(a, b, atol=1e-5, rtol=1e-4)


def randomize_bn(model):
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data = torch.rand(m.weight.shape, generator=g) + 0.5
            m.bias.data = torch.randn(m.bias.shape, generator=g) * 0.1
            m.running_mean = torch.randn(m.running_mean.shape, generator=g) * 0.1
            m.running_var = torch.rand(m.running_var.shape, generator=g) + 0.5
    return model


def one_line(exc_info):
    msg = str(exc_info.value)
    assert "\n" not in msg and len(msg) < 600, msg
    return msg


@pytest.fixture(scope="module")
def x32():
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2).eval()


@pytest.fixture(scope="module")
def basic_resnet():
    torch.manual_seed(0)
    return randomize_bn(ResNet(layers=(1, 1, 1, 1), widths=(8, 8, 16, 16))).eval()


@pytest.fixture(scope="module")
def bottleneck():
    """torchvision's Bottleneck ResNet (one block per stage) with its classifier, as lucidrains/solo-learn keep it."""
    torch.manual_seed(0)
    m = torchvision.models.resnet.ResNet(torchvision.models.resnet.Bottleneck, [1, 1, 1, 1], num_classes=10)
    return randomize_bn(m).eval()


@pytest.fixture(scope="module")
def resnet50():
    torch.manual_seed(0)
    m = torchvision.models.resnet50(weights=None)
    m.fc = nn.Identity()
    return randomize_bn(m).eval()


def backbone_of(model):
    """The model with fc -> identity (the features every ResNet adapter must reproduce)."""
    import copy

    m = copy.deepcopy(model)
    m.fc = nn.Identity()
    return m.eval()


# ===================================================================================================== MAE
def mae_decoder(dim=32, dec=16, patches=16):
    sd = {"mask_token": torch.zeros(1, 1, dec), "decoder_embed.weight": torch.randn(dec, dim),
          "decoder_embed.bias": torch.zeros(dec), "decoder_pos_embed": torch.zeros(1, 1 + patches, dec),
          "decoder_norm.weight": torch.ones(dec), "decoder_norm.bias": torch.zeros(dec),
          "decoder_pred.weight": torch.randn(8 * 8 * 3, dec), "decoder_pred.bias": torch.zeros(8 * 8 * 3)}
    block = VisionTransformer(img_size=32, patch_size=8, embed_dim=dec, depth=1, num_heads=1).blocks[0]
    sd.update({f"decoder_blocks.0.{k}": v for k, v in block.state_dict().items()})
    return sd


def test_mae_official_training_checkpoint(tmp_path, vit, x32):
    """mae_pretrain_vit_*.pth / a main_pretrain.py checkpoint: {'model', 'optimizer', 'epoch', 'scaler', 'args'}."""
    path = tmp_path / "checkpoint-799.pth"
    torch.save({"model": {**vit.state_dict(), **mae_decoder()}, "optimizer": {"state": {}, "param_groups": []},
                "epoch": 799, "scaler": {"scale": 65536.0}, "args": argparse.Namespace(model="mae_vit_tiny",
                                                                                     mask_ratio=0.75)}, path)
    enc = MAEAdapter(checkpoint=path, num_heads=2).load()
    assert close(feats(enc, x32), ref(vit, x32))
    assert enc.paradigm == "RC" and enc.feature_protocol == "cls-after-final-norm"
    assert enc.meta["dropped_keys"]["mask_token"] == 1 and "decoder_blocks.0.*" in enc.meta["dropped_keys"]
    avg = MAEAdapter(checkpoint=path, num_heads=2, pool="avg").load()
    with torch.no_grad():
        assert close(feats(avg, x32), vit.forward_features(x32)[:, 1:].mean(1))
    grid = MAEAdapter(checkpoint=path, num_heads=2, pool="grid").load()
    with torch.no_grad():  # [CLS] + the 4x4 patch map's four quadrant means, quadrant by quadrant
        tok = vit.forward_features(x32)
        patches = tok[:, 1:].reshape(len(x32), 4, 4, -1)
        quads = [patches[:, r:r + 2, c:c + 2].mean((1, 2)) for r in (0, 2) for c in (0, 2)]
        assert close(feats(grid, x32), torch.cat([tok[:, 0], *quads], dim=-1))
    assert grid.feature_protocol == "cls+patch-grid-2x2-after-final-norm"
    with pytest.raises(UsageError, match="grid 5 does not fit the ViT's 4x4 patch map"):
        MAEAdapter(checkpoint=path, num_heads=2, pool="grid", grid=5).load()
    assert set(MAE_DECODER_KEYS) == {"mask_token", "decoder_pos_embed", "decoder_embed.", "decoder_blocks.",
                                     "decoder_norm.", "decoder_pred."}
    assert inspect(path)["suggestion"]["encoder"] == "mae"


def test_mae_unknown_extra_key_and_finetuned_head_are_errors(tmp_path, vit):
    bad = tmp_path / "mae_extra.pth"
    torch.save({"model": {**vit.state_dict(), **mae_decoder(), "decoder_foo.weight": torch.zeros(2)}}, bad)
    with pytest.raises(CheckpointError, match="1 unexpected, e.g. decoder_foo.weight") as e:
        MAEAdapter(checkpoint=bad, num_heads=2).load()
    one_line(e)
    ft = tmp_path / "mae_finetuned.pth"
    torch.save({"model": {**vit.state_dict(), "head.weight": torch.zeros(10, 32), "head.bias": torch.zeros(10)}}, ft)
    with pytest.raises(CheckpointError, match="fine-tuned MAE") as e:
        MAEAdapter(checkpoint=ft, num_heads=2).load()
    one_line(e)


def test_mae_timm_tagged_weights_safetensors(tmp_path, vit, x32):
    """timm's vit_*_patch16_224.mae: the encoder alone, timm key layout, as model.safetensors or pytorch_model.bin."""
    st = pytest.importorskip("safetensors.torch")
    path = tmp_path / "model.safetensors"
    st.save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, str(path))
    enc = MAEAdapter(checkpoint=path, num_heads=2).load()
    assert close(feats(enc, x32), ref(vit, x32)) and "dropped_keys" not in enc.meta
    binf = tmp_path / "pytorch_model.bin"
    torch.save(vit.state_dict(), binf)
    assert close(feats(MAEAdapter(checkpoint=binf, num_heads=2).load(), x32), ref(vit, x32))
    assert inspect(path)["architecture"]["embed_dim"] == 32


# ==================================================================================================== DINO
def test_dino_plain_vit_backbone(tmp_path, vit, x32):
    path = tmp_path / "dino_vittiny8_pretrain.pth"
    torch.save(vit.state_dict(), path)
    enc = DINOAdapter(checkpoint=path, num_heads=2, n_last_blocks=2, avgpool=True).load()
    layers = vit.get_intermediate_layers(x32, 2)
    want = torch.cat([layers[0][:, 0], layers[1][:, 0], layers[1][:, 1:].mean(1)], dim=-1)
    assert close(feats(enc, x32), want.detach()) and enc.feature_protocol == "cls-last-2-blocks+avgpool"
    whole = DINOAdapter(checkpoint=path, num_heads=2, n_last_blocks=1, grid=1).load()  # a 1x1 grid is the mean
    assert close(feats(whole, x32), torch.cat([layers[1][:, 0], layers[1][:, 1:].mean(1)], dim=-1).detach())
    assert whole.feature_protocol == "cls-last-1-blocks+patch-grid-1x1"
    info = inspect(path)
    assert info["suggestion"]["encoder"] == "dino" and info["architecture"]["depth"] == 2


def test_dino_full_training_checkpoint_teacher_and_student(tmp_path, vit, x32):
    """DINO main_dino.py checkpoint.pth: student under DDP (module.backbone./module.head.), teacher not."""
    torch.manual_seed(5)
    student = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2).eval()
    head = {"head.mlp.0.weight": torch.randn(64, 32), "head.mlp.0.bias": torch.zeros(64),
            "head.last_layer.weight_g": torch.ones(100, 1), "head.last_layer.weight_v": torch.randn(100, 64)}
    path = tmp_path / "checkpoint.pth"
    torch.save({"student": {**{f"module.backbone.{k}": v for k, v in student.state_dict().items()},
                            **{f"module.{k}": v for k, v in head.items()}},
                "teacher": {**{f"backbone.{k}": v for k, v in vit.state_dict().items()}, **head},
                "optimizer": {"state": {}, "param_groups": []}, "epoch": 100,
                "args": argparse.Namespace(arch="vit_small", patch_size=8, out_dim=65536),
                "dino_loss": {"center": torch.zeros(1, 100)}}, path)
    teacher = DINOAdapter(checkpoint=path, num_heads=2).load()
    assert close(feats(teacher, x32), ref(vit, x32))
    assert teacher.meta["layout"].startswith("DINO training") and teacher.meta["dropped_keys"]
    stud = DINOAdapter(checkpoint=path, num_heads=2, checkpoint_key="student").load()
    assert close(feats(stud, x32), ref(student, x32))
    info = inspect(path)
    assert info["suggestion"]["encoder"] == "dino" and info["suggestion"]["options"]["checkpoint_key"] == "teacher"
    assert "-o checkpoint_key teacher" in format_report(info)


def test_dino_full_checkpoint_with_an_unknown_key_is_an_error(tmp_path, vit):
    path = tmp_path / "checkpoint.pth"
    torch.save({"teacher": {**{f"backbone.{k}": v for k, v in vit.state_dict().items()},
                            "something_else.weight": torch.zeros(1)}}, path)
    with pytest.raises(CheckpointError, match="unexpected key.*something_else.weight") as e:
        DINOAdapter(checkpoint=path, num_heads=2).load()
    one_line(e)


def test_dino_resnet50_backbone(tmp_path, resnet50):
    """dino_resnet50_pretrain.pth: a plain torchvision ResNet-50 state dict without fc."""
    path = tmp_path / "dino_resnet50_pretrain.pth"
    torch.save(resnet50.state_dict(), path)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    enc = DINOAdapter(checkpoint=path).load()
    assert close(feats(enc, x), ref(resnet50, x)) and enc.arch.startswith("resnet-bottleneck-3-4-6-3")
    assert enc.preprocess.input_size == 224 and enc.feature_protocol == "global-avgpool"
    info = inspect(path)
    assert info["architecture"]["name"] == "resnet50" and info["suggestion"]["encoder"] == "dino"


@pytest.mark.parametrize("opt", [{"grid": 2}, {"avgpool": True}, {"n_last_blocks": 4}])
def test_dino_vit_readout_options_on_a_resnet_are_an_error(tmp_path, basic_resnet, opt):
    path = tmp_path / "dino_resnet_small.pth"
    torch.save(basic_resnet.state_dict(), path)
    (key, value), = opt.items()
    with pytest.raises(UsageError, match=f"-o {key} {value} reads out a ViT, but this DINO checkpoint is a ResNet"):
        DINOAdapter(checkpoint=path, **opt).load()


def test_zoo_dino_is_a_resnet_read_at_its_pretraining_size():
    from jerc_eval.default_plugins.encoders import ZooDINO

    enc = ZooDINO().load()
    assert enc.arch.startswith("resnet") and enc.feature_protocol == "global-avgpool"
    assert enc.preprocess.input_size == ZooDINO().entry()["hyperparameters"]["input_size"] == 32
    assert ZooDINO(image_size=48).load().preprocess.input_size == 48


@pytest.mark.parametrize("name", ["zoo-dino", "zoo-byol"])
def test_zoo_resnets_run_the_stem_stride_their_manifest_records(name, x32):
    """The zoo's JE ResNets ship with a stride-2 stem, which the weights do not record: zoo.json says it. The same
    file loaded through the generic adapter is recognised by its sha256 and runs the manifest's stride too; with
    ``-o stem_stride 1`` it runs the CIFAR convention."""
    from jerc_eval.default_plugins.encoders import BYOLAdapter, DINOAdapter, ZooBYOL, ZooDINO
    from jerc_eval.models import build

    zoo_cls, plain_cls = {"zoo-dino": (ZooDINO, DINOAdapter), "zoo-byol": (ZooBYOL, BYOLAdapter)}[name]
    entry = zoo_cls().entry()
    assert entry["arch"] == "resnet_zoo_s2" and entry["arch_kwargs"]["stem_stride"] == 2
    enc = zoo_cls().load()
    sd = torch.load(zoo_cls().checkpoint_path(), weights_only=True)
    s2, s1 = build("resnet_zoo_s2"), build("resnet_zoo")
    s2.load_state_dict(sd)
    s1.load_state_dict(sd)
    assert close(feats(enc, x32), ref(s2, x32)) and enc.arch.endswith("-stem-s2")
    generic = plain_cls(checkpoint=zoo_cls().checkpoint_path()).load()
    assert close(feats(generic, x32), ref(s2, x32)) and generic.arch.endswith("-stem-s2")
    plain = plain_cls(checkpoint=zoo_cls().checkpoint_path(), stem_stride=1).load()
    assert close(feats(plain, x32), ref(s1, x32)) and not plain.arch.endswith("-stem-s2")


# ==================================================================================================== BYOL
def test_byol_torchvision_layout_with_and_without_fc(tmp_path, basic_resnet, bottleneck, x32):
    plain = tmp_path / "byol_r18.pth"
    torch.save(basic_resnet.state_dict(), plain)
    assert close(feats(BYOLAdapter(checkpoint=plain).load(), x32), ref(basic_resnet, x32))
    with_fc = tmp_path / "byol_converted_r50.pth"  # converted releases keep the supervised fc: dropped, recorded
    torch.save(bottleneck.state_dict(), with_fc)
    enc = BYOLAdapter(checkpoint=with_fc).load()
    assert close(feats(enc, x32), ref(backbone_of(bottleneck), x32)) and enc.meta["dropped_keys"] == {"fc.weight": 1,
                                                                                                        "fc.bias": 1}
    assert inspect(plain)["suggestion"]["encoder"] == "byol"


def test_byol_solo_learn_lightning_checkpoint(tmp_path, bottleneck, x32):
    bb = backbone_of(bottleneck).state_dict()
    sd = {**{f"backbone.{k}": v for k, v in bb.items()},
          **{f"momentum_backbone.{k}": v for k, v in bb.items()},
          "projector.0.weight": torch.randn(16, 2048), "projector.0.bias": torch.zeros(16),
          "projector.1.running_mean": torch.zeros(16), "momentum_projector.0.weight": torch.randn(16, 2048),
          "predictor.0.weight": torch.randn(16, 16), "classifier.weight": torch.randn(10, 2048),
          "classifier.bias": torch.zeros(10)}
    path = tmp_path / "byol-imagenet-abc123-ep=99.ckpt"
    torch.save({"epoch": 99, "global_step": 1000, "pytorch-lightning_version": "2.1.0", "state_dict": sd,
                "loops": {"fit_loop": {"epoch_progress": {"current": {"completed": 99}}}},
                "callbacks": {"ModelCheckpoint": {"best_model_score": torch.tensor(0.5), "dirpath": "trained_models"}},
                "optimizer_states": [{"state": {}, "param_groups": [{"lr": 1.0, "params": [0, 1]}]}],
                "lr_schedulers": [], "hparams_name": "kwargs",
                "hyper_parameters": {"method": "byol", "backbone": {"name": "resnet50"}, "max_epochs": 100}}, path)
    enc = BYOLAdapter(checkpoint=path).load()
    assert close(feats(enc, x32), ref(backbone_of(bottleneck), x32))
    assert enc.meta["layout"] == "solo-learn / Lightning BYOL"
    assert {"projector.0.*", "momentum_backbone.conv1.*", "classifier.weight"} <= set(enc.meta["dropped_keys"])
    info = inspect(path)
    assert info["suggestion"]["encoder"] == "byol" and info["parts"]["projector"] >= 2
    bad = tmp_path / "solo_extra.ckpt"
    torch.save({"state_dict": {**sd, "queue": torch.zeros(4)}}, bad)
    with pytest.raises(CheckpointError, match="unexpected key.*queue") as e:
        BYOLAdapter(checkpoint=bad).load()
    one_line(e)


def test_byol_lightly_checkpoint(tmp_path, bottleneck, x32):
    """lightly's BYOL example: backbone = nn.Sequential(*list(resnet.children())[:-1])."""
    seq = nn.Sequential(*list(bottleneck.children())[:-1])
    sd = {**{f"backbone.{k}": v for k, v in seq.state_dict().items()},
          **{f"backbone_momentum.{k}": v for k, v in seq.state_dict().items()},
          "projection_head.layers.0.weight": torch.randn(8, 2048), "prediction_head.layers.0.weight": torch.randn(8, 8),
          "projection_head_momentum.layers.0.weight": torch.randn(8, 2048)}
    path = tmp_path / "lightly_byol.ckpt"
    torch.save({"state_dict": sd, "epoch": 10, "pytorch-lightning_version": "2.0.0"}, path)
    enc = BYOLAdapter(checkpoint=path).load()
    assert close(feats(enc, x32), ref(backbone_of(bottleneck), x32)) and enc.meta["layout"].startswith("lightly")
    assert inspect(path)["suggestion"]["encoder"] == "byol"


def test_byol_lucidrains_learner_state_dict(tmp_path, bottleneck, x32):
    """byol-pytorch's BYOL learner: net.*, online_encoder.net.* (the same resnet), projector, predictor, target."""
    full = bottleneck.state_dict()
    proj = {"online_encoder.projector.net.0.weight": torch.randn(16, 2048),
            "online_encoder.projector.net.1.running_var": torch.ones(16)}
    sd = {**{f"net.{k}": v for k, v in full.items()}, **{f"online_encoder.net.{k}": v for k, v in full.items()},
          **proj, **{k.replace("online_encoder", "target_encoder"): v for k, v in proj.items()},
          **{f"target_encoder.net.{k}": v for k, v in full.items()},
          "online_predictor.net.0.weight": torch.randn(16, 16), "online_predictor.net.3.bias": torch.zeros(16)}
    path = tmp_path / "byol_learner.pt"
    torch.save(sd, path)
    enc = BYOLAdapter(checkpoint=path).load()
    assert close(feats(enc, x32), ref(backbone_of(bottleneck), x32))
    assert enc.meta["layout"].startswith("lucidrains") and "fc.weight" in enc.meta["dropped_keys"]
    assert inspect(path)["suggestion"]["encoder"] == "byol"


# ---------------------------------------------------------------------------- official BYOL JAX/Haiku pickle
HAIKU = "res_net50"


def to_haiku(model):
    """The inverse of the converter, written independently: torchvision ResNet -> (params, state) Haiku trees."""
    params, state = {}, {}

    def bn(name, m):
        params[name] = {"scale": m.weight.detach().numpy().reshape(1, 1, 1, -1).copy(),
                        "offset": m.bias.detach().numpy().reshape(1, 1, 1, -1).copy()}
        for stat, buf in (("mean_ema", m.running_mean), ("var_ema", m.running_var)):
            arr = buf.numpy().reshape(1, 1, 1, -1).copy()
            state[f"{name}/~/{stat}"] = {"average": arr, "hidden": arr.copy(), "counter": np.array(5, np.int32)}

    def conv(name, m):
        params[name] = {"w": m.weight.detach().numpy().transpose(2, 3, 1, 0).copy()}  # OIHW -> HWIO

    conv(f"{HAIKU}/~/initial_conv_1", model.conv1)
    bn(f"{HAIKU}/~/initial_batchnorm", model.bn1)
    for g in range(4):
        for b, block in enumerate(getattr(model, f"layer{g + 1}")):
            base = f"{HAIKU}/~/block_group_{g}/~/block_{b}/~/"
            for i in range(3):
                conv(f"{base}conv_{i}", getattr(block, f"conv{i + 1}"))
                bn(f"{base}batchnorm_{i}", getattr(block, f"bn{i + 1}"))
            if block.downsample is not None:
                conv(f"{base}shortcut_conv", block.downsample[0])
                bn(f"{base}shortcut_batchnorm", block.downsample[1])
    params["projector/~/linear"] = {"w": np.zeros((2048, 8), np.float32), "b": np.zeros(8, np.float32)}
    params["projector/~/batch_norm"] = {"scale": np.ones((8,), np.float32), "offset": np.zeros((8,), np.float32)}
    params["predictor/~/linear"] = {"w": np.zeros((8, 8), np.float32), "b": np.zeros(8, np.float32)}
    params["classifier"] = {"w": np.zeros((2048, 1000), np.float32), "b": np.zeros(1000, np.float32)}
    state["projector/~/batch_norm/~/mean_ema"] = {"average": np.zeros((8,), np.float32)}
    return params, state


@pytest.fixture(scope="module")
def haiku_pickle(tmp_path_factory, bottleneck):
    """deepmind byol's checkpointer: pickle.dump({'experiment_state': _ByolExperimentState(...), 'step', 'rng'},
    protocol=2), with the NamedTuples defined in modules named as in the byol repo (removed before loading)."""
    params, state = to_haiku(backbone_of(bottleneck))
    byol_pkg, exp_mod, opt_mod = (types.ModuleType(n) for n in ("byol", "byol.byol_experiment",
                                                                  "byol.utils.optimizers"))
    State = collections.namedtuple("_ByolExperimentState", ["online_params", "target_params", "online_state",
                                                            "target_state", "opt_state"])
    Lars = collections.namedtuple("LarsState", ["mu"])
    State.__module__, Lars.__module__ = "byol.byol_experiment", "byol.utils.optimizers"
    exp_mod._ByolExperimentState, opt_mod.LarsState = State, Lars
    names = {"byol": byol_pkg, "byol.byol_experiment": exp_mod, "byol.utils": types.ModuleType("byol.utils"),
             "byol.utils.optimizers": opt_mod}
    sys.modules.update(names)
    try:
        data = {"experiment_state": State(params, params, state, state, Lars({"x": np.zeros(3, np.float32)})),
                "step": 1000, "rng": np.array([0, 42], dtype=np.uint32)}
        path = tmp_path_factory.mktemp("haiku") / "pretrain_res50x1.pkl"
        path.write_bytes(pickle.dumps(data, protocol=2))
    finally:
        for n in names:
            sys.modules.pop(n, None)
    return path


def test_byol_haiku_pickle_converts_to_torchvision(haiku_pickle, bottleneck):
    """Names as in deepmind byol's ResNet-50 (res_net50/~/block_group_G/~/block_B/~/conv_I); one block per group
    keeps the test small (the mapping is per block, so it is the same for [3, 4, 6, 3])."""
    resnet50 = backbone_of(bottleneck)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    tv = BYOLAdapter(checkpoint=haiku_pickle, haiku_padding="torchvision").load()
    assert close(feats(tv, x), ref(resnet50, x))  # every weight and statistic mapped, HWIO -> OIHW
    assert tv.meta["layout"].startswith("BYOL JAX/Haiku") and tv.feature_protocol == "global-avgpool"
    same = BYOLAdapter(checkpoint=haiku_pickle).load()  # default: TensorFlow SAME padding, as Haiku computed it
    import copy
    want = ref(tf_same_padding(copy.deepcopy(resnet50)), x)
    assert close(feats(same, x), want) and not close(want, ref(resnet50, x))
    assert same.feature_protocol == "global-avgpool+tf-same-padding"
    info = inspect(haiku_pickle)
    assert info["suggestion"]["encoder"] == "byol" and info["architecture"]["block"] == "bottleneck"
    assert {"projector", "predictor", "classifier"} <= set(info["parts"])


def test_tf_same_padding_matches_tensorflow_arithmetic():
    conv = nn.Conv2d(1, 1, 3, stride=2, padding=1, bias=False)
    x = torch.randn(1, 1, 8, 8)
    want = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (0, 1, 0, 1)), conv.weight, stride=2)
    model = tf_same_padding(nn.Sequential(conv))
    assert torch.allclose(model(x), want)


class Evil:
    def __reduce__(self):
        import os
        return (os.system, ("echo pwned",))


def test_haiku_converter_refuses_objects(tmp_path):
    for payload in ({"experiment_state": Evil()}, {"experiment_state": argparse.Namespace(a=1)}):
        path = tmp_path / "evil.pkl"
        path.write_bytes(pickle.dumps(payload, protocol=2))
        with pytest.raises(CheckpointError, match="carries code or objects.*refused to load") as e:
            BYOLAdapter(checkpoint=path).load()
        one_line(e)
    trunc = tmp_path / "trunc.pkl"
    trunc.write_bytes(pickle.dumps({"a": np.zeros(100)}, protocol=2)[:60])
    with pytest.raises(CheckpointError, match="truncated") as e:
        BYOLAdapter(checkpoint=trunc).load()
    one_line(e)


# ============================================================================================ loud failures
def test_truncated_wrong_architecture_and_code_pickles(tmp_path, vit, basic_resnet):
    good = tmp_path / "good.pth"
    torch.save({"model": {**vit.state_dict(), **mae_decoder()}}, good)
    trunc = tmp_path / "trunc.pth"
    trunc.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated") as e:
        MAEAdapter(checkpoint=trunc).load()
    one_line(e)
    resnet_file = tmp_path / "resnet.pth"
    torch.save(basic_resnet.state_dict(), resnet_file)
    with pytest.raises(CheckpointError, match="not a ViT state dict") as e:
        MAEAdapter(checkpoint=resnet_file).load()
    one_line(e)
    shapes = tmp_path / "shapes.pth"
    sd = dict(vit.state_dict())
    sd["blocks.1.mlp.fc1.weight"] = torch.zeros(64, 32)  # depth-1 block of another width: wrong architecture
    torch.save(sd, shapes)
    with pytest.raises(CheckpointError, match="with other shapes") as e:
        DINOAdapter(checkpoint=shapes, num_heads=2).load()
    one_line(e)
    code = tmp_path / "code.pth"
    torch.save({"model": Evil()}, code)
    with pytest.raises(CheckpointError, match="needs code") as e:
        BYOLAdapter(checkpoint=code).load()
    one_line(e)
    with pytest.raises(CheckpointError, match="needs code"):
        inspect(code)


# ================================================================================================= plugins
def _visible(site: Path, monkeypatch, dist: str, module: str, plugin_dir: Path) -> None:
    """An installed distribution as importlib.metadata sees it (dist-info + entry point), its code on sys.path."""
    info = site / f"{dist.replace('-', '_')}-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text(f"[jerc_eval]\n{module.removeprefix('jerc_eval_')} = {module}\n")
    monkeypatch.syspath_prepend(str(plugin_dir))


@pytest.fixture
def plugin_host(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    _visible(site, monkeypatch, "jerc-eval-timm", "jerc_eval_timm", PLUGINS / "jerc-eval-timm")
    _visible(site, monkeypatch, "jerc-eval-torchvision", "jerc_eval_torchvision", PLUGINS / "jerc-eval-torchvision")
    monkeypatch.setenv("JERC_EVAL_PLUGINS", "timm,torchvision")
    return create_host(strict=True)


def test_plugin_entry_points_register_encoders(plugin_host):
    reg = plugin_host.registry("encoders")
    assert {"timm", "torchvision", "hub", "factory"} <= set(reg.names())
    assert reg.entry("timm").plugin == "timm" and reg.entry("hub").plugin == "torchvision"
    versions = {p["name"]: p["version"] for p in plugin_host.plugin_info()}
    assert versions["timm"] == "0.1.0" and versions["torchvision"] == "0.1.0"


def test_torchvision_encoder_loads_local_state_dict(plugin_host, tmp_path, x32):
    torch.manual_seed(0)
    model = randomize_bn(torchvision.models.resnet18(weights=None)).eval()
    path = tmp_path / "r18.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    cls = plugin_host.registry("encoders").get("torchvision")
    enc = cls(model="resnet18", checkpoint=path, paradigm="SL", image_size=32).load()
    assert close(feats(enc, x32), ref(backbone_of(model), x32)) and enc.feature_protocol == "penultimate (fc -> identity)"
    assert enc.meta["dropped_keys"] == ["fc.weight", "fc.bias"]
    with pytest.raises(UsageError, match="Did you mean: resnet18"):
        cls(model="resnet19", checkpoint=path, paradigm="SL").load()
    info = inspect(path)
    assert info["architecture"]["name"] == "resnet18" and info["suggestion"]["encoder"] == "torchvision"


def test_hub_encoder_local_dir_and_offline_github(plugin_host, tmp_path, basic_resnet, x32):
    repo = tmp_path / "myrepo"
    repo.mkdir()
    (repo / "hubconf.py").write_text(textwrap.dedent("""
        dependencies = ["torch"]
        from jerc_eval.models import ResNet

        def tiny_resnet(pretrained=True, width=8):
            if pretrained:
                import torch
                torch.hub.load_state_dict_from_url("https://example.invalid/weights.pth")
            return ResNet(layers=(1, 1, 1, 1), widths=(width, width, 2 * width, 2 * width))
    """))
    ckpt = tmp_path / "tiny.pth"
    torch.save(basic_resnet.state_dict(), ckpt)
    cls = plugin_host.registry("encoders").get("hub")
    enc = cls(repo=str(repo), entry="tiny_resnet", checkpoint=ckpt, paradigm="JE", image_size=32).load()
    assert close(feats(enc, x32), ref(basic_resnet, x32))  # pretrained=False was passed: nothing downloaded
    with pytest.raises(UsageError, match="tried to download"):
        cls(repo=str(repo), entry="tiny_resnet", kwargs='{"pretrained": true}', checkpoint=ckpt, paradigm="JE").load()
    with pytest.raises(UsageError, match="Did you mean: tiny_resnet"):
        cls(repo=str(repo), entry="tiny_resnt", checkpoint=ckpt, paradigm="JE").load()
    with pytest.raises(OfflineError, match="offline.*-o repo DIR") as e:
        cls(repo="facebookresearch/dino:main", entry="dino_vits16", paradigm="JE").load()
    one_line(e)


def test_factory_encoder(plugin_host, tmp_path, basic_resnet, x32):
    (tmp_path / "my_models.py").write_text(textwrap.dedent("""
        from jerc_eval.models import ResNet
        def build(width=4):
            return ResNet(layers=(1, 1, 1, 1), widths=(width, width, 2 * width, 2 * width))
    """))
    ckpt = tmp_path / "train.ckpt"
    torch.save({"state_dict": {**{f"backbone.{k}": v for k, v in basic_resnet.state_dict().items()},
                               "projector.0.weight": torch.zeros(4, 16)}}, ckpt)
    cls = plugin_host.registry("encoders").get("factory")
    enc = cls(callable=f"{tmp_path / 'my_models.py'}:build", kwargs='{"width": 8}', checkpoint=ckpt, paradigm="RC",
              image_size=32, prefix="backbone.", drop="projector.").load()
    assert close(feats(enc, x32), ref(basic_resnet, x32)) and enc.paradigm == "RC"
    with pytest.raises(CheckpointError, match="unexpected key.*projector"):
        cls(callable=f"{tmp_path / 'my_models.py'}:build", kwargs='{"width": 8}', checkpoint=ckpt, paradigm="RC",
            prefix="backbone.").load()


def test_timm_missing_gives_one_line_install_hint(plugin_host, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm -> ImportError
    cls = plugin_host.registry("encoders").get("timm")
    with pytest.raises(PluginError, match="pip install timm") as e:
        cls(model="hf-hub:timm/x").load()
    one_line(e)


def test_timm_encoder_local_checkpoint_and_offline_hub(plugin_host, tmp_path, vit, x32):
    timm = pytest.importorskip("timm")
    kw = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224.augreg_in21k_ft_in1k", pretrained=False, **kw).eval()
    path = tmp_path / "vit_tiny.pth"
    torch.save(model.state_dict(), path)  # with its 1000-class head: dropped, recorded
    cls = plugin_host.registry("encoders").get("timm")
    enc = cls(model="vit_tiny_patch16_224.augreg_in21k_ft_in1k", checkpoint=path, model_kwargs=json.dumps(kw),
              image_size=32).load()
    with torch.no_grad():
        want = model.forward_head(model.forward_features(x32), pre_logits=True)
    assert close(feats(enc, x32), want) and enc.paradigm == "SL"  # paradigm from the in1k tag
    assert enc.preprocess.mean == tuple(model.pretrained_cfg["mean"]) and enc.preprocess.input_size == 32
    assert enc.meta["dropped_keys"] == ["head.bias", "head.weight"]
    # timm's ViT and jerc-eval's (the MAE adapter) are the same network on the same keys
    enc_cls = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, **kw).eval()
    enc_cls.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("head.")})
    mae_file = tmp_path / "vit_tiny_patch16_224.mae.pth"
    torch.save(enc_cls.state_dict(), mae_file)
    with torch.no_grad():
        want = enc_cls.forward_head(enc_cls.forward_features(x32), pre_logits=True)
    assert close(feats(MAEAdapter(checkpoint=mae_file, num_heads=2).load(), x32), want)
    with pytest.raises(OfflineError, match="offline.*HF_HUB_OFFLINE.*-o checkpoint FILE") as e:
        cls(model="hf-hub:timm/vit_small_patch16_224.dino").load()
    one_line(e)
    with pytest.raises(UsageError, match="needs -o checkpoint"):
        cls(model="vit_tiny_patch16_224").load()


def test_timm_vit_at_another_image_size_interpolates_position_embeddings(plugin_host, tmp_path):
    timm = pytest.importorskip("timm")
    kw = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, **kw).eval()
    path = tmp_path / "vit_tiny.pth"
    torch.save(model.state_dict(), path)
    cls = plugin_host.registry("encoders").get("timm")
    enc = cls(model="vit_tiny_patch16_224", checkpoint=path, model_kwargs=json.dumps(kw), image_size=64,
              paradigm="SL").load()  # was an internal error: "Input height (64) doesn't match model (32)"
    x64 = torch.rand(2, 3, 64, 64)
    assert enc.preprocess.input_size == 64 and "interpolated" in enc.meta["dynamic_img_size"]
    with torch.no_grad():
        assert enc.module(x64).shape == (2, 32)
        native = cls(model="vit_tiny_patch16_224", checkpoint=path, model_kwargs=json.dumps(kw), image_size=32,
                     paradigm="SL").load()
        x32 = torch.rand(2, 3, 32, 32)
        assert "dynamic_img_size" not in native.meta and close(enc.module(x32), native.module(x32))


# ================================================================================================ template
def test_custom_encoder_template_plugin(tmp_path, x32):
    torch.manual_seed(0)
    model = randomize_bn(ResNet(layers=(1, 1, 1, 1), widths=(8, 8, 16, 16))).eval()
    path = tmp_path / "my_resnet.pth"
    torch.save({"state_dict": {**{f"backbone.{k}": v for k, v in model.state_dict().items()},
                               "projector.weight": torch.zeros(2)}}, path)
    host = create_host(plugin_files=[str(PLUGINS / "custom_encoder_template.py")], strict=True)
    cls = host.registry("encoders").get("my-encoder")
    enc = cls(checkpoint=path).load()
    assert close(feats(enc, x32), ref(model, x32)) and enc.weights_sha256


def test_cli_runs_template_plugin_listing(capsys):
    from jerc_eval.cli import main

    assert main(["--plugin", str(PLUGINS / "custom_encoder_template.py"), "list", "encoders"]) == 0
    assert "my-encoder" in capsys.readouterr().out


def test_hf_vit_mae_folder_loads_with_masking_disabled(tmp_path):
    """A Hugging Face ViTMAEForPreTraining folder (config.json + pytorch_model.bin, q/k/v split, vit. prefix,
    decoder keys) loads into the same features as the timm-layout model."""
    import json

    import torch

    from jerc_eval.default_plugins.encoders import MAEAdapter
    from jerc_eval.models import VisionTransformer

    torch.manual_seed(0)
    vit = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2).eval()
    sd = vit.state_dict()
    hf = {"vit.embeddings.cls_token": sd["cls_token"], "vit.embeddings.position_embeddings": sd["pos_embed"],
          "vit.embeddings.patch_embeddings.projection.weight": sd["patch_embed.proj.weight"],
          "vit.embeddings.patch_embeddings.projection.bias": sd["patch_embed.proj.bias"],
          "vit.layernorm.weight": sd["norm.weight"], "vit.layernorm.bias": sd["norm.bias"],
          "decoder.decoder_pred.weight": torch.zeros(4, 4)}
    names = {"norm1": "layernorm_before", "norm2": "layernorm_after", "attn.proj": "attention.output.dense",
             "mlp.fc1": "intermediate.dense", "mlp.fc2": "output.dense"}
    for i in range(2):
        for part in ("weight", "bias"):
            q, k, v = sd[f"blocks.{i}.attn.qkv.{part}"].chunk(3)
            for n, t in (("query", q), ("key", k), ("value", v)):
                hf[f"vit.encoder.layer.{i}.attention.attention.{n}.{part}"] = t
            for ours, theirs in names.items():
                hf[f"vit.encoder.layer.{i}.{theirs}.{part}"] = sd[f"blocks.{i}.{ours}.{part}"]
    folder = tmp_path / "vit-mae-tiny"
    folder.mkdir()
    torch.save(hf, folder / "pytorch_model.bin")
    (folder / "config.json").write_text(json.dumps({"model_type": "vit_mae", "num_attention_heads": 2,
                                                    "num_hidden_layers": 2, "layer_norm_eps": 1e-6}))
    enc = MAEAdapter(checkpoint=folder).load()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(enc.module(x), vit(x), atol=1e-5)
    assert enc.meta["layout"].startswith("Hugging Face") and len(enc.weights_sha256) == 64
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(CheckpointError, match="not vit_mae"):
        MAEAdapter(checkpoint=folder).load()
