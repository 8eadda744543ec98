"""Built-in probes: multinomial L2 logistic regression by L-BFGS in torch (GPU when present)."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..api import FittedProbe, Option, Probe
from ..hookspecs import hookimpl


class LogRegProbe(Probe):
    name = "logreg"
    description = ("Multinomial L2 logistic regression, full-batch L-BFGS in torch; C chosen on a held-out 10% "
                   "of train, then refit (DINOv2 protocol, smaller grid)")
    options = {
        "C": Option(float, 0.0, "inverse regularisation strength; 0 sweeps the grid"),
        "c_min_exp": Option(float, -3.0, "grid start: C = 10**c_min_exp"),
        "c_max_exp": Option(float, 2.0, "grid end: C = 10**c_max_exp"),
        "c_steps": Option(int, 6, "grid points, log-spaced"),
        "val_fraction": Option(float, 0.1, "share of train held out to choose C"),
        "max_iter": Option(int, 200, "L-BFGS iterations per fit"),
    }

    def c_grid(self) -> tuple[float, ...]:
        if self.opts["C"] > 0:
            return (self.opts["C"],)
        grid = np.logspace(self.opts["c_min_exp"], self.opts["c_max_exp"], self.opts["c_steps"])
        return tuple(float(f"{c:.6g}") for c in grid)

    def fit(self, features: np.ndarray, labels: np.ndarray, num_classes: int, seed: int,
            device: str) -> FittedProbe:
        from ..probes import fit_logreg

        model, info = fit_logreg(features, labels, num_classes, c_grid=self.c_grid(),
                                 val_fraction=self.opts["val_fraction"], max_iter=self.opts["max_iter"],
                                 seed=seed, device=device)
        return FittedProbe(predict=model.predict, info={"probe": self.name, **info})


@hookimpl
def register_probes(register: Any) -> None:
    register(LogRegProbe)
