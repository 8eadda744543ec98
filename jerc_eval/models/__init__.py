"""Encoder architectures of the reference zoo (timm / torchvision key layouts, no timm dependency).

``build(arch)`` instantiates a named zoo architecture; ``ARCHS`` holds each one's class and kwargs.
The zoo's encoders take 32x32 RGB inputs, normalised with ``MEAN``/``STD`` (ImageNet statistics, as the zoo was trained).
"""
from __future__ import annotations

from torch import nn

from .resnet import BasicBlock, ResNet
from .vit import VisionTransformer

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)

ARCHS: dict[str, dict] = {
    # 16 patches of 8x8 + [CLS] at a 32 px input (PhotoDigits' 64 px images are resized), 4 blocks of width 96
    "vit_zoo": {"cls": "VisionTransformer",
                "kwargs": {"img_size": 32, "patch_size": 8, "in_chans": 3, "embed_dim": 96, "depth": 4,
                           "num_heads": 3, "mlp_ratio": 4.0}},
    # one BasicBlock per stage at a 32 px input with the small (CIFAR) stem: a 3x3/1 conv, no max-pool
    "resnet_zoo": {"cls": "ResNet",
                   "kwargs": {"layers": (1, 1, 1, 1), "widths": (16, 32, 64, 128), "num_classes": 0,
                              "stem": "small"}},
    # the same network and weight layout with a stride-2 stem: layer1 runs at 16x16, a quarter of the multiply-adds
    # (4.0 M against 16.2 M an image); the zoo's JE encoders ship in it (docs/zoo.md, "Sixth round")
    "resnet_zoo_s2": {"cls": "ResNet",
                      "kwargs": {"layers": (1, 1, 1, 1), "widths": (16, 32, 64, 128), "num_classes": 0,
                                 "stem": "small", "stem_stride": 2}},
}

_CLASSES = {"VisionTransformer": VisionTransformer, "ResNet": ResNet}


def build(arch: str, **overrides) -> nn.Module:
    """Instantiate a zoo architecture by name (random init); ``overrides`` replace kwargs."""
    if arch not in ARCHS:
        raise KeyError(f"unknown architecture {arch!r}; known: {sorted(ARCHS)}")
    spec = ARCHS[arch]
    return _CLASSES[spec["cls"]](**{**spec["kwargs"], **overrides})


def count_macs(model: nn.Module, img_size: int = 64) -> int:
    """Multiply-adds of one forward pass on a single image (Conv2d, Linear and attention matmuls)."""
    import torch

    total = 0

    def conv_hook(m, inp, out):
        nonlocal total
        total += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    def lin_hook(m, inp, out):
        nonlocal total
        total += out.numel() * m.in_features

    def attn_hook(m, inp, out):
        nonlocal total
        b, n, d = inp[0].shape
        total += 2 * b * n * n * d

    from .vit import Attention
    hooks = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(lin_hook))
        elif isinstance(m, Attention):
            hooks.append(m.register_forward_hook(attn_hook))
    was = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 3, img_size, img_size))
    model.train(was)
    for h in hooks:
        h.remove()
    return total


__all__ = ["ARCHS", "BasicBlock", "MEAN", "ResNet", "STD", "VisionTransformer", "build", "count_macs"]
