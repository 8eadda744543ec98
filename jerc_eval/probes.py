"""Linear probes in torch: multinomial L2 logistic regression by full-batch L-BFGS (GPU when present).

The objective is scikit-learn's ``LogisticRegression(C=C)`` (multinomial, intercept unpenalised) divided by n:
``mean_i CE(W x_i + b, y_i) + ||W||^2 / (2 C n)``. C is chosen by stratified k-fold cross-validation on the
train features (folds from the run seed and each image's content, not its position), then the probe is refit on
all of train (DINOv2's log-regression protocol: a C sweep, then a refit; here with CV instead of one holdout).
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
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


def on_one_cpu_thread(fit):
    """Run a probe fit on one torch thread when ``device`` is the CPU: its bits then do not depend on the machine's
    core count, and the pipeline runs several fits side by side, one per core (six default-run fits: 25.1 s one
    after another on 2 threads, 26.0 s on 1 thread, 16.9 s two at a time)."""
    import functools

    @functools.wraps(fit)
    def wrapper(*args: Any, device: str, **kwargs: Any) -> Any:
        if device != "cpu":
            return fit(*args, device=device, **kwargs)
        from .features import single_threaded

        with single_threaded():
            return fit(*args, device=device, **kwargs)
    return wrapper


def _fit_lbfgs(x: Any, y: Any, num_classes: int, C: float, max_iter: int, init: tuple | None = None) -> tuple:
    import torch

    n, d = x.shape
    w = torch.zeros(num_classes, d, dtype=x.dtype, device=x.device) if init is None else init[0].clone()
    b = torch.zeros(num_classes, dtype=x.dtype, device=x.device) if init is None else init[1].clone()
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, tolerance_grad=1e-6, tolerance_change=1e-9,
                            history_size=20, line_search_fn="strong_wolfe")
    lam = 1.0 / (2.0 * C * n)
    onehot = torch.nn.functional.one_hot(y, num_classes).to(x.dtype)

    def closure() -> Any:
        # loss and gradient in closed form (softmax - one-hot), without autograd: the same objective at a
        # fraction of the per-iteration overhead (benchmarks/bench_probe_cv.py)
        logits = torch.addmm(b, x, w.T)
        lse = torch.logsumexp(logits, 1)
        loss = (lse.sum() - (logits * onehot).sum()) / n + lam * (w * w).sum()
        resid = torch.exp(logits - lse[:, None]).sub_(onehot)
        w.grad = torch.addmm(w, resid.T, x, beta=2.0 * lam, alpha=1.0 / n)
        b.grad = resid.sum(0).div_(n)
        return loss

    with torch.no_grad():
        opt.step(closure)
    return w, b


def stratified_folds(labels: np.ndarray, k: int) -> tuple[np.ndarray, int]:
    """A fold id per row: within each class the rows take folds 0, 1, ..., k-1, 0, ... in the order given.

    The pipeline gives train rows in their canonical order (sorted by a seeded hash of each image's content,
    :func:`canonical_order`), so the folds depend on the run seed and the images, not on their positions in
    the user's files. ``k`` drops to the smallest class's size when that is smaller (at least 2); the k used
    is returned."""
    counts = np.bincount(labels)
    present = counts[counts > 0]
    k = int(max(2, min(k, present.min()))) if len(present) else 2
    folds = np.empty(len(labels), dtype=np.int64)
    for c in np.flatnonzero(counts):
        idx = np.flatnonzero(labels == c)
        folds[idx] = np.arange(len(idx)) % k
    return folds, k


def canonical_order(images: np.ndarray, seed: int) -> np.ndarray:
    """A permutation putting rows in the order of ``sha256(seed, image bytes)`` (ties by position): the same
    images in any order, from any container, give the same order, so probe fits and their model selection do
    not depend on file order."""
    import hashlib

    flat = np.ascontiguousarray(images).reshape(len(images), -1)
    prefix = f"jerc-eval/probe-order/{int(seed)}/".encode()
    digests = [hashlib.sha256(prefix + row.tobytes()).digest() for row in flat]
    return np.array(sorted(range(len(digests)), key=lambda i: (digests[i], i)), dtype=np.int64)


_PROBE_THREADS = threading.local()


@contextmanager
def fold_threads(n: int):
    """Inside the block (this thread only), :func:`fit_logreg` runs its folds on at most ``n`` threads (the
    pipeline passes 1 while it runs several fits side by side)."""
    old = getattr(_PROBE_THREADS, "n", None)
    _PROBE_THREADS.n = n
    try:
        yield
    finally:
        _PROBE_THREADS.n = old


def _fold_threads(jobs: int) -> int:
    from .engine import default_workers

    limit = getattr(_PROBE_THREADS, "n", None)
    return max(1, min(jobs, limit if limit is not None else default_workers()))


@on_one_cpu_thread
def fit_logreg(features: np.ndarray, labels: np.ndarray, num_classes: int, *, c_grid: tuple[float, ...],
               folds: int = 5, max_iter: int, seed: int, device: str) -> tuple[LogRegModel, dict]:
    """Choose C by stratified k-fold cross-validation (mean fold accuracy; ties go to the stronger
    regularisation), then refit on every train row; returns the model and its hyperparameters.

    Each fold sweeps the grid from the smallest C up, warm-starting each fit from the previous one. The folds
    are independent fits on one torch thread each, so they run side by side on the cores this process may
    use (:func:`fold_threads`), with the same bits whatever that number is. ``seed`` does not enter the fit:
    the folds come from the rows' order (see :func:`stratified_folds`)."""
    import torch

    # float32 on every device: on the CPU a 6-point C sweep on 6,000 x 480 zoo features ran about 3x faster than
    # in float64, with held-out accuracies within 0.2 points (tests/test_probes.py: parity with scikit-learn)
    dtype = torch.float32
    x_all = torch.as_tensor(features, dtype=dtype, device=device)
    y_all = torch.as_tensor(labels, dtype=torch.long, device=device)
    mean, std = x_all.mean(0), x_all.std(0).clamp_min(1e-6)
    xs = (x_all - mean) / std
    grid = sorted(c_grid)
    fold_scores: list[dict[float, float]] = []
    k_used = 0
    if len(grid) > 1:
        fold_of, k_used = stratified_folds(np.asarray(labels), folds)

        def sweep(f: int) -> dict[float, float]:
            fi = torch.as_tensor(np.flatnonzero(fold_of != f), device=device)
            vi = torch.as_tensor(np.flatnonzero(fold_of == f), device=device)
            init, out = None, {}
            for C in grid:  # warm-start along increasing C (weaker regularisation)
                init = _fit_lbfgs(xs[fi], y_all[fi], num_classes, C, max_iter, init)
                pred = (xs[vi] @ init[0].T + init[1]).argmax(1)
                out[C] = float((pred == y_all[vi]).double().mean())
            return out

        threads = _fold_threads(k_used) if device == "cpu" else 1
        if threads > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(threads) as pool:  # torch stays on one thread (on_one_cpu_thread)
                fold_scores = list(pool.map(sweep, range(k_used)))
        else:
            fold_scores = [sweep(f) for f in range(k_used)]
        mean_scores = {C: float(np.mean([fs[C] for fs in fold_scores])) for C in grid}
        best_c = max(grid, key=lambda c: (mean_scores[c], -c))
    else:
        mean_scores, best_c = {}, grid[0]
    w, b = _fit_lbfgs(xs, y_all, num_classes, best_c, max_iter)
    model = LogRegModel(w, b, mean, std)
    train_acc = float((model.predict(features) == labels).mean())
    info = {"C": best_c, "c_grid": list(c_grid), "selection": (f"stratified {k_used}-fold cross-validation, mean "
                                                                "fold accuracy" if k_used else "fixed C"),
            "folds": k_used, "cv_accuracy_by_C": mean_scores,
            "cv_fold_accuracy_by_C": {C: [fs[C] for fs in fold_scores] for C in grid} if fold_scores else {},
            "max_iter": max_iter, "optimizer": "L-BFGS (strong Wolfe), full batch", "standardize": True,
            "dtype": str(dtype).replace("torch.", ""), "device": device, "train_accuracy": train_acc,
            "n_train": int(len(labels)), "dim": int(features.shape[1])}
    if k_used and k_used < folds:
        info["folds_note"] = (f"{k_used} folds instead of {folds}: the smallest class has "
                              f"{int(np.bincount(labels)[np.bincount(labels) > 0].min())} train images")
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


@on_one_cpu_thread
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


# ------------------------------------------------------------------------------------ fitted-probe cache
# Bump when fit_logreg / fit_sgd_head (or the models' predict) change what a fit returns: every cached fit is
# then refitted. Part of every probe-cache key, with the probe's own ``version`` class attribute.
PROBE_IMPL_VERSION = 4  # 2: float32 on the CPU too; 3: one torch thread on the CPU; 4: C by k-fold CV
_CACHE_FORMAT = "jerc-eval/fitted-probe"


class _NotCacheable(Exception):
    """A fitted probe (model or info) that the cache cannot store exactly; it is simply not cached."""


def model_state(predict: Any) -> tuple[str, dict[str, np.ndarray], dict[str, Any]]:
    """``(kind, arrays, meta)`` of a built-in model's bound ``predict``; raises _NotCacheable otherwise.

    kNN models are not cached (they hold the whole train set and cost nothing to fit).
    """
    import torch

    model = getattr(predict, "__self__", None)
    if type(model) is LogRegModel and getattr(predict, "__func__", None) is LogRegModel.predict:
        arrays = {k: getattr(model, k).detach().cpu().numpy() for k in ("weight", "bias", "mean", "std")}
        return "logreg", arrays, {}
    if type(model) is HeadModel and getattr(predict, "__func__", None) is HeadModel.predict:
        layers = list(model.head)
        if not (isinstance(model.head, torch.nn.Sequential) and 1 <= len(layers) <= 2
                and type(layers[-1]) is torch.nn.Linear
                and (len(layers) == 1 or (type(layers[0]) is torch.nn.BatchNorm1d and not layers[0].affine
                                          and layers[0].track_running_stats))):
            raise _NotCacheable("unknown head layout")
        arrays = {k: v.detach().cpu().numpy() for k, v in model.head.state_dict().items()}
        lin = layers[-1]
        meta = {"batchnorm": len(layers) == 2, "eps": layers[0].eps if len(layers) == 2 else None,
                "in_features": lin.in_features, "out_features": lin.out_features}
        return "sgd-head", arrays, meta
    raise _NotCacheable(f"no cache format for {type(model).__name__}")


def model_from_state(kind: str, arrays: dict[str, np.ndarray], meta: dict[str, Any], device: str) -> Any:
    """The ``predict`` callable back from :func:`model_state` (same dtypes, same device: same predictions)."""
    import torch

    t = {k: torch.from_numpy(v).to(device) for k, v in arrays.items()}
    if kind == "logreg":
        return LogRegModel(t["weight"], t["bias"], t["mean"], t["std"]).predict
    if kind == "sgd-head":
        layers = [torch.nn.BatchNorm1d(meta["in_features"], affine=False, eps=meta["eps"])] if meta["batchnorm"] else []
        head = torch.nn.Sequential(*layers, torch.nn.Linear(meta["in_features"], meta["out_features"]))
        head = head.to(device=device, dtype=t[f"{len(layers)}.weight"].dtype)
        head.load_state_dict(t, strict=True)
        head.eval()
        return HeadModel(head).predict
    raise ValueError(kind)


def _encode(obj: Any) -> Any:
    """JSON with tags for tuples and non-string dict keys, so ``info`` comes back exactly as it was."""
    if obj is None or type(obj) in (bool, int, float, str):
        return obj
    if type(obj) is list:
        return [_encode(v) for v in obj]
    if type(obj) is tuple:
        return {"__tuple__": [_encode(v) for v in obj]}
    if type(obj) is dict:
        if all(type(k) is str for k in obj) and "__tuple__" not in obj and "__items__" not in obj:
            return {k: _encode(v) for k, v in obj.items()}
        return {"__items__": [[_encode(k), _encode(v)] for k, v in obj.items()]}
    raise _NotCacheable(f"info value of type {type(obj).__name__}")


def _decode(obj: Any) -> Any:
    if isinstance(obj, list):
        return [_decode(v) for v in obj]
    if isinstance(obj, dict):
        if list(obj) == ["__tuple__"]:
            return tuple(_decode(v) for v in obj["__tuple__"])
        if list(obj) == ["__items__"]:
            return {_decode(k): _decode(v) for k, v in obj["__items__"]}
        return {k: _decode(v) for k, v in obj.items()}
    return obj


def array_digest(values: np.ndarray) -> str:
    """sha256 of an array's exact values, dtype and shape (a probe is never reused on other features or labels)."""
    import hashlib

    arr = np.ascontiguousarray(values)
    h = hashlib.sha256(f"{arr.dtype.str}{arr.shape}".encode())
    h.update(arr.reshape(-1).view(np.uint8))
    return h.hexdigest()


class ProbeCache:
    """Fitted probes (weights, chosen C, train accuracy, every hyperparameter in ``info``) as cache entries of
    kind ``probes`` (:mod:`jerc_eval.cache`: checksummed, written atomically); an entry that fails verification
    or cannot be rebuilt is removed and refitted, never trusted."""

    def __init__(self, root: Any, enabled: bool = True):
        from .cache import Cache

        self.cache = root if isinstance(root, Cache) else Cache(root, enabled)

    @property
    def enabled(self) -> bool:
        return self.cache.enabled

    @property
    def hits(self) -> int:
        return self.cache.hits["probes"]

    @property
    def misses(self) -> int:
        return self.cache.misses["probes"]

    def key(self, **parts: Any) -> str:
        from .cache import key

        return key("probes", impl=PROBE_IMPL_VERSION, **parts)

    def load(self, key: str, device: str) -> Any:
        """The cached :class:`~jerc_eval.api.FittedProbe`, or None (counted as a miss)."""
        import base64

        from .api import FittedProbe

        doc = self.cache.get_json("probes", key)
        if doc is None:
            return None
        try:
            if doc.get("format") != _CACHE_FORMAT:
                raise ValueError("not a fitted probe")
            arrays = {k: np.frombuffer(base64.b64decode(a["data"], validate=True), dtype=np.dtype(a["dtype"]))
                      .reshape(a["shape"]).copy() for k, a in doc["arrays"].items()}
            predict = model_from_state(doc["kind"], arrays, doc["meta"], device)
            info = _decode(doc["info"])
        except (ValueError, KeyError, TypeError, AttributeError, RuntimeError) as exc:
            self.cache.discard("probes", key, f"not a fitted probe this version reads ({type(exc).__name__})")
            return None
        return FittedProbe(predict=predict, info=info)

    def store(self, key: str, fitted: Any) -> bool:
        """Write ``fitted`` if its model has a cache format; returns whether it was written."""
        import base64

        if not self.enabled:
            return False
        try:
            kind, arrays, meta = model_state(fitted.predict)
            doc = {"format": _CACHE_FORMAT, "kind": kind, "meta": _encode(meta), "info": _encode(fitted.info),
                   "arrays": {k: {"dtype": v.dtype.str, "shape": list(v.shape),
                                  "data": base64.b64encode(np.ascontiguousarray(v).tobytes()).decode("ascii")}
                              for k, v in arrays.items()}}
        except _NotCacheable:
            return False
        return self.cache.put_json("probes", key, doc)
