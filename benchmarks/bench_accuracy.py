"""Accuracy per second of ``nk.nntk``'s variance reductions (asv).

The one-hidden-layer ReLU and sign networks of ``benchmarks/accuracy_per_second.py``
(``nk.MLP(1, (256,), 1)``, N = 64 inputs on [-1, 1], σ = 0.3, NumPy float64): the time of one
call at M = 256 and its centred error against the closed form, per option. The script
gives the full table (seconds to 5% and 1%, deeper nets, PyTorch).
"""

from __future__ import annotations

from typing import Any

import numpy as np

import nntk_array as nk

from .accuracy_per_second import SIGMA, centred_error

OPTIONS = {"none": "none", "readout+units": ("readout", "units"), "auto": "auto"}


class AccuracyPerSecond:
    params = (("relu", "sign"), tuple(OPTIONS))
    param_names = ("activation", "variance_reduction")
    samples = 256

    def setup(self, activation: str, option: str) -> None:
        self.model = nk.MLP(1, (256,), 1, activation=activation)
        self.theta = self.model.init(0, xp=np)
        self.x = np.linspace(-1.0, 1.0, 64)[:, None]
        self.truth = nk.analytic.finite_width_nntk(self.model, self.theta, self.x, sigma=SIGMA)

    def _kernel(self, option: str, seed: int) -> Any:
        return nk.nntk(
            self.model,
            self.theta,
            self.x,
            sigma=SIGMA,
            samples=self.samples,
            seed=seed,
            variance_reduction=OPTIONS[option],
        )

    def time_nntk(self, activation: str, option: str) -> None:
        self._kernel(option, 0)

    def track_centred_error(self, activation: str, option: str) -> float:
        errs = [centred_error(self._kernel(option, s), self.truth) for s in range(4)]
        return float(np.sqrt(np.mean(np.square(errs))))

    track_centred_error.unit = "relative"  # type: ignore[attr-defined]
