"""Built-in probes: multinomial L2 logistic regression by L-BFGS in torch (GPU when present)."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..api import FittedProbe, Option, Probe
from ..hookspecs import hookimpl


class LogRegProbe(Probe):
    name = "logreg"
    description = ("Multinomial L2 logistic regression, full-batch L-BFGS in torch; C chosen by stratified 5-fold "
                   "cross-validation on train, then refit (DINOv2's sweep-then-refit protocol, smaller grid)")
    options = {
        "C": Option(float, 0.0, "inverse regularisation strength; 0 sweeps the grid"),
        "c_min_exp": Option(float, -3.0, "grid start: C = 10**c_min_exp"),
        "c_max_exp": Option(float, 2.0, "grid end: C = 10**c_max_exp"),
        "c_steps": Option(int, 6, "grid points, log-spaced", minimum=1),
        "folds": Option(int, 5, "cross-validation folds for choosing C (fewer when the smallest class is smaller)",
                        minimum=2),
        "max_iter": Option(int, 200, "L-BFGS iterations per fit", minimum=1),
    }

    def __init__(self, **options: Any):
        super().__init__(**options)
        if self.opts["C"] < 0:
            from ..errors import UsageError

            raise UsageError("logreg needs C >= 0 (0 sweeps the grid); fix -p C")

    def c_grid(self) -> tuple[float, ...]:
        if self.opts["C"] > 0:
            return (self.opts["C"],)
        grid = np.logspace(self.opts["c_min_exp"], self.opts["c_max_exp"], self.opts["c_steps"])
        return tuple(float(f"{c:.6g}") for c in grid)

    def fit(self, features: np.ndarray, labels: np.ndarray, num_classes: int, seed: int,
            device: str) -> FittedProbe:
        from ..probes import fit_logreg

        model, info = fit_logreg(features, labels, num_classes, c_grid=self.c_grid(),
                                 folds=self.opts["folds"], max_iter=self.opts["max_iter"],
                                 seed=seed, device=device)
        return FittedProbe(predict=model.predict, info={"probe": self.name, **info})


class KNNProbe(Probe):
    name = "knn"
    description = "Cosine-weighted k-nearest neighbours on L2-normalised features (DINO's eval_knn protocol)"
    options = {"k": Option(int, 20, "neighbours (DINO reports 10, 20, 100, 200)", minimum=1),
               "temperature": Option(float, 0.07, "vote weight exp(similarity / T)")}

    def __init__(self, **options: Any):
        super().__init__(**options)  # checked when the run is resolved, before any compute
        if self.opts["temperature"] <= 0:
            from ..errors import UsageError

            raise UsageError(f"knn temperature must be > 0, got {self.opts['temperature']:g}; pass -p temperature 0.07")

    def fit(self, features: np.ndarray, labels: np.ndarray, num_classes: int, seed: int,
            device: str) -> FittedProbe:
        from ..probes import fit_knn

        if self.opts["k"] < 1 or self.opts["temperature"] <= 0:
            from ..errors import UsageError

            raise UsageError("knn needs k >= 1 and temperature > 0; fix -p k / -p temperature")
        model, info = fit_knn(features, labels, num_classes, k=self.opts["k"],
                              temperature=self.opts["temperature"], device=device)
        return FittedProbe(predict=model.predict, info={"probe": self.name, **info})


class SGDHeadProbe(Probe):
    name = "sgd"
    description = ("Linear head trained by minibatch SGD with a cosine schedule; BatchNorm without affine first "
                   "(MAE's main_linprobe.py)")
    options = {"epochs": Option(int, 90, "training epochs (MAE: 90)", minimum=1),
               "lr": Option(float, 0.1, "base learning rate, scaled by batch_size / 256 (MAE: 0.1)", minimum=0),
               "batch_size": Option(int, 256, "minibatch size", minimum=1),
               "weight_decay": Option(float, 0.0, "L2 weight decay (MAE: 0)", minimum=0),
               "batchnorm": Option(bool, True, "BatchNorm1d(affine=False, eps=1e-6) before the linear layer")}

    def fit(self, features: np.ndarray, labels: np.ndarray, num_classes: int, seed: int,
            device: str) -> FittedProbe:
        from ..probes import fit_sgd_head

        model, info = fit_sgd_head(features, labels, num_classes, seed=seed, device=device, **{
            k: self.opts[k] for k in ("epochs", "lr", "batch_size", "weight_decay", "batchnorm")})
        return FittedProbe(predict=model.predict, info={"probe": self.name, **info})


@hookimpl
def register_probes(register: Any) -> None:
    register(LogRegProbe)
    register(KNNProbe)
    register(SGDHeadProbe)
