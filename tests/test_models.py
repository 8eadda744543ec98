"""Key layouts (timm ViT / torchvision ResNet), forward shapes, cost and determinism of the zoo encoders."""
from __future__ import annotations

import re

import pytest
import torch

from jerc_eval.models import ARCHS, ResNet, VisionTransformer, build, count_macs


def timm_vit_keys(depth: int) -> list[str]:
    keys = ["cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias"]
    for i in range(depth):
        for part in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"):
            keys += [f"blocks.{i}.{part}.weight", f"blocks.{i}.{part}.bias"]
    return keys + ["norm.weight", "norm.bias"]


@pytest.mark.parametrize("depth", [1, 4])
def test_vit_keys_match_timm(depth):
    m = VisionTransformer(embed_dim=48, depth=depth, num_heads=3)
    assert list(m.state_dict().keys()) == timm_vit_keys(depth)
    sd = m.state_dict()
    assert sd["cls_token"].shape == (1, 1, 48)
    assert sd["pos_embed"].shape == (1, 1 + 16, 48)
    assert sd["blocks.0.attn.qkv.weight"].shape == (144, 48)
    assert m.norm.eps == 1e-6 and m.blocks[0].norm1.eps == 1e-6


def test_vit_shapes_and_intermediate_layers():
    torch.manual_seed(0)
    m = build("vit_zoo").eval()
    d = m.embed_dim
    assert (m.img_size, m.patch_size) == (32, 8)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        tokens = m.forward_features(x)
        cls = m(x)
        inter = m.get_intermediate_layers(x, 2)
        small = m(torch.randn(2, 3, 16, 16))  # interpolated position embedding (multi-crop)
    assert tokens.shape == (2, 17, d)
    assert cls.shape == (2, d) and torch.allclose(cls, tokens[:, 0])
    assert len(inter) == 2 and all(t.shape == (2, 17, d) for t in inter)
    assert torch.allclose(inter[-1], tokens, atol=1e-6)
    assert small.shape == (2, d)


def _torchvision_pattern(key: str) -> str:
    return re.sub(r"^layer(\d)\.\d+\.", r"layer\1.N.", key)


def test_resnet_keys_follow_torchvision():
    import torchvision

    ours = ResNet(layers=(1, 2, 1, 1), widths=(8, 16, 32, 64)).state_dict()
    tv = torchvision.models.resnet18().state_dict()
    tv_patterns = {_torchvision_pattern(k) for k in tv if not k.startswith("fc.")}
    our_patterns = {_torchvision_pattern(k) for k in ours}
    assert our_patterns == tv_patterns
    # block indices present are exactly 0..n-1 per stage, downsample only on block 0 of layers 2-4
    assert "layer2.1.conv2.weight" in ours and "layer2.2.conv1.weight" not in ours
    assert not any(k.startswith("layer1.0.downsample") for k in ours)
    assert all(not k.startswith("fc.") for k in ours)
    for k, v in ours.items():  # same tensor ranks as torchvision
        tk = re.sub(r"^layer(\d)\.\d+\.", r"layer\1.0.", k)
        assert v.dim() == tv[tk].dim(), k
    assert "fc.weight" in ResNet(num_classes=10).state_dict()


def test_resnet_zoo_matches_torchvision_order_for_resnet18_layout():
    import torchvision

    tv = [k for k in torchvision.models.resnet18().state_dict() if not k.startswith("fc.")]
    ours = list(ResNet(layers=(2, 2, 2, 2), widths=(64, 128, 256, 512)).state_dict())
    assert ours == tv


def test_resnet_shapes():
    m = build("resnet_zoo").eval()
    with torch.no_grad():
        f = m(torch.randn(3, 3, 64, 64))
    assert f.shape == (3, m.num_features) == (3, ARCHS["resnet_zoo"]["kwargs"]["widths"][-1])


def test_stride_2_stem_keeps_the_weights_and_quarters_the_cost():
    s1, s2 = build("resnet_zoo").eval(), build("resnet_zoo_s2").eval()
    assert {k: v.shape for k, v in s1.state_dict().items()} == {k: v.shape for k, v in s2.state_dict().items()}
    s2.load_state_dict(s1.state_dict())
    seen = {}
    s2.layer1.register_forward_hook(lambda _m, _i, out: seen.update(layer1=out.shape))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert s2(x).shape == s1(x).shape == (2, 128)
        assert not torch.allclose(s2(x), s1(x))  # the stride changes the computation, not the weights
    assert seen["layer1"][-2:] == (16, 16)
    assert count_macs(s2, img_size=32) * 4 == pytest.approx(count_macs(s1, img_size=32), rel=0.05)
    with pytest.raises(ValueError, match="stem_stride"):
        ResNet(stem="small", stem_stride=3)


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_zoo_cost_budget(arch):
    # the default run pushes ~150k images per encoder through it on 2 cores: stay under 20 M multiply-adds
    assert count_macs(build(arch), img_size=32) <= 20_000_000


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_deterministic_init_and_forward(arch):
    torch.manual_seed(123)
    a = build(arch).eval()
    torch.manual_seed(123)
    b = build(arch).eval()
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(a(x), a(x))
        assert torch.equal(a(x), b(x))


def test_unknown_arch():
    with pytest.raises(KeyError):
        build("nope")
