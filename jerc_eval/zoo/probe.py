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


def linear_probe(model: nn.Module, train, test, C: float = 0.5) -> float:
    """``train``/``test``: objects with ``images`` (N,H,W,3 uint8) and ``labels``. Returns test accuracy."""
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    ftr, fte = extract(model, train.images), extract(model, test.images)
    mu, sd = ftr.mean(0), ftr.std(0) + 1e-6
    clf = LogisticRegression(C=C, max_iter=2000)
    with threadpool_limits(1):  # BLAS oversubscription made lbfgs >50x slower on a shared 2-core machine
        clf.fit((ftr - mu) / sd, train.labels)
    return float((clf.predict((fte - mu) / sd) == test.labels).mean())
