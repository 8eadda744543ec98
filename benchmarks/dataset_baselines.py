"""Dataset baselines for PhotoDigits: a small supervised CNN (upper reference) and raw-pixel logistic regression.

    python benchmarks/dataset_baselines.py [--size 32|64] [--epochs 12] [--seed 0]

``--size 32`` (the default, what `jerc-eval run` evaluates) scores the 64 px render downsampled to 32 px;
``--size 64`` the render itself.

Both are trained on the train split (6,000 images) and scored on the held-out test split (2,000 images, digit
samples never seen in training). Prints a table and writes benchmarks/results/dataset_baselines_<size>px.json.
Runs in a few minutes on 2 CPU cores.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from jerc_eval.datasets import photodigits as pd  # noqa: E402
from jerc_eval.zoo.augment import apply_view, normalize, to_float  # noqa: E402

AUG = dict(size=64, scale=[0.6, 1.0], ratio=[0.85, 1.18], color_jitter_p=0.8, brightness=0.3, contrast=0.3,
           saturation=0.3, hue=0.1, grayscale_p=0.1)


def small_cnn(num_classes: int = 10) -> nn.Module:
    """Five 3x3 conv layers; the first has stride 2 at either input size (16 x 16 maps after it at 32 px)."""
    def blk(i, o, s=1):
        return [nn.Conv2d(i, o, 3, s, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True)]

    return nn.Sequential(*blk(3, 32, 2), *blk(32, 48), nn.MaxPool2d(2), *blk(48, 96), nn.MaxPool2d(2),
                         *blk(96, 128), nn.MaxPool2d(2), *blk(128, 128), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(128, num_classes))


def train_cnn(train, test, epochs: int, seed: int, batch: int = 128, lr: float = 3e-3, size: int = 64) -> dict:
    aug = dict(AUG, size=size)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng([seed, 3])
    model = small_cnn()
    x, y = to_float(train.images), torch.as_tensor(train.labels)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)
    steps = len(x) // batch
    total, step, t0 = steps * epochs, 0, time.time()
    for ep in range(epochs):
        model.train()
        perm = rng.permutation(len(x))
        for i in range(steps):
            idx = torch.from_numpy(perm[i * batch:(i + 1) * batch])
            for g in opt.param_groups:
                g["lr"] = lr * min(1.0, (step + 1) / steps) * 0.5 * (1 + math.cos(math.pi * step / total))
            loss = F.cross_entropy(model(apply_view(x[idx], aug, gen)), y[idx], label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
        print(f"  cnn epoch {ep + 1}/{epochs} loss {float(loss.detach()):.3f} {time.time() - t0:.0f}s", flush=True)
    wall = time.time() - t0
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(normalize(to_float(test.images[i:i + 500]))).argmax(1)
                          for i in range(0, len(test.images), 500)]).numpy()
    return {"test_acc": float((pred == test.labels).mean()), "epochs": epochs, "wall_seconds": round(wall, 1),
            "params": sum(p.numel() for p in model.parameters()), "augmentation": aug, "batch": batch,
            "optimizer": f"AdamW lr {lr} cosine, wd 5e-4, label smoothing 0.1"}


def raw_pixel_logreg(train, test) -> dict:
    from sklearn.linear_model import LogisticRegression

    t0 = time.time()
    xtr = train.images.reshape(len(train.images), -1).astype(np.float32) / 255.0
    xte = test.images.reshape(len(test.images), -1).astype(np.float32) / 255.0
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
    clf = LogisticRegression(C=0.01, max_iter=300)
    clf.fit((xtr - mu) / sd, train.labels)
    acc = float((clf.predict((xte - mu) / sd) == test.labels).mean())
    return {"test_acc": acc, "wall_seconds": round(time.time() - t0, 1),
            "model": f"standardised raw pixels ({xtr.shape[1]:,} dims), LogisticRegression(lbfgs, C=0.01, max_iter=300)"}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=32, choices=(32, 64), help="stored image size (default 32)")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="default: benchmarks/results/dataset_baselines_<size>px.json")
    args = ap.parse_args(argv)
    out = args.out or str(Path(__file__).resolve().parent / "results" / f"dataset_baselines_{args.size}px.json")
    torch.set_num_threads(args.threads)
    train, test = pd.build_split("train", stored_size=args.size), pd.build_split("test", stored_size=args.size)
    res = {"dataset": {"name": "photodigits", "version": pd.VERSION, "image_size": args.size, "n_train": len(train.labels),
                       "n_test": len(test.labels), "train_fingerprint": train.fingerprint,
                       "test_fingerprint": test.fingerprint},
           "chance": 0.1, "seed": args.seed, "threads": args.threads, "torch_version": torch.__version__}
    res["raw_pixel_logreg"] = raw_pixel_logreg(train, test)
    res["supervised_cnn"] = train_cnn(train, test, args.epochs, args.seed, size=args.size)
    print(f"{'baseline':<22}{'test acc':>10}{'wall s':>9}")
    for k in ("raw_pixel_logreg", "supervised_cnn"):
        print(f"{k:<22}{res[k]['test_acc']:>10.4f}{res[k]['wall_seconds']:>9.1f}")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
