"""Reproduce the paper's Figure 3 (Section 5.1, Appendix C): distance to optimality of SL / JE / RC vs n.

Protocol (paper, on MNIST): PCA to k important components, append d − k noise coordinates; Γ and Θ diagonal in
that basis; λ^Γ ~ U[0, λ^Γ_max] on the noise coordinates (weak / strong), λ^Θ ~ U[0, λ^Θ_max] everywhere;
α ∈ {0.1, 1, 10}; n = 100·2^j. Each model is solved in closed form on clean and on corrupted data and scored by
the in-sample least-squares linear probe on one-hot labels; distance to optimality = |score_clean − score_corr|.

Default dataset: scikit-learn's ``load_digits`` (offline; 1,797 images, 64 pixels, grey levels 0–16), with
k = 32 PCA components + 32 noise coordinates (d = 64, the pixel count). Scales are set *relative to the smallest
retained signal variance* s_k, reproducing the paper's MNIST ratios (s_50 ≈ 1e4 at the 0–255 scale, so
λ^Θ_max = 1e4 ≈ s_k, weak λ^Γ_max = 1e3 ≈ 0.1 s_k, strong λ^Γ_max = 1e6 ≈ 100 s_k). MNIST / Fashion-MNIST can be
run with the paper's absolute values from user-supplied local files (``data_path``; nothing is downloaded).

Sampling: for every n, rows are drawn *with replacement* from the dataset (the population is the empirical
distribution, so n may exceed the dataset size); corruption noise is drawn fresh for every drawn row.

Probe: each model is probed on the data it was trained on (clean model on clean rows, corrupted-data model on
the corrupted rows). Probing the corrupted-data model on *clean* rows is degenerate here: clean rows live in the
k signal coordinates, and any k-dim representation whose restriction to them is invertible spans the same space,
so the in-sample probe score would be identical (distance ~1e-16) whether or not noise directions were learned.
"""
from __future__ import annotations

import gzip
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from jerc_eval.seeding import derive_seed
from jerc_eval.theory.alignment import Spectra, classify_regime, recovers
from jerc_eval.theory.closed_form import (
    distance_to_optimality, gaussian_moments, je_solution, linear_probe_score, rc_solution, supervised_solution,
)

__all__ = ["Fig3Config", "config_for", "load_dataset", "main"]

SCHEMA_VERSION = 1
ALPHAS = (0.1, 1.0, 10.0)
METHODS = ("SL", "JE", "RC")
SETTINGS = ("weak", "strong")


# ===== configuration =====

@dataclass(frozen=True)
class Fig3Config:
    """Everything that defines one Figure-3 run (recorded verbatim in figure3.json)."""

    dataset: str
    k: int                      # important (signal) PCA components
    d: int                      # k + number of appended noise coordinates
    scale: str                  # "relative": *_max are multiples of s_k; "absolute": raw variances
    theta_max: float            # λ^Θ ~ U[0, theta_max] on all d coordinates
    gamma_max: dict             # {"weak": ..., "strong": ...}; λ^Γ ~ U[0, gamma_max] on noise coordinates
    alphas: tuple
    n_values: tuple
    repeats: int                # independent (rows, noise) draws averaged per point
    seed: int


def config_for(dataset: str, n_values: list[int] | None, seed: int, fast: bool,
               repeats: int | None = None) -> Fig3Config:
    """The default configuration per dataset; ``fast`` shrinks the sweep for tests."""
    if n_values is None:
        n_values = [100, 200, 400] if fast else [100 * 2 ** j for j in range(10)]
    repeats = (1 if fast else 3) if repeats is None else repeats
    common = dict(alphas=ALPHAS, n_values=tuple(int(n) for n in n_values), repeats=int(repeats),
                  seed=int(seed))
    if dataset == "digits":
        # 64 pixels: 32 components keep 96.6 % of the variance; 32 noise coordinates keep d = 64.
        return Fig3Config(dataset=dataset, k=32, d=64, scale="relative", theta_max=1.0,
                          gamma_max={"weak": 0.1, "strong": 100.0}, **common)
    if dataset in ("mnist", "fashion_mnist"):
        # The paper's own values at the raw 0–255 pixel scale.
        return Fig3Config(dataset=dataset, k=50, d=100, scale="absolute", theta_max=1e4,
                          gamma_max={"weak": 1e3, "strong": 1e6}, **common)
    raise ValueError(f"unknown dataset {dataset!r}; expected 'digits', 'mnist' or 'fashion_mnist'")


# ===== data =====

def load_dataset(dataset: str, data_path: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Return (images as (N, pixels) float at the native pixel scale, integer labels).

    ``digits`` ships with scikit-learn. ``mnist`` / ``fashion_mnist`` read a local ``.npz`` (keys
    ``x_train``/``y_train`` or ``X``/``y``) or a folder with the IDX files ``train-images-idx3-ubyte[.gz]`` and
    ``train-labels-idx1-ubyte[.gz]``; nothing is downloaded.
    """
    if dataset == "digits":
        from sklearn.datasets import load_digits
        X, y = load_digits(return_X_y=True)
        return X.astype(float), y.astype(np.int64)
    if data_path is None:
        raise ValueError(f"dataset {dataset!r} needs data_path (a local .npz or IDX folder); nothing is downloaded")
    path = Path(data_path)
    if path.suffix == ".npz":
        with np.load(path) as z:
            xk, yk = ("x_train", "y_train") if "x_train" in z else ("X", "y")
            X, y = z[xk], z[yk]
    else:
        X, y = _read_idx(_find(path, "train-images-idx3-ubyte")), _read_idx(_find(path, "train-labels-idx1-ubyte"))
    return X.reshape(len(X), -1).astype(float), y.astype(np.int64)


def _find(folder: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (folder / name).exists():
            return folder / name
    raise FileNotFoundError(f"{stem}[.gz] not found in {folder}")


def _read_idx(path: Path) -> np.ndarray:
    raw = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def pca_with_noise_coordinates(X: np.ndarray, k: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    """Centre, project onto the top-k principal axes, append d − k zero coordinates; returns (Z, s)."""
    Xc = X - X.mean(axis=0)
    _, sv, Vt = np.linalg.svd(Xc, full_matrices=False)
    Z = np.zeros((len(X), d))
    Z[:, :k] = Xc @ Vt[:k].T
    return Z, sv[:k] ** 2 / len(X)  # s_i: variances of the population (the empirical distribution)


# ===== one point of the sweep =====

def _models(Xtrain: np.ndarray, Y: np.ndarray, sigma: np.ndarray, k: int) -> dict:
    """Encoders (as (out, d) matrices) of SL, JE, RC trained on ``Xtrain`` with augmentation variances sigma."""
    mom = gaussian_moments(Xtrain, sigma)
    return {"SL": supervised_solution(Y, mom), "JE": je_solution(mom, k).W, "RC": rc_solution(mom, k).E}


def _point(Z, onehot, t, g, cfg: Fig3Config, setting: str, n: int, rep: int) -> dict:
    """Distances (and raw scores) for all α and methods at one (setting, n, repeat)."""
    rng_rows = np.random.default_rng(derive_seed(cfg.seed, "fig3", "rows", n, rep))
    idx = rng_rows.integers(0, len(Z), size=n)
    X, Y = Z[idx], onehot[idx]
    rng_noise = np.random.default_rng(derive_seed(cfg.seed, "fig3", "noise", setting, n, rep))
    Xt = X + rng_noise.standard_normal(X.shape) * np.sqrt(g)  # g = 0 on signal coordinates
    out = {}
    for a in cfg.alphas:
        sigma = t + a ** 2 * g
        clean, corr = _models(X, Y, sigma, cfg.k), _models(Xt, Y, sigma, cfg.k)
        for m in METHODS:  # each model is probed in-sample on the data it was trained on
            sc, sr = linear_probe_score(X @ clean[m].T, Y), linear_probe_score(Xt @ corr[m].T, Y)
            out[(a, m)] = (distance_to_optimality(sc, sr), sc, sr)
    return out


# ===== theory for the drawn spectra =====

def _theory(s: np.ndarray, t: np.ndarray, g: np.ndarray, cfg: Fig3Config) -> dict:
    sp = Spectra(signal=s, theta_signal=t[:cfg.k], noise=g[cfg.k:], theta_noise=t[cfg.k:])
    reg = classify_regime(sp)
    rec = {m: {str(a): recovers(m, sp, a) for a in cfg.alphas} for m in METHODS}
    return {"regime": reg.as_dict(), "recovers_n_to_inf": rec}


def _slope(ns: list[int], ys: list[float]) -> float | None:
    """Least-squares slope of log y vs log n over the second half of the sweep (−1 ≈ 1/n; ≈ 0 flat).

    None with fewer than two points in that half (JSON has no NaN).
    """
    h = len(ns) // 2
    x, y = np.log(ns[h:]), np.log(np.maximum(ys[h:], 1e-300))
    return float(np.polyfit(x, y, 1)[0]) if len(x) >= 2 else None


# ===== figure =====

def _plot(results: dict, cfg: Fig3Config, gmax_abs: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(12, 7), sharex=True)
    ns = np.array(cfg.n_values)
    for r, setting in enumerate(SETTINGS):
        for c, m in enumerate(METHODS):
            ax = axes[r, c]
            for a in cfg.alphas:
                y = np.maximum(results[setting][m][str(a)]["mean"], 1e-16)
                ax.loglog(ns, y, marker="o", ms=3, label=f"α = {a:g}")
            ref = results[setting][m][str(cfg.alphas[-1])]["mean"][0]
            ax.loglog(ns, max(ref, 1e-16) * ns[0] / ns, "k:", lw=1, label="∝ 1/n")
            ax.set_title(f"{m} — {setting} noise (λ^Γ_max = {gmax_abs[setting]:.3g})", fontsize=9)
            ax.grid(True, which="major", alpha=0.3)
            if c == 0:
                ax.set_ylabel("distance to optimality")
            if r == 1:
                ax.set_xlabel("n")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(f"Figure 3 reproduction on {cfg.dataset} (k = {cfg.k}, d = {cfg.d}, seed = {cfg.seed}, "
                 f"mean of {cfg.repeats} draws)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ===== main =====

def main(out_dir: str | Path, dataset: str = "digits", n_values: list[int] | None = None, seed: int = 0,
         fast: bool = False, *, data_path: str | Path | None = None, repeats: int | None = None) -> dict:
    """Run the Figure-3 protocol and return everything written to ``figure3.json``.

    :param out_dir: folder for the outputs (created if missing).
    :param dataset: ``"digits"`` (offline default), ``"mnist"`` or ``"fashion_mnist"`` (need ``data_path``).
    :param n_values: sample sizes; default ``100·2^j``, j = 0..9 (``fast``: 100, 200, 400).
    :param seed: run seed; every draw derives from (seed, draw identity), so the output is deterministic.
    :param fast: tiny sweep with one repeat, for tests.
    :param repeats: independent draws averaged per point (default 3, ``fast``: 1).
    Note: writes ``figure3.png`` and ``figure3.json`` into ``out_dir``.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):  # tiny matrices: BLAS threads only contend (40x slower on a busy box)
        return _run(out_dir, dataset, n_values, seed, fast, data_path, repeats)


def _run(out_dir, dataset, n_values, seed, fast, data_path, repeats) -> dict:
    t0 = time.perf_counter()
    # ===== 1. resolve configuration and data =====
    cfg = config_for(dataset, n_values, seed, fast, repeats)
    images, labels = load_dataset(dataset, data_path)
    Z, s = pca_with_noise_coordinates(images, cfg.k, cfg.d)
    onehot = np.eye(labels.max() + 1)[labels]
    unit = float(s[-1]) if cfg.scale == "relative" else 1.0

    # ===== 2. draw the spectra (diagonal in the PCA + noise basis) =====
    rng_t = np.random.default_rng(derive_seed(seed, "fig3", "theta"))
    t = rng_t.uniform(0.0, cfg.theta_max * unit, size=cfg.d)
    gammas, gmax_abs = {}, {}
    for setting in SETTINGS:
        gmax_abs[setting] = cfg.gamma_max[setting] * unit
        g = np.zeros(cfg.d)
        rng_g = np.random.default_rng(derive_seed(seed, "fig3", "gamma", setting))
        g[cfg.k:] = rng_g.uniform(0.0, gmax_abs[setting], size=cfg.d - cfg.k)
        gammas[setting] = g

    # ===== 3. sweep =====
    results = {}
    for setting in SETTINGS:
        raw = {(a, m): [] for a in cfg.alphas for m in METHODS}
        for n in cfg.n_values:
            per_rep = [_point(Z, onehot, t, gammas[setting], cfg, setting, n, r) for r in range(cfg.repeats)]
            for key in raw:
                raw[key].append([p[key] for p in per_rep])
        results[setting] = {m: {str(a): _summarise(raw[(a, m)], cfg) for a in cfg.alphas} for m in METHODS}

    # ===== 4. write =====
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        "schema_version": SCHEMA_VERSION,
        "config": asdict(cfg),
        "data": {"n_images": int(len(images)), "pixels": int(images.shape[1]),
                 "pixel_range": [float(images.min()), float(images.max())],
                 "signal_variances": s.tolist(), "variance_kept": float(s.sum() / images.var(0).sum()),
                 "scale_unit_s_k": unit},
        "spectra": {"theta": t.tolist(), "gamma": {k: v.tolist() for k, v in gammas.items()},
                    "gamma_max_abs": gmax_abs, "theta_max_abs": cfg.theta_max * unit},
        "theory": {st: _theory(s, t, gammas[st], cfg) for st in SETTINGS},
        "results": results,
        "versions": {"numpy": np.__version__},
    }
    _plot(results, cfg, gmax_abs, out / "figure3.png")
    payload["elapsed_s"] = round(time.perf_counter() - t0, 2)  # informative only; not part of the numbers
    (out / "figure3.json").write_text(json.dumps(payload, indent=1))
    return payload


def _summarise(per_n: list[list[tuple]], cfg: Fig3Config) -> dict:
    """Mean distance per n, the per-repeat values, raw probe scores, and the tail log–log slope."""
    dist = [[p[0] for p in reps] for reps in per_n]
    mean = [float(np.mean(v)) for v in dist]
    return {"mean": mean, "per_repeat": dist,
            "score_clean": [float(np.mean([p[1] for p in reps])) for reps in per_n],
            "score_corrupted": [float(np.mean([p[2] for p in reps])) for reps in per_n],
            "tail_slope": _slope(list(cfg.n_values), mean)}
