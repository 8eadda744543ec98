"""Batched, seeded augmentations on CPU tensors (no PIL loop) for zoo pretraining.

A *view* spec is a plain dict (see ``jerc_eval.zoo.pretrain.RECIPES``)::

    {"size": 64, "scale": [lo, hi], "ratio": [3/4, 4/3],            # random resized crop
     "color_jitter_p": 0.8, "brightness": 0.4, "contrast": 0.4, "saturation": 0.2, "hue": 0.1,
     "grayscale_p": 0.2, "blur_p": 0.5, "blur_sigma": [0.1, 1.0], "solarize_p": 0.0, "hflip_p": 0.0}

Colour jitter is applied in the fixed order brightness, contrast, saturation, hue (torchvision draws a random
order; a fixed order keeps the recipe simple to reproduce). Hue is a rotation of the chroma plane in YIQ space.
Every random draw comes from the ``torch.Generator`` passed in, so a run is reproducible given its seed.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from ..models import MEAN, STD

_LUM = torch.tensor([0.299, 0.587, 0.114])
_RGB2YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ2RGB = torch.linalg.inv(_RGB2YIQ)


def _u(gen: torch.Generator, n: int, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen)


def random_resized_crop(x: torch.Tensor, size: int, scale, ratio, gen: torch.Generator) -> torch.Tensor:
    b, _, h, w = x.shape
    area = _u(gen, b, scale[0], scale[1]) * h * w
    logr = _u(gen, b, math.log(ratio[0]), math.log(ratio[1]))
    r = torch.exp(logr)
    cw = torch.sqrt(area * r).clamp(4, w)
    ch = torch.sqrt(area / r).clamp(4, h)
    x0 = torch.rand(b, generator=gen) * (w - cw)
    y0 = torch.rand(b, generator=gen) * (h - ch)
    boxes = torch.stack([torch.arange(b, dtype=torch.float32), x0, y0, x0 + cw, y0 + ch], 1)
    return roi_align(x, boxes, output_size=(size, size), spatial_scale=1.0, sampling_ratio=2, aligned=True)


def _mask(gen: torch.Generator, n: int, p: float) -> torch.Tensor:
    return (torch.rand(n, generator=gen) < p).float().view(n, 1, 1, 1)


def color_jitter(x: torch.Tensor, spec: dict, gen: torch.Generator) -> torch.Tensor:
    b = x.shape[0]
    on = _mask(gen, b, spec.get("color_jitter_p", 0.0))
    y = x
    br, co, sa, hu = (spec.get(k, 0.0) for k in ("brightness", "contrast", "saturation", "hue"))
    if br:
        y = (y * _u(gen, b, 1 - br, 1 + br).view(b, 1, 1, 1)).clamp(0, 1)
    if co:
        m = torch.einsum("bchw,c->b", y, _LUM).view(b, 1, 1, 1) / (y.shape[2] * y.shape[3])
        y = ((y - m) * _u(gen, b, 1 - co, 1 + co).view(b, 1, 1, 1) + m).clamp(0, 1)
    if sa:
        g = torch.einsum("bchw,c->bhw", y, _LUM).unsqueeze(1)
        y = ((y - g) * _u(gen, b, 1 - sa, 1 + sa).view(b, 1, 1, 1) + g).clamp(0, 1)
    if hu:
        th = _u(gen, b, -hu, hu) * 2 * math.pi
        c, s = torch.cos(th), torch.sin(th)
        rot = torch.zeros(b, 3, 3)
        rot[:, 0, 0] = 1
        rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = c, -s, s, c
        mat = _YIQ2RGB @ rot @ _RGB2YIQ
        y = torch.einsum("bij,bjhw->bihw", mat, y).clamp(0, 1)
    return on * y + (1 - on) * x


def grayscale(x: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
    on = _mask(gen, x.shape[0], p)
    g = torch.einsum("bchw,c->bhw", x, _LUM).unsqueeze(1).expand_as(x)
    return on * g + (1 - on) * x


def gaussian_blur(x: torch.Tensor, p: float, sigma, gen: torch.Generator, radius: int = 3) -> torch.Tensor:
    b, c, h, w = x.shape
    on = _mask(gen, b, p).view(b)
    sig = _u(gen, b, sigma[0], sigma[1])
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t.view(1, -1) / sig.view(-1, 1)) ** 2)
    k = k / k.sum(1, keepdim=True)
    delta = torch.zeros_like(k)
    delta[:, radius] = 1
    k = on.view(-1, 1) * k + (1 - on.view(-1, 1)) * delta
    k = k.repeat_interleave(c, 0)  # (b*c, K)
    y = F.pad(x.reshape(1, b * c, h, w), (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(y, k.view(b * c, 1, 1, -1), groups=b * c)
    y = F.conv2d(y, k.view(b * c, 1, -1, 1), groups=b * c)
    return y.view(b, c, h, w)


def solarize(x: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
    on = _mask(gen, x.shape[0], p)
    return on * torch.where(x >= 0.5, 1 - x, x) + (1 - on) * x


def normalize(x: torch.Tensor) -> torch.Tensor:
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def apply_view(x: torch.Tensor, spec: dict, gen: torch.Generator) -> torch.Tensor:
    """``x``: (B,3,H,W) float in [0,1]. Returns a normalised augmented view (B,3,size,size)."""
    y = random_resized_crop(x, spec["size"], spec.get("scale", (1.0, 1.0)), spec.get("ratio", (3 / 4, 4 / 3)), gen)
    if spec.get("hflip_p", 0.0):
        on = _mask(gen, y.shape[0], spec["hflip_p"])
        y = on * y.flip(-1) + (1 - on) * y
    if spec.get("color_jitter_p", 0.0):
        y = color_jitter(y, spec, gen)
    if spec.get("grayscale_p", 0.0):
        y = grayscale(y, spec["grayscale_p"], gen)
    if spec.get("blur_p", 0.0):
        y = gaussian_blur(y, spec["blur_p"], spec.get("blur_sigma", (0.1, 1.0)), gen)
    if spec.get("solarize_p", 0.0):
        y = solarize(y, spec["solarize_p"], gen)
    return normalize(y.clamp(0, 1))


def to_float(images_uint8) -> torch.Tensor:
    """(N,H,W,3) uint8 array -> (N,3,H,W) float tensor in [0,1]."""
    return torch.as_tensor(images_uint8).permute(0, 3, 1, 2).float().div_(255.0)
