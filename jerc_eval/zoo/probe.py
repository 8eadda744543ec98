"""The zoo's linear probe: frozen features -> standardisation -> multinomial L2 logistic regression."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .augment import normalize, to_float

PROBE = {"features": "ViT: [CLS] after final norm; ResNet: global-average-pooled features",
         "standardise": "per-feature mean/std of the train features",
         "classifier": "sklearn LogisticRegression(lbfgs, multinomial, L2, C=0.5, max_iter=2000)"}


@torch.no_grad()
def extract(model: nn.Module, images_uint8: np.ndarray, batch: int = 500, input_size: int = 32) -> np.ndarray:
    """Features at the zoo's input size (images resized exactly as ``jerc_eval.features.to_input`` does)."""
    from ..features import resize

    model.eval()
    out = []
    for i in range(0, len(images_uint8), batch):
        out.append(model(normalize(resize(to_float(images_uint8[i:i + batch]), input_size))).float().numpy())
    return np.concatenate(out)


def probe_predictions(model: nn.Module, train_images, train_labels, test_images, C: float = 0.5):
    """Fit the zoo probe on ``train_images`` and return (test predictions, whether L-BFGS converged)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    ftr, fte = extract(model, train_images), extract(model, test_images)
    mu, sd = ftr.mean(0), ftr.std(0) + 1e-6
    clf = LogisticRegression(C=C, max_iter=2000)
    # one BLAS thread: oversubscription made lbfgs >50x slower on a shared 2-core machine
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit((ftr - mu) / sd, train_labels)
    return clf.predict((fte - mu) / sd), bool(max(clf.n_iter_) < clf.max_iter)


def linear_probe(model: nn.Module, train, test, C: float = 0.5) -> float:
    """``train``/``test``: objects with ``images`` (N,H,W,3 uint8) and ``labels``. Returns test accuracy."""
    pred, _ = probe_predictions(model, train.images, train.labels, test.images, C)
    return float((pred == test.labels).mean())
