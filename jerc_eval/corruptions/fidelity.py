"""Fidelity of the fast torch backend against the reference ``imagecorruptions`` package.

For every corruption x severity we run both backends on the same images with the same per-image seeds
(``jerc_eval.seeding.image_seeds``) and report one row:

* deterministic corruptions (no randomness in the reference): mean absolute difference in grey levels between
  the two uint8 outputs; tolerance ``TOL_MAD`` (1 grey level).  On a CPU the fast backend runs the reference code
  for ``fast.CPU_REFERENCE_PATH`` (pixelate, jpeg, defocus_blur), so that MAD is 0 by construction; those rows
  also report ``torch_path_mad``, the MAD of the fast backend's torch code path (forced with a ``draws`` object;
  the one an accelerator runs), tolerance ``TOL_MAD``.
* stochastic corruptions: the two backends draw different random numbers (torch generators vs numpy), so we
  compare distributions of per-image PSNR against the clean image (each image corrupted ``repeats`` times with
  different seeds).  ``passed_strict``: the mean paired PSNR difference is within ``TOL_PSNR_DB`` (0.5 dB).
  ``passed``: it is within ``TOL_PSNR_DB + SE_FACTOR * SE`` where SE is the standard error of the mean paired
  difference -- for corruptions whose PSNR depends strongly on a few draws (frost texture choice, motion angle,
  fog fractal) a handful of images cannot resolve 0.5 dB, and the row says so (``underpowered``: SE > 0.5 dB /
  SE_FACTOR) instead of passing or failing on noise.  The two-sample KS statistic (and p-value) is reported.  We also
  *replay* the reference's own numpy draws through the fast code (``fast.NumpyReplayDraws``) and report the
  mean absolute difference to the reference output (``replay_mad``, tolerance ``TOL_MAD``): this checks that the
  algorithm is the reference's, independently of sampling noise.

Every row says pass/fail against its tolerance; nothing is dropped.  ``main()`` prints a table and writes JSON.

``params`` picks the per-severity parameter table: ``"imagenet"`` (default; the reference is ``imagecorruptions``)
or ``"cifar10"`` (CIFAR-10-C; the reference is the numpy port of make_cifar_c.py,
``jerc_eval.corruptions.reference.corrupt_one_cifar10``, and the natural crops default to 32 px).  Metrics and
tolerances are the same for both tables.
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch

from . import ALL, SEVERITIES
from . import fast
from ..seeding import image_seeds

TOL_MAD = 1.0
TOL_PSNR_DB = 0.5
SE_FACTOR = 3.0
SEEDED_BY_ARGUMENT = ("glass_blur", "impulse_noise")  # the reference takes seed=...; others use np.random.seed
PARAMS = ("imagenet", "cifar10")
DEFAULT_SIZE = {"imagenet": 64, "cifar10": 32}  # natural crops: 64 px for ImageNet-C, CIFAR's 32 px for CIFAR-10-C


def natural_images(size: int = 64, n: int = 8) -> np.ndarray:
    """``n`` natural RGB crops of ``size`` x ``size`` from skimage.data astronaut / chelsea / coffee (uint8 NHWC)."""
    from skimage import data

    srcs = [data.astronaut(), data.chelsea(), data.coffee()]
    crops = []
    k = 0
    while len(crops) < n:
        im = srcs[k % 3]
        j = k // 3
        h, w = im.shape[:2]
        if size > h or size > w:
            raise ValueError(f"size {size} too large for the source images")
        # spread crops over the image on a coarse deterministic grid
        ys = np.linspace(0, h - size, 3).astype(int)
        xs = np.linspace(0, w - size, 4).astype(int)
        y, x = ys[(j * 2 + 1) % 3], xs[(j * 3 + 1) % 4]
        crops.append(np.ascontiguousarray(im[y:y + size, x:x + size, :3]))
        k += 1
    return np.stack(crops)


def reference_batch(images: np.ndarray, name: str, severity: int, seeds: np.ndarray,
                    params: str = "imagenet") -> np.ndarray:
    """The reference, image by image, seeded the way the reference expects: ``imagecorruptions`` for the
    ImageNet table, the numpy port of make_cifar_c.py for the CIFAR-10-C table (seeded the same way)."""
    if params == "cifar10":
        from .reference import corrupt_batch

        return corrupt_batch(images, name, severity, seeds, params="cifar10")
    if params != "imagenet":
        raise ValueError(f"unknown parameter table {params!r}; expected one of {', '.join(PARAMS)}")
    from imagecorruptions import corrupt

    out = []
    for img, s in zip(images, seeds):
        if name in SEEDED_BY_ARGUMENT:
            out.append(corrupt(img, severity=int(severity), corruption_name=name, seed=int(s)))
        else:
            np.random.seed(int(s))
            out.append(corrupt(img, severity=int(severity), corruption_name=name))
    return np.stack(out)


def psnr(clean: np.ndarray, corrupted: np.ndarray, cap: float = 100.0) -> np.ndarray:
    """Per-image PSNR (dB) of uint8 NHWC batches; identical images get ``cap``."""
    d = clean.astype(np.float64) - corrupted.astype(np.float64)
    mse = (d * d).reshape(len(d), -1).mean(1)
    with np.errstate(divide="ignore"):
        v = 10 * np.log10(255.0 ** 2 / mse)
    return np.minimum(v, cap)


def compare(images, names=ALL, severities=SEVERITIES, seed: int = 0, replay: bool = True,
            device=None, repeats: int = 1, params: str = "imagenet") -> list[dict]:
    """One row per (corruption, severity); see the module docstring for metrics and tolerances.

    ``params``: the parameter table both backends use, ``"imagenet"`` or ``"cifar10"``."""
    from scipy.stats import ks_2samp

    if params not in PARAMS:
        raise ValueError(f"unknown parameter table {params!r}; expected one of {', '.join(PARAMS)}")
    images = np.ascontiguousarray(np.asarray(images, dtype=np.uint8))
    n = len(images)
    rows = []
    for name in names:
        for sev in severities:
            seeds = image_seeds(seed, name, sev, n)
            ref = reference_batch(images, name, sev, seeds, params)
            out = fast.corrupt_batch(images, name, sev, seeds, device=device, params=params)
            if device is not None:
                out = np.asarray(out)
            diff = np.abs(out.astype(np.int64) - ref.astype(np.int64))
            row = {"corruption": name, "severity": int(sev), "params": params, "n_images": n,
                   "shape": list(images.shape[1:3]),
                   "mad": float(diff.mean()), "max_abs": int(diff.max()),
                   "frac_differing": float((diff > 0).mean())}
            if name in fast.DETERMINISTIC:
                row.update(kind="deterministic", metric="mean_abs_diff", value=row["mad"], tolerance=TOL_MAD,
                           passed=bool(row["mad"] <= TOL_MAD))
                if name in fast.CPU_REFERENCE_PATH and (device is None or torch.device(device).type == "cpu"):
                    # on a CPU the fast backend runs the reference code for these (MAD 0 by construction); a
                    # ``draws`` object forces its torch code path, the one an accelerator runs, and that is checked
                    tp = fast.corrupt_batch(images, name, sev, seeds, params=params,
                                            draws=fast.NumpyReplayDraws(seeds, "cpu"))
                    tmad = float(np.abs(tp.astype(np.int64) - ref.astype(np.int64)).mean())
                    row.update(torch_path_mad=tmad, torch_path_passed=bool(tmad <= TOL_MAD))
            else:
                p_ref, p_fast = psnr(images, ref), psnr(images, out)
                if repeats > 1:  # more draws per image for the distribution comparison
                    more = image_seeds(seed, name, sev, n * (repeats - 1), offset=n)
                    tiled = np.concatenate([images] * (repeats - 1))
                    p_ref = np.concatenate([p_ref, psnr(tiled, reference_batch(tiled, name, sev, more, params))])
                    p_fast = np.concatenate([p_fast, psnr(tiled, np.asarray(
                        fast.corrupt_batch(tiled, name, sev, more, device=device, params=params)))])
                d = p_fast - p_ref
                m = len(d)
                se = float(d.std(ddof=1) / np.sqrt(m)) if m > 1 else float("nan")
                tol = TOL_PSNR_DB + SE_FACTOR * se
                ks = ks_2samp(p_fast, p_ref)
                row.update(kind="stochastic", metric="mean_psnr_diff_db", value=float(d.mean()),
                           tolerance=tol, tol_fixed=TOL_PSNR_DB, n_samples=m,
                           passed=bool(abs(d.mean()) <= tol),
                           passed_strict=bool(abs(d.mean()) <= TOL_PSNR_DB),
                           underpowered=bool(SE_FACTOR * se > TOL_PSNR_DB),
                           psnr_ref_mean=float(p_ref.mean()), psnr_fast_mean=float(p_fast.mean()),
                           psnr_diff_se=se, ks_stat=float(ks.statistic), ks_pvalue=float(ks.pvalue))
                if replay:
                    rep = fast.corrupt_batch(images, name, sev, seeds, params=params,
                                             draws=fast.NumpyReplayDraws(seeds, "cpu"))
                    rmad = float(np.abs(rep.astype(np.int64) - ref.astype(np.int64)).mean())
                    row.update(replay_mad=rmad, replay_passed=bool(rmad <= TOL_MAD))
            rows.append(row)
    return rows


def format_table(rows: list[dict]) -> str:
    head = (f"{'corruption':18s} {'sev':>3s} {'kind':6s} {'metric':>18s} {'value':>8s} {'tol':>5s} "
            f"{'result':6s} {'strict':6s} {'SE':>5s} {'PSNR ref/fast':>13s} {'KS':>5s} {'replay MAD':>10s}")
    lines = [head, "-" * len(head)]
    for r in rows:
        extra = ""
        if r["kind"] == "stochastic":
            strict = "pass" if r["passed_strict"] else ("noisy" if r["underpowered"] else "FAIL")
            extra = (f"{strict:6s} {r['psnr_diff_se']:5.2f} {r['psnr_ref_mean']:6.2f}/{r['psnr_fast_mean']:6.2f} "
                     f"{r['ks_stat']:5.2f}")
            if "replay_mad" in r:
                extra += f" {r['replay_mad']:9.4f}{'' if r['replay_passed'] else '!'}"
        else:
            extra = f"{'':6s} {'':5s} {'':13s} {'':5s}"
            if "torch_path_mad" in r:
                extra += f" {r['torch_path_mad']:9.4f}{'' if r['torch_path_passed'] else '!'}*"
        lines.append(f"{r['corruption']:18s} {r['severity']:3d} {r['kind'][:6]:6s} {r['metric']:>18s} "
                     f"{r['value']:8.4f} {r['tolerance']:5.2f} {'pass' if r['passed'] else 'FAIL':6s} {extra}")
    n_fail = sum(not r["passed"] for r in rows) + sum(not r.get("replay_passed", True) for r in rows)
    n_fail += sum(not r.get("torch_path_passed", True) for r in rows)
    if any("torch_path_mad" in r for r in rows):
        lines.append("* deterministic, run through the reference code on a CPU: the column is the MAD of the fast "
                     "backend's torch code path (what an accelerator runs)")
    lines.append(f"{len(rows)} rows, {n_fail} failing check(s)")
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(prog="jerc-eval corruptions compare",
                                 description="Compare the fast corruption backend with the reference "
                                             "(imagecorruptions, or the make_cifar_c.py port for --params cifar10).")
    ap.add_argument("--params", default="imagenet", choices=PARAMS,
                    help="parameter table: imagenet (ImageNet-C, vs imagecorruptions; default) or cifar10 "
                         "(CIFAR-10-C, vs the numpy port of make_cifar_c.py)")
    ap.add_argument("--size", type=int, default=None,
                    help="side of the natural test crops (default: 64 for imagenet, 32 for cifar10)")
    ap.add_argument("--n", type=int, default=8, help="number of natural test images")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=4, help="draws per image for the PSNR distributions")
    ap.add_argument("--names", default=",".join(ALL))
    ap.add_argument("--no-replay", action="store_true")
    ap.add_argument("--device", default=None)
    ap.add_argument("--out", default="fidelity.json")
    a = ap.parse_args(argv)
    size = a.size if a.size is not None else DEFAULT_SIZE[a.params]
    if size < 32:
        ap.error(f"--size must be at least 32 (the corruptions need images of 32 px or more), got {size}")
    names = [x.strip() for x in a.names.split(",") if x.strip()]
    unknown = [x for x in names if x not in ALL]
    if unknown:
        ap.error(f"unknown corruption(s) {', '.join(unknown)}; expected names from: {', '.join(ALL)}")
    from .reference import reference_version

    imgs = natural_images(size, a.n)
    t0 = time.time()
    rows = compare(imgs, names, SEVERITIES, a.seed, replay=not a.no_replay, device=a.device,
                   repeats=a.repeats, params=a.params)
    seconds = round(time.time() - t0, 1)
    print(f"parameter table {a.params}: fast {fast.FAST_VERSION} vs reference {reference_version(a.params)}, "
          f"{a.n} natural {size}x{size} crops, {a.repeats} draw(s) per image, seed {a.seed}")
    print(format_table(rows))
    meta = {"params": a.params, "fast_version": fast.FAST_VERSION, "reference_version": reference_version(a.params),
            "size": size, "n_images": a.n, "seed": a.seed,
            "tol_mad": TOL_MAD, "tol_psnr_db": TOL_PSNR_DB,
            "se_factor": SE_FACTOR, "repeats": a.repeats, "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "seconds": seconds}
    with open(a.out, "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)
    print(f"wrote {a.out} ({seconds} s)")
    return rows


if __name__ == "__main__":
    main()
