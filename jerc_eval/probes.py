"""Linear probes in torch: multinomial L2 logistic regression by full-batch L-BFGS (GPU when present).

The objective is scikit-learn's ``LogisticRegression(C=C)`` (multinomial, intercept unpenalised) divided by n:
``mean_i CE(W x_i + b, y_i) + ||W||^2 / (2 C n)``. C is chosen on a seeded, stratified held-out part of the
train split, then the probe is refit on all of train (DINOv2's log-regression protocol, on a smaller grid).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class LogRegModel:
    weight: Any  # (C, D) tensor
    bias: Any  # (C,) tensor
    mean: Any  # (D,) standardisation
    std: Any

    def logits(self, feats: np.ndarray) -> Any:
        import torch

        x = torch.as_tensor(feats, dtype=self.weight.dtype, device=self.weight.device)
        return ((x - self.mean) / self.std) @ self.weight.T + self.bias

    def predict(self, feats: np.ndarray) -> np.ndarray:
        return self.logits(feats).argmax(1).cpu().numpy().astype(np.int64)


def _fit_lbfgs(x: Any, y: Any, num_classes: int, C: float, max_iter: int, init: tuple | None = None) -> tuple:
    import torch

    n, d = x.shape
    w = torch.zeros(num_classes, d, dtype=x.dtype, device=x.device) if init is None else init[0].clone()
    b = torch.zeros(num_classes, dtype=x.dtype, device=x.device) if init is None else init[1].clone()
    w.requires_grad_(True)
    b.requires_grad_(True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, tolerance_grad=1e-6, tolerance_change=1e-9,
                            history_size=20, line_search_fn="strong_wolfe")
    lam = 1.0 / (2.0 * C * n)

    def closure() -> Any:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ w.T + b, y) + lam * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def stratified_holdout(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (fit, held_out) with ``fraction`` of every class held out, seeded."""
    rng = np.random.default_rng([seed, 11])
    held = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        held.append(idx[: max(1, int(round(len(idx) * fraction)))])
    held_idx = np.sort(np.concatenate(held))
    fit_idx = np.setdiff1d(np.arange(len(labels)), held_idx)
    return fit_idx, held_idx


def fit_logreg(features: np.ndarray, labels: np.ndarray, num_classes: int, *, c_grid: tuple[float, ...],
               val_fraction: float, max_iter: int, seed: int, device: str) -> tuple[LogRegModel, dict]:
    """Choose C on a held-out split, refit on everything; returns the model and its hyperparameters."""
    import torch

    dtype = torch.float64 if device == "cpu" else torch.float32
    x_all = torch.as_tensor(features, dtype=dtype, device=device)
    y_all = torch.as_tensor(labels, dtype=torch.long, device=device)
    mean, std = x_all.mean(0), x_all.std(0).clamp_min(1e-6)
    xs = (x_all - mean) / std
    scores = {}
    if len(c_grid) > 1:
        fit_idx, val_idx = stratified_holdout(labels, val_fraction, seed)
        fi, vi = torch.as_tensor(fit_idx, device=device), torch.as_tensor(val_idx, device=device)
        init = None
        for C in sorted(c_grid):  # warm-start along increasing C (weaker regularisation)
            init = _fit_lbfgs(xs[fi], y_all[fi], num_classes, C, max_iter, init)
            pred = (xs[vi] @ init[0].T + init[1]).argmax(1)
            scores[C] = float((pred == y_all[vi]).double().mean())
        best_c = max(sorted(c_grid), key=lambda c: (scores[c], -c))  # ties -> stronger regularisation
    else:
        best_c = c_grid[0]
    w, b = _fit_lbfgs(xs, y_all, num_classes, best_c, max_iter)
    model = LogRegModel(w, b, mean, std)
    train_acc = float((model.predict(features) == labels).mean())
    info = {"C": best_c, "c_grid": list(c_grid), "val_fraction": val_fraction, "val_accuracy_by_C": scores,
            "max_iter": max_iter, "optimizer": "L-BFGS (strong Wolfe), full batch", "standardize": True,
            "dtype": str(dtype).replace("torch.", ""), "device": device, "train_accuracy": train_acc,
            "n_train": int(len(labels)), "dim": int(features.shape[1])}
    return model, info


# ------------------------------------------------------------------------------------------- kNN (DINO)
@dataclass
class KNNModel:
    train: Any  # (N, D) L2-normalised train features
    labels: Any  # (N,) long
    num_classes: int
    k: int
    temperature: float
    chunk: int = 1024

    def predict(self, feats: np.ndarray) -> np.ndarray:
        """Cosine-similarity kNN with votes weighted by exp(sim / T) (DINO's eval_knn.py protocol)."""
        import torch

        x = torch.nn.functional.normalize(torch.as_tensor(feats, dtype=self.train.dtype,
                                                          device=self.train.device), dim=1)
        out = []
        k = min(self.k, self.train.shape[0])
        for start in range(0, len(x), self.chunk):
            sim = x[start:start + self.chunk] @ self.train.T
            top, idx = sim.topk(k, dim=1)
            votes = torch.zeros(len(top), self.num_classes, dtype=top.dtype, device=top.device)
            votes.scatter_add_(1, self.labels[idx], (top / self.temperature).exp())
            out.append(votes.argmax(1))
        return torch.cat(out).cpu().numpy().astype(np.int64)


def fit_knn(features: np.ndarray, labels: np.ndarray, num_classes: int, *, k: int, temperature: float,
            device: str) -> tuple[KNNModel, dict]:
    import torch

    train = torch.nn.functional.normalize(torch.as_tensor(features, dtype=torch.float32, device=device), dim=1)
    model = KNNModel(train, torch.as_tensor(labels, dtype=torch.long, device=device), num_classes, k, temperature)
    # train accuracy of a kNN counts each point as its own neighbour; report leave-one-out instead
    loo = KNNModel(train, model.labels, num_classes, k + 1, temperature).predict(features)
    info = {"k": k, "temperature": temperature, "metric": "cosine", "weights": "exp(sim/T)", "device": device,
            "train_accuracy_incl_self": float((loo == labels).mean()), "n_train": int(len(labels))}
    return model, info


# ----------------------------------------------------------------------------- SGD head (MAE linprobe)
@dataclass
class HeadModel:
    head: Any

    def predict(self, feats: np.ndarray) -> np.ndarray:
        import torch

        p = next(self.head.parameters())
        with torch.no_grad():
            logits = self.head(torch.as_tensor(feats, dtype=p.dtype, device=p.device))
        return logits.argmax(1).cpu().numpy().astype(np.int64)


def fit_sgd_head(features: np.ndarray, labels: np.ndarray, num_classes: int, *, epochs: int, lr: float,
                 batch_size: int, weight_decay: float, batchnorm: bool, seed: int,
                 device: str) -> tuple[HeadModel, dict]:
    """Minibatch SGD (momentum 0.9, cosine schedule) on a linear head, optionally after
    BatchNorm1d(affine=False, eps=1e-6) as in MAE's main_linprobe.py; lr scales as base_lr * batch / 256."""
    import math

    import torch

    gen = torch.Generator().manual_seed(seed)
    x = torch.as_tensor(features, dtype=torch.float32, device=device)
    y = torch.as_tensor(labels, dtype=torch.long, device=device)
    torch.manual_seed(seed)
    layers = [torch.nn.BatchNorm1d(x.shape[1], affine=False, eps=1e-6)] if batchnorm else []
    linear = torch.nn.Linear(x.shape[1], num_classes)
    torch.nn.init.trunc_normal_(linear.weight, std=0.01)
    torch.nn.init.zeros_(linear.bias)
    head = torch.nn.Sequential(*layers, linear).to(device)
    eff_lr = lr * batch_size / 256
    opt = torch.optim.SGD(head.parameters(), lr=eff_lr, momentum=0.9, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(x) / batch_size)
    total = epochs * steps_per_epoch
    step = 0
    head.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=gen).to(device)
        for start in range(0, len(x), batch_size):
            idx = perm[start:start + batch_size]
            for g in opt.param_groups:
                g["lr"] = eff_lr * 0.5 * (1 + math.cos(math.pi * step / total))
            loss = torch.nn.functional.cross_entropy(head(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
    head.eval()
    model = HeadModel(head)
    info = {"epochs": epochs, "base_lr": lr, "lr": eff_lr, "batch_size": batch_size, "weight_decay": weight_decay,
            "momentum": 0.9, "schedule": "cosine", "batchnorm_no_affine": batchnorm, "device": device,
            "train_accuracy": float((model.predict(features) == labels).mean()), "n_train": int(len(labels))}
    return model, info
