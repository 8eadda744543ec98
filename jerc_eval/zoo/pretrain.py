"""Pretrain the reference zoo on PhotoDigits' TRAIN split (labels never used) and write weights + zoo.json.

    python -m jerc_eval.zoo.pretrain --out jerc_eval/zoo/weights --seed 0

Three encoders, each trained with its method's real objective:

* MAE  (reconstruction, RC): ViT encoder on the visible 25% of patches, light transformer decoder, MSE on
  per-patch normalised pixels of the masked patches. Saved as ``mae_pretrain_vit_zoo.pth`` =
  ``{"model": state_dict}`` with the encoder's timm keys plus MAE's official decoder keys.
* DINO (joint embedding, JE): student/teacher ResNet + DINO head (MLP with BatchNorm as in DINO's ResNet-50
  run, weight-normalised last layer over 4,096 prototypes), EMA teacher, centering + sharpening, two global
  crops. Saved as ``dino_resnetzoo_pretrain.pth`` = teacher backbone state dict (the layout of
  ``dino_resnet50_pretrain.pth``). ``CONFIGS["dino"]["arch"] = "vit_zoo"`` trains a DINO ViT instead.
* BYOL (joint embedding, JE): online ResNet + projector + predictor, EMA target, symmetric normalised MSE.
  Saved as ``byol_resnet_zoo.pth`` = torchvision-layout ResNet state dict (no fc).

Augmentation recipes are data (``RECIPES``); training hyper-parameters are in ``CONFIGS``, including the warm
restarts that follow each schedule (``restarts``). Budgets are given in images seen (source images drawn from the
train split; one draw yields all of a method's views).
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..models import ARCHS, VisionTransformer, build
from ..models.vit import Block
from .augment import apply_view, to_float
from .probe import PROBE, linear_probe

# Background swap (Ryali et al., ICML 2021, "background augmentations"): each JE view is re-rendered over another
# photograph crop with this probability, the digit layer kept; the renderer's exact digit mask stands in for the
# saliency masks used on real photos. It removes the background as a cue the two views share (docs/zoo.md).
SWAP_P = 0.8
_PHOTO = dict(color_jitter_p=0.8, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, grayscale_p=0.2)

RECIPES: dict[str, dict] = {
    "mae": {
        "views": [dict(size=32, scale=[0.4, 1.0], ratio=[3 / 4, 4 / 3], hflip_p=0.0)],
        "notes": "MAE: random resized crop only (no colour augmentation, no flips); 75% random patch masking",
    },
    "dino": {
        # DINO's two global crops only (its "2x224" setting, without local crops); the same asymmetric views and
        # background swap as BYOL. With local 16 px crops every ViT pilot collapsed; the ResNet was trained
        # without them (docs/zoo.md).
        "views": [
            dict(n=1, size=32, scale=[0.4, 1.0], ratio=[3 / 4, 4 / 3], **_PHOTO, blur_p=1.0,
                 blur_sigma=[0.1, 1.0], solarize_p=0.0, hflip_p=0.0, bg_swap_p=SWAP_P),
            dict(n=1, size=32, scale=[0.4, 1.0], ratio=[3 / 4, 4 / 3], **_PHOTO, blur_p=0.1,
                 blur_sigma=[0.1, 1.0], solarize_p=0.2, hflip_p=0.0, bg_swap_p=SWAP_P),
        ],
        "notes": "DINO: two global 32px crops (teacher and student; blur/solarisation as in DINO's global crops), "
                 "no local crops; background swap (p 0.8) on each view",
    },
    "byol": {
        "views": [
            dict(size=32, scale=[0.4, 1.0], ratio=[3 / 4, 4 / 3], **_PHOTO, blur_p=1.0, blur_sigma=[0.1, 1.0],
                 solarize_p=0.0, hflip_p=0.0, bg_swap_p=SWAP_P),
            dict(size=32, scale=[0.4, 1.0], ratio=[3 / 4, 4 / 3], **_PHOTO, blur_p=0.1, blur_sigma=[0.1, 1.0],
                 solarize_p=0.2, hflip_p=0.0, bg_swap_p=SWAP_P),
        ],
        "notes": "BYOL: two asymmetric 32px views (blur/solarisation as in the paper, scaled to 32px); "
                 "background swap (p 0.8) on each view",
    },
}

CONFIGS: dict[str, dict] = {
    # the same budget in images seen for every method (epochs x 6,000 train images); batch 64 gives more steps
    # per image on a CPU, which is what a short budget needs. Every method runs its 60-epoch schedule, then warm
    # restarts of 20 and 32 epochs (``restarts``: a fresh warm-up and cosine schedule and fresh heads/projectors
    # from the saved encoder): 112 epochs in all. The first restart lifted DINO's trainer probe from 43 % to 68 %
    # and BYOL's from 53 % to 64 % (docs/zoo.md, "Fifth round"). In the second, the JE ResNets move to the
    # stride-2 stem (same weights, a quarter of the forward cost, so the default run fits its time budget); at the
    # switch their probes fall to 34 % and the restart wins most of it back (docs/zoo.md, "Sixth round")
    "mae": dict(arch="vit_zoo", paradigm="RC", file="mae_pretrain_vit_zoo.pth", epochs=60, batch=64, lr=1.5e-3,
                weight_decay=0.05, warmup_epochs=4, mask_ratio=0.75, decoder_dim=64, decoder_depth=2,
                decoder_heads=2, norm_pix_loss=True, input_size=32, restarts=[20, 32]),
    # DINO on the zoo ResNet, as DINO's ResNet-50 release (BN in the head); 4,096 prototypes on a 64-d bottleneck
    # (DINO keeps K far above the bottleneck width, or the student can turn uniform); BYOL's optimiser settings
    "dino": dict(arch="resnet_zoo", paradigm="JE", file="dino_resnetzoo_pretrain.pth", epochs=60, batch=64,
                 lr=2e-3, weight_decay=1e-4, warmup_epochs=4, out_dim=4096, head_hidden=512, head_bottleneck=64,
                 use_bn_in_head=True, student_temp=0.1, teacher_temp=[0.04, 0.04], teacher_temp_warmup_epochs=1,
                 center_momentum=0.9, momentum=[0.99, 1.0], clip_grad=3.0, freeze_last_layer_epochs=1,
                 input_size=32, restarts=[20, dict(epochs=32, arch="resnet_zoo_s2")]),
    "byol": dict(arch="resnet_zoo", paradigm="JE", file="byol_resnet_zoo.pth", epochs=60, batch=64, lr=2e-3,
                 weight_decay=1e-4, warmup_epochs=4, proj_hidden=512, proj_dim=128, momentum=[0.99, 1.0],
                 input_size=32, restarts=[20, dict(epochs=32, arch="resnet_zoo_s2")]),
}


BG_BANK = 4000  # background crops for the background-swap augmentation (their own seeded stream)


def cosine(base: float, final: float, step: int, total: int, warmup: int = 0, start: float = 0.0) -> float:
    if step < warmup:
        return start + (base - start) * step / max(1, warmup)
    t = (step - warmup) / max(1, total - warmup)
    return final + 0.5 * (base - final) * (1 + math.cos(math.pi * min(1.0, t)))


# ----------------------------------------------------------------------------------------------------- MAE
def sincos_pos_embed(dim: int, grid: int, cls: bool = True) -> torch.Tensor:
    """MAE's fixed 2-D sine-cosine position embedding, (1, [1+] grid*grid, dim)."""
    def one(d, pos):
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    gh, gw = np.meshgrid(np.arange(grid, dtype=np.float64), np.arange(grid, dtype=np.float64))
    emb = np.concatenate([one(dim // 2, gw), one(dim // 2, gh)], axis=1)
    if cls:
        emb = np.concatenate([np.zeros([1, dim]), emb], axis=0)
    return torch.from_numpy(emb).float().unsqueeze(0)


class MaskedAutoencoderViT(VisionTransformer):
    """Encoder = the zoo ViT (timm keys); decoder attributes use MAE's official names."""

    def __init__(self, decoder_dim=64, decoder_depth=2, decoder_heads=2, norm_pix_loss=True, **vit_kwargs):
        super().__init__(**vit_kwargs)
        grid = self.img_size // self.patch_size
        d = self.embed_dim
        self.pos_embed.requires_grad_(False)
        self.pos_embed.data.copy_(sincos_pos_embed(d, grid))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.decoder_embed = nn.Linear(d, decoder_dim)
        self.decoder_pos_embed = nn.Parameter(sincos_pos_embed(decoder_dim, grid), requires_grad=False)
        self.decoder_blocks = nn.ModuleList([Block(decoder_dim, decoder_heads, 4.0) for _ in range(decoder_depth)])
        self.decoder_norm = nn.LayerNorm(decoder_dim, eps=1e-6)
        self.decoder_pred = nn.Linear(decoder_dim, self.patch_size ** 2 * 3)
        self.norm_pix_loss = norm_pix_loss
        nn.init.normal_(self.mask_token, std=0.02)
        for m in [self.decoder_embed, self.decoder_pred, *self.decoder_blocks.modules()]:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        p, b = self.patch_size, x.shape[0]
        g = x.shape[2] // p
        x = x.reshape(b, 3, g, p, g, p).permute(0, 2, 4, 3, 5, 1)
        return x.reshape(b, g * g, p * p * 3)

    def mae_loss(self, x: torch.Tensor, mask_ratio: float, gen: torch.Generator) -> torch.Tensor:
        b = x.shape[0]
        t = self.patch_embed(x) + self.pos_embed[:, 1:]
        n = t.shape[1]
        keep = int(n * (1 - mask_ratio))
        noise = torch.rand(b, n, generator=gen)
        shuffle = noise.argsort(1)
        restore = shuffle.argsort(1)
        vis = torch.gather(t, 1, shuffle[:, :keep, None].expand(-1, -1, t.shape[2]))
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(b, -1, -1)
        h = torch.cat([cls, vis], 1)
        for blk in self.blocks:
            h = blk(h)
        h = self.decoder_embed(self.norm(h))
        dd = h.shape[2]
        seq = torch.cat([h[:, 1:], self.mask_token.expand(b, n - keep, -1)], 1)
        seq = torch.gather(seq, 1, restore[:, :, None].expand(-1, -1, dd))
        h = torch.cat([h[:, :1], seq], 1) + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            h = blk(h)
        pred = self.decoder_pred(self.decoder_norm(h))[:, 1:]
        target = self.patchify(x)
        if self.norm_pix_loss:
            target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
        mask = torch.ones(b, n)
        mask[:, :keep] = 0
        mask = torch.gather(mask, 1, restore)
        return (((pred - target) ** 2).mean(-1) * mask).sum() / mask.sum()

    def encoder_and_decoder_state(self) -> dict:
        return self.state_dict()


# ---------------------------------------------------------------------------------------------------- DINO
class DINOHead(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, hidden: int = 512, bottleneck: int = 128,
                 norm_last_layer: bool = True, use_bn: bool = False):
        super().__init__()
        if use_bn:  # DINO's use_bn_in_head (its ResNet-50 setting)
            self.mlp = nn.Sequential(nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.GELU(),
                                     nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.GELU(),
                                     nn.Linear(hidden, bottleneck))
        else:
            self.mlp = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                                     nn.Linear(hidden, bottleneck))
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_layer = nn.utils.parametrizations.weight_norm(nn.Linear(bottleneck, out_dim, bias=False))
        self.last_layer.parametrizations.weight.original0.data.fill_(1.0)
        # DINO's norm_last_layer: the weight-norm gain stays 1 (True) or is learnt (False, DINO's advice for small ViTs)
        self.last_layer.parametrizations.weight.original0.requires_grad_(not norm_last_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last_layer(F.normalize(self.mlp(x), dim=-1))


@torch.no_grad()
def sinkhorn_knopp(logits: torch.Tensor, iters: int = 3) -> torch.Tensor:
    """Teacher targets with equal use of the K prototypes over the batch (DINOv2's Sinkhorn-Knopp centering, as
    in SwAV): alternately normalise the (K, B) matrix exp(logits).T over prototypes and over samples; returns
    (B, K) rows that sum to 1. Replaces DINO's EMA centering, which a small batch lets collapse to uniform."""
    q = torch.exp(logits - logits.max()).t()
    q /= q.sum()
    k, b = q.shape
    for _ in range(iters):
        q /= q.sum(dim=1, keepdim=True)
        q /= k
        q /= q.sum(dim=0, keepdim=True)
        q /= b
    return (q * b).t()


class MultiCropWrapper(nn.Module):
    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, crops: list[torch.Tensor]) -> torch.Tensor:
        # group crops of equal resolution into one forward pass
        out, i = [], 0
        while i < len(crops):
            j = i
            while j < len(crops) and crops[j].shape[-1] == crops[i].shape[-1]:
                j += 1
            out.append(self.backbone(torch.cat(crops[i:j])))
            i = j
        return self.head(torch.cat(out))


# ---------------------------------------------------------------------------------------------------- BYOL
def mlp(in_dim: int, hidden: int, out: int) -> nn.Module:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, out))


# ---------------------------------------------------------------------------------------------- training
def _param_groups(model: nn.Module):
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or n.endswith(".bias") or "token" in n or "pos_embed" in n else decay).append(p)
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


class Layers:
    """Digit coverage/colour of the train images plus a bank of background crops, at the encoders' input size."""

    def __init__(self, layers: dict, bank: np.ndarray, size: int):
        self.cover = to_input_size(torch.from_numpy(layers["cover"]).unsqueeze(1), size)
        self.colour = torch.from_numpy(layers["colour"]).view(-1, 3, 1, 1)
        self.bank = to_input_size(torch.from_numpy(bank).permute(0, 3, 1, 2).contiguous(), size)

    def swap(self, x: torch.Tensor, idx: torch.Tensor, p: float, gen: torch.Generator,
             recolour_p: float = 0.0) -> torch.Tensor:
        """Background-swap augmentation: with probability ``p`` re-render each image over a random bank crop;
        with probability ``recolour_p`` (of the swapped ones) the digit also gets a new random colour."""
        b = len(idx)
        j = torch.randint(len(self.bank), (b,), generator=gen)
        on = (torch.rand(b, generator=gen) < p).float().view(b, 1, 1, 1)
        new_col = torch.rand(b, 3, 1, 1, generator=gen)
        rec = (torch.rand(b, generator=gen) < recolour_p).float().view(b, 1, 1, 1)
        colour = rec * new_col + (1 - rec) * self.colour[idx]
        a = self.cover[idx]
        swapped = self.bank[j] * (1 - a) + colour * a
        return on * swapped + (1 - on) * x


def _views(x: torch.Tensor, recipe: dict, gen: torch.Generator, layers: "Layers | None" = None,
           idx: torch.Tensor | None = None) -> list[torch.Tensor]:
    out = []
    for spec in recipe["views"]:
        for _ in range(spec.get("n", 1)):
            src = x
            if spec.get("bg_swap_p", 0.0):
                if layers is None:
                    raise ValueError("bg_swap_p needs the dataset's layers (train_method(layers=...))")
                src = layers.swap(x, idx, spec["bg_swap_p"], gen, spec.get("recolour_p", 0.0))
            out.append(apply_view(src, spec, gen))
    return out


def to_input_size(x: torch.Tensor, size: int) -> torch.Tensor:
    """Resize training images to the encoders' input size exactly as evaluation does, in chunks."""
    from ..features import resize

    return torch.cat([resize(x[i:i + 1000], size) for i in range(0, len(x), 1000)])


def _load_init(module: nn.Module, state: dict, method: str) -> None:
    """Load a saved zoo state into ``module``; every key the module shares with the file must be there."""
    own = module.state_dict()
    shared = {k: v for k, v in state.items() if k in own}
    missing = [k for k in own if k not in shared and not k.startswith(("decoder", "mask_token"))]
    if not shared or (method != "mae" and missing):
        raise ValueError(f"{method}: the init state does not fit the model (missing e.g. {missing[:3]})")
    module.load_state_dict(shared, strict=False)


def train_method(method: str, train_images: np.ndarray, seed: int, cfg: dict | None = None, log=print,
                 layers: "Layers | None" = None, recipe: dict | None = None, init: dict | None = None,
                 on_epoch=None):
    """Train one method; returns (encoder module, state dict to save, stats).

    ``init``: a state dict in the layout this function saves (MAE ``{"model": ...}`` with the decoder, DINO's and
    BYOL's plain backbone) to continue pretraining from; heads/projectors/predictors the file lacks start fresh.
    ``on_epoch(epoch, encoder)``: called after every epoch with the encoder as it would be saved then (eval mode;
    for MAE a copy), e.g. to record a probe-vs-epochs curve.
    """
    cfg = {**CONFIGS[method], **(cfg or {})}
    recipe = recipe or RECIPES[method]
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng([seed, 11])
    data = to_input_size(to_float(train_images), cfg.get("input_size", 32))
    n = len(data)
    bs = cfg["batch"]
    steps_per_epoch = n // bs
    total = steps_per_epoch * cfg["epochs"]
    warm = steps_per_epoch * cfg["warmup_epochs"]
    arch_kwargs = dict(ARCHS[cfg["arch"]]["kwargs"])

    if method == "mae":
        model = MaskedAutoencoderViT(decoder_dim=cfg["decoder_dim"], decoder_depth=cfg["decoder_depth"],
                                     decoder_heads=cfg["decoder_heads"], norm_pix_loss=cfg["norm_pix_loss"],
                                     **arch_kwargs)
        if init is not None:
            _load_init(model, init.get("model", init), method)
        params = _param_groups(model)
    elif method == "dino":
        backbone = build(cfg["arch"])  # a ViT, or a ResNet as in DINO's ResNet-50 release
        student = MultiCropWrapper(backbone, DINOHead(backbone.num_features, cfg["out_dim"],
                                                                cfg["head_hidden"], cfg["head_bottleneck"],
                                                                cfg.get("norm_last_layer", True),
                                                                cfg.get("use_bn_in_head", False)))
        if init is not None:
            _load_init(student.backbone, init, method)
        teacher = copy.deepcopy(student)
        for p in teacher.parameters():
            p.requires_grad_(False)
        center = torch.zeros(1, cfg["out_dim"])
        params = _param_groups(student)
        model = student
    elif method == "byol":
        online = build(cfg["arch"])
        if init is not None:
            _load_init(online, init, method)
        feat = online.num_features
        projector = mlp(feat, cfg["proj_hidden"], cfg["proj_dim"])
        predictor = mlp(cfg["proj_dim"], cfg["proj_hidden"], cfg["proj_dim"])
        model = nn.ModuleDict({"online": online, "projector": projector, "predictor": predictor})
        target = nn.ModuleDict({"online": copy.deepcopy(online), "projector": copy.deepcopy(projector)})
        for p in target.parameters():
            p.requires_grad_(False)
        params = _param_groups(model)
    else:
        raise KeyError(method)

    wd = cfg["weight_decay"]
    wd0 = wd[0] if isinstance(wd, list) else wd
    for g in params:
        g.setdefault("weight_decay", wd0)
    opt = torch.optim.AdamW(params, lr=cfg["lr"], betas=(0.9, 0.95 if method == "mae" else 0.999))
    t0 = time.time()
    step = 0
    seen = 0
    losses = []
    model.train()
    for epoch in range(cfg["epochs"]):
        perm = rng.permutation(n)
        ep_loss = 0.0
        for it in range(steps_per_epoch):
            idx = torch.from_numpy(perm[it * bs:(it + 1) * bs])
            x = data[idx]
            lr = cosine(cfg["lr"], 1e-6, step, total, warm)
            for g in opt.param_groups:
                g["lr"] = lr
            if isinstance(wd, list):
                opt.param_groups[0]["weight_decay"] = cosine(wd[0], wd[1], step, total)
            if method == "mae":
                loss = model.mae_loss(_views(x, recipe, gen, layers, idx)[0], cfg["mask_ratio"], gen)
            elif method == "dino":
                crops = _views(x, recipe, gen, layers, idx)
                with torch.no_grad():
                    t_out = teacher(crops[:2])
                s_out = student(crops)
                tt = (cfg["teacher_temp"][0] + (cfg["teacher_temp"][1] - cfg["teacher_temp"][0])
                      * min(1.0, epoch / max(1, cfg["teacher_temp_warmup_epochs"])))
                if cfg.get("centering", "ema") == "sinkhorn_knopp":
                    t_soft = sinkhorn_knopp(t_out / tt, cfg.get("sk_iters", 3)).chunk(2)
                else:
                    t_soft = F.softmax((t_out - center) / tt, dim=-1).chunk(2)
                s_logp = F.log_softmax(s_out / cfg["student_temp"], dim=-1).chunk(len(crops))
                loss, terms = 0.0, 0
                for iq, q in enumerate(t_soft):
                    for v, lp in enumerate(s_logp):
                        if v == iq:
                            continue
                        loss = loss + (-q * lp).sum(-1).mean()
                        terms += 1
                loss = loss / terms
                with torch.no_grad():
                    center = center * cfg["center_momentum"] + t_out.mean(0, keepdim=True) * (
                        1 - cfg["center_momentum"])
            else:
                v1, v2 = _views(x, recipe, gen, layers, idx)
                z = model["projector"](model["online"](torch.cat([v1, v2])))
                p = model["predictor"](z)
                with torch.no_grad():
                    zt = target["projector"](target["online"](torch.cat([v1, v2])))
                p1, p2 = p.chunk(2)
                t1, t2 = zt.chunk(2)
                loss = (2 - 2 * F.cosine_similarity(p1, t2, dim=-1)).mean() + \
                       (2 - 2 * F.cosine_similarity(p2, t1, dim=-1)).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if method == "dino":
                nn.utils.clip_grad_norm_(student.parameters(), cfg["clip_grad"])
                if epoch < cfg["freeze_last_layer_epochs"]:
                    for p_ in student.head.last_layer.parameters():
                        p_.grad = None
            opt.step()
            if method in ("dino", "byol"):
                m = cfg["momentum"][1] - (cfg["momentum"][1] - cfg["momentum"][0]) * (
                    math.cos(math.pi * step / total) + 1) / 2
                src, dst = (student, teacher) if method == "dino" else (model, target)
                with torch.no_grad():
                    sp = dict(src.named_parameters())
                    for name, pt in dst.named_parameters():
                        pt.mul_(m).add_(sp[name].detach(), alpha=1 - m)
                    if method == "byol":
                        sb = dict(src.named_buffers())
                        for name, bt in dst.named_buffers():
                            bt.copy_(sb[name])
            ep_loss += float(loss.detach())
            step += 1
            seen += len(idx)
        losses.append(ep_loss / steps_per_epoch)
        log(f"[{method}] epoch {epoch + 1}/{cfg['epochs']} loss {losses[-1]:.4f} "
            f"lr {lr:.2e} {time.time() - t0:.0f}s")
        if on_epoch is not None:
            enc_now, _ = _encoder_and_state(method, cfg, model, teacher if method == "dino" else None)
            was = enc_now.training
            on_epoch(epoch + 1, enc_now.eval())
            enc_now.train(was)
    wall = time.time() - t0

    encoder, to_save = _encoder_and_state(method, cfg, model, teacher if method == "dino" else None)
    stats = dict(images_seen=seen, epochs=cfg["epochs"], steps=step, wall_seconds=round(wall, 1),
                 final_loss=losses[-1], loss_curve=[round(v, 5) for v in losses], config=cfg)
    return encoder.eval(), to_save, stats


def _encoder_and_state(method: str, cfg: dict, model: nn.Module, teacher: nn.Module | None):
    """The encoder a method ships (MAE: the encoder part of the autoencoder, DINO: the teacher's backbone, BYOL: the
    online network) and the state dict saved in the method's official layout."""
    if method == "mae":
        encoder = build(cfg["arch"])
        sd = model.state_dict()
        encoder.load_state_dict({k: v for k, v in sd.items() if k in encoder.state_dict()})
        return encoder, {"model": {k: v.detach().clone() for k, v in sd.items()}}
    encoder = teacher.backbone if method == "dino" else model["online"]
    return encoder, {k: v.detach().clone() for k, v in encoder.state_dict().items()}


def reprobe(index: dict, out: Path, train, test, seed: int) -> None:
    """Re-measure every saved encoder's linear probe (and its random-init floor) from the files on disk."""
    for entry in index["encoders"].values():
        sd = torch.load(out / entry["file"], map_location="cpu", weights_only=True)
        sd = sd.get("model", sd)
        enc = build(entry["arch"])
        enc.load_state_dict({k: v for k, v in sd.items() if k in enc.state_dict()})
        entry["linear_probe_test_acc"] = linear_probe(enc.eval(), train, test)
        torch.manual_seed(seed)
        entry["random_init_linear_probe_test_acc"] = linear_probe(build(entry["arch"]).eval(), train, test)
        entry["arch_kwargs"] = ARCHS[entry["arch"]]["kwargs"]
        print(f"[{entry['method']}] probe: trained {entry['linear_probe_test_acc']:.4f} "
              f"random-init {entry['random_init_linear_probe_test_acc']:.4f}")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _budget_record(path: Path, entry: dict) -> dict:
    """What a continuation records of the weights it starts from: their file's sha256 and the budget that made them
    (``entry``: their zoo.json entry, or the stats of the phase that just saved them)."""
    return {"file_sha256": _sha256(path), "images_seen": entry.get("images_seen", 0), "epochs": entry.get("epochs", 0),
            "probe_curve": entry.get("probe_curve", []), "wall_seconds": entry.get("wall_seconds", 0.0)}


def phases(method: str) -> list[dict]:
    """The schedule of ``method`` and its warm restarts, each ``{"epochs": n, "arch": name}``. A restart is a number
    of epochs, or a dict that may also switch to another architecture with the same weight layout (the zoo's JE
    ResNets move to the stride-2 stem for their last restart); otherwise it keeps the phase before's."""
    cfg = CONFIGS[method]
    out = [{"epochs": cfg["epochs"], "arch": cfg["arch"]}]
    for r in cfg.get("restarts", ()):
        out.append({"arch": out[-1]["arch"], **(r if isinstance(r, dict) else {"epochs": r})})
    return out


def shipped_arch(method: str) -> str:
    """The architecture ``method``'s zoo encoder ships in: its last phase's."""
    return phases(method)[-1]["arch"]


def _train_phase(method: str, phase: dict, train, test, args, layers, init: dict | None,
                 before: dict | None) -> tuple[nn.Module, dict, dict]:
    """One training phase of ``method`` (``phase``: its epochs and architecture; ``init``: weights to start from,
    ``before``: their record); the stats cover the whole budget so far (images seen, epochs, wall time, probe
    curve) and name the phase it continued."""
    epochs = phase["epochs"]
    override = {"epochs": epochs} if epochs != CONFIGS[method]["epochs"] else {}
    if override and epochs < CONFIGS[method]["warmup_epochs"] * 2:
        override["warmup_epochs"] = max(1, epochs // 5)
    if phase["arch"] != CONFIGS[method]["arch"]:
        override["arch"] = phase["arch"]
    curve = []

    def probe_epoch(epoch: int, encoder: nn.Module) -> None:
        if args.probe_every and epoch % args.probe_every == 0:
            curve.append([epoch + (before or {}).get("epochs", 0), linear_probe(encoder, train, test)])
            print(f"[{method}] epoch {curve[-1][0]}: probe {curve[-1][1]:.4f}", flush=True)

    enc, to_save, stats = train_method(method, train.images, args.seed, override or None, layers=layers, init=init,
                                       on_epoch=probe_epoch if args.probe_every else None)
    if before is not None:  # one record for the whole budget: earlier phases + this one
        stats = {**stats, "continued_from": before,
                 "images_seen": stats["images_seen"] + before["images_seen"],
                 "epochs": stats["epochs"] + before["epochs"],
                 "wall_seconds": round(stats["wall_seconds"] + before["wall_seconds"], 1)}
    stats["probe_curve"] = (before or {}).get("probe_curve", []) + curve
    return enc, to_save, stats


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="jerc_eval/zoo/weights")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--methods", default="mae,dino,byol")
    ap.add_argument("--epochs", type=int, default=None,
                    help="run one phase of N epochs instead of the schedule and its restarts (pilots, continuations)")
    ap.add_argument("--arch", default=None, choices=sorted(ARCHS),
                    help="the architecture of that one phase (default: the method's); with --init-from, its weight "
                         "layout must be the init's")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--deterministic", action="store_true", help="torch.use_deterministic_algorithms (slow)")
    ap.add_argument("--data-cache", default=None, help="directory with train/test .npy arrays (optional)")
    ap.add_argument("--reprobe", action="store_true", help="only re-measure the probes of the weights in --out")
    ap.add_argument("--init-from", metavar="DIR", default=None,
                    help="continue pretraining from the weights (and zoo.json) in DIR; budgets and curves add up")
    ap.add_argument("--probe-every", type=int, default=0, metavar="N",
                    help="probe the encoder every N epochs and record the curve in zoo.json (0: only at the end)")
    args = ap.parse_args(argv)
    if args.arch and not args.epochs:
        ap.error("--arch sets the architecture of one --epochs N phase; add --epochs")

    torch.set_num_threads(args.threads)
    # torch.use_deterministic_algorithms(True) works on CPU but made DINO ~3x slower here (measured 86 s vs
    # ~28 s per epoch); CPU kernels with a fixed thread count are run-to-run deterministic without it.
    if args.deterministic:
        torch.use_deterministic_algorithms(True)
    from ..datasets import photodigits as pd

    if args.data_cache and Path(args.data_cache, "train_x.npy").exists():
        from types import SimpleNamespace
        c = Path(args.data_cache)
        train = SimpleNamespace(images=np.load(c / "train_x.npy"), labels=np.load(c / "train_y.npy"))
        test = SimpleNamespace(images=np.load(c / "test_x.npy"), labels=np.load(c / "test_y.npy"))
        fp = None
    else:
        train, test = pd.build_split("train", seed=0), pd.build_split("test", seed=0)
        fp = {"train": train.fingerprint, "test": test.fingerprint}

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    index_path = out / "zoo.json"
    index = json.loads(index_path.read_text()) if index_path.exists() else {"encoders": {}}
    index.update({"dataset": {"name": "photodigits", "version": pd.VERSION, "train_split": "train",
                              "probe_test_split": "test", "fingerprints": fp},
                  "probe": PROBE, "torch_version": torch.__version__, "threads": args.threads})
    names = {"mae": "mae_vit_zoo", "dino": "dino_resnet_zoo", "byol": "byol_resnet_zoo"}
    if args.reprobe:
        reprobe(index, out, train, test, args.seed)
        index_path.write_text(json.dumps(index, indent=1, default=list))
        return
    for method in args.methods.split(","):
        layers = None
        if any(v.get("bg_swap_p", 0.0) for v in RECIPES[method]["views"]):
            size = CONFIGS[method].get("input_size", 32)
            layers = Layers(pd.build_layers("train", seed=0), pd.background_bank(BG_BANK, seed=0), size)
        init, before = None, None
        if args.init_from:
            src = Path(args.init_from)
            init = torch.load(src / CONFIGS[method]["file"], map_location="cpu", weights_only=True)
            prev = json.loads((src / "zoo.json").read_text())["encoders"].get(names[method], {})
            before = _budget_record(src / CONFIGS[method]["file"], prev)
        path = out / CONFIGS[method]["file"]
        # the schedule, then each warm restart (a fresh warm-up and cosine schedule, fresh heads/projectors) from
        # the weights the phase before saved; --epochs runs one phase of that many epochs (pilots, continuations)
        todo = ([{"epochs": args.epochs, "arch": args.arch or CONFIGS[method]["arch"]}] if args.epochs
                else phases(method))
        for phase in todo:
            enc, to_save, stats = _train_phase(method, phase, train, test, args, layers, init, before)
            torch.save(to_save, path)
            init = to_save
            before = _budget_record(path, stats)
        phase_cfg = stats.pop("config")
        cfg = phase_cfg if args.epochs else dict(CONFIGS[method])  # the whole schedule, restarts included
        arch = todo[-1]["arch"]  # what ships: the last phase's architecture
        t = time.time()
        acc = linear_probe(enc, train, test)
        torch.manual_seed(args.seed)
        rand_acc = linear_probe(build(arch).eval(), train, test)
        print(f"[{method}] probe: trained {acc:.4f} random-init {rand_acc:.4f} ({time.time() - t:.0f}s)")
        index["encoders"][names[method]] = {
            "method": method, "paradigm": cfg["paradigm"], "arch": arch,
            "arch_kwargs": ARCHS[arch]["kwargs"], "file": path.name, "sha256": before["file_sha256"],
            "format": ("{'model': state_dict} (timm encoder keys + MAE decoder keys)" if method == "mae"
                       else "plain backbone state_dict"),
            **stats, "seed": args.seed, "torch_version": torch.__version__,
            "augmentation": RECIPES[method], "hyperparameters": cfg,
            "linear_probe_test_acc": acc, "random_init_linear_probe_test_acc": rand_acc,
        }
        index_path.write_text(json.dumps(index, indent=1, default=list))


if __name__ == "__main__":
    main()
