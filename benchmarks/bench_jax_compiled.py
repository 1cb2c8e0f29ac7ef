"""Eager calls of nk.nntk on the issue-17 workloads, on every backend: on JAX the loop
bodies run as programs compiled once per model and shapes (the warm-up call in ``setup``
compiles them; a new seed per timed call checks that it does not compile again)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import numpy as np

import nntk_array as nk

from .common import XPBenchmark

#: name -> (model, N, M, σ): the study's network and a two-hidden-layer net (issue 17)
WORKLOADS: dict[str, tuple[Callable[[], nk.MLP], int, int, float]] = {
    "study-relu-256": (lambda: nk.MLP(1, (256,), 1, activation="relu"), 320, 2048, 0.3),
    "mlp-16-256-256": (lambda: nk.MLP(16, (256, 256), 1), 128, 256, 0.3),
}


class NNTKEagerCalls(XPBenchmark):
    param_names = (*XPBenchmark.param_names, "workload", "variance_reduction")
    params = (*XPBenchmark.params, list(WORKLOADS), ["auto", "none"])

    def setup(self, backend: str, dtype: str, workload: str, variance_reduction: str) -> None:
        super().setup(backend, dtype)
        make, n, self.m, self.sigma = WORKLOADS[workload]
        self.model = make()
        self.theta = self.model.init(0, xp=self.xp, dtype=self.dtype, device=self.device)
        fan_in = self.model.in_features
        x = (
            np.linspace(-2.0, 2.0, n)[:, None]
            if fan_in == 1
            else self.rng.standard_normal((n, fan_in))
        )
        self.x = self.asarray(x)
        self.reduction = variance_reduction
        self.seeds = itertools.count(1)
        self.sync(self.run(0))  # compiles on JAX

    def run(self, seed: int) -> Any:
        return nk.nntk(
            self.model,
            self.theta,
            self.x,
            sigma=self.sigma,
            samples=self.m,
            seed=seed,
            variance_reduction=self.reduction,
        )

    def time_nntk_new_seed(self, *args: Any) -> None:
        self.sync(self.run(next(self.seeds)))
