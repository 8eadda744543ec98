"""A small ResNet with torchvision's BasicBlock key layout.

Keys: ``conv1``, ``bn1``, ``layer{1..4}.{j}.conv1/bn1/conv2/bn2``, ``layer{k}.0.downsample.0/.1`` (when the
stride or width changes) and ``fc`` only if ``num_classes > 0`` -- identical to
``torchvision.models.resnet18`` for the blocks present, so checkpoints in the usual converted layout load.

Stem: ``stem="imagenet"`` (default) is torchvision's 7x7/2 conv + 3x3/2 max-pool, so a 64x64 image reaches
layer1 at 16x16. ``stem="small"`` is a documented lighter alternative for tiny images: a 3x3 conv without
max-pool (same key names; only ``conv1``'s kernel shape differs), of stride ``stem_stride`` -- 1 as in the CIFAR
ResNets, 2 to run layer1 at half the input size for a quarter of the compute. The stride leaves no trace in the
weights: a loader has to be told it.
"""
from __future__ import annotations

import torch
from torch import nn


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False),
                                            nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + idt)


class ResNet(nn.Module):
    """``forward`` returns globally average-pooled features (B, widths[-1]), or logits if ``num_classes > 0``."""

    def __init__(self, layers=(1, 1, 1, 1), widths=(16, 32, 64, 128), num_classes: int = 0, in_chans: int = 3,
                 stem: str = "imagenet", stem_stride: int = 1):
        super().__init__()
        if len(layers) != 4 or len(widths) != 4:
            raise ValueError("layers and widths need four entries (layer1..layer4)")
        self.stem = stem
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_chans, widths[0], 7, 2, 3, bias=False)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        elif stem == "small":
            if stem_stride not in (1, 2):
                raise ValueError(f"stem_stride must be 1 or 2, not {stem_stride!r}")
            self.conv1 = nn.Conv2d(in_chans, widths[0], 3, stem_stride, 1, bias=False)
            self.maxpool = nn.Identity()
        else:
            raise ValueError(f"unknown stem {stem!r}")
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        inplanes = widths[0]
        for k, (n, w) in enumerate(zip(layers, widths), start=1):
            blocks = []
            for j in range(n):
                blocks.append(BasicBlock(inplanes, w, stride=(1 if k == 1 or j > 0 else 2)))
                inplanes = w
            setattr(self, f"layer{k}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.num_features = widths[-1]
        self.fc = nn.Linear(widths[-1], num_classes) if num_classes > 0 else None
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.forward_features(x)
        return f if self.fc is None else self.fc(f)
