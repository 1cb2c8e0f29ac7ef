"""Attention weights, kernel predictions, infinite-width kernels and the study command."""

from __future__ import annotations

from typing import Any

import numpy as np

import nntk_array as nk

from .common import XPBenchmark


class AttentionWeights(XPBenchmark):
    param_names = (*XPBenchmark.param_names, "n")
    params = (*XPBenchmark.params, [256, 1024, 4096])

    def setup(self, backend: str, dtype: str, n: int) -> None:
        super().setup(backend, dtype)
        self.s = self.asarray(self.rng.standard_normal((n, n)))
        self.sync(nk.attention_weights(self.s))

    def time_attention_weights(self, *args: Any) -> None:
        self.sync(nk.attention_weights(self.s, temperature=0.5))


class Predictions(XPBenchmark):
    param_names = (*XPBenchmark.param_names, "n")
    params = (*XPBenchmark.params, [256, 1024])

    def setup(self, backend: str, dtype: str, n: int) -> None:
        super().setup(backend, dtype)
        x = np.linspace(-1, 1, n + 256)
        k = np.exp(-np.abs(x[:, None] - x[None, :]))
        self.k, self.ks = self.asarray(k[:n, :n]), self.asarray(k[n:, :n])
        self.y = self.asarray(np.sign(x[:n]))
        self.t = self.asarray(np.logspace(-2, 3, 16))
        self.sync(nk.kernel_regression(self.k, self.y, self.ks, ridge=1e-3))

    def time_kernel_regression_cholesky(self, *args: Any) -> None:
        self.sync(nk.kernel_regression(self.k, self.y, self.ks, ridge=1e-3))

    def time_kernel_regression_eigh_psd(self, *args: Any) -> None:
        self.sync(nk.kernel_regression(self.k, self.y, self.ks, ridge=1e-3, psd=True))

    def time_gradient_flow_16_times(self, *args: Any) -> None:
        self.sync(nk.gradient_flow(self.k, self.y, self.ks, t=self.t))


class AnalyticNTK(XPBenchmark):
    param_names = (*XPBenchmark.param_names, "activation")
    params = (*XPBenchmark.params, ["relu", "erf", "sign"])

    def setup(self, backend: str, dtype: str, activation: str) -> None:
        super().setup(backend, dtype)
        self.x = self.asarray(self.rng.standard_normal((1024, 8)))
        self.activation = activation
        self.sync(nk.analytic.ntk(self.x[:8, ...], activation=activation, depth=3))

    def time_analytic_ntk_depth3(self, *args: Any) -> None:
        self.sync(nk.analytic.ntk(self.x, activation=self.activation, depth=3))


class Study:
    """``python -m nntk_array reproduce --quick`` on NumPy, tables, JSON and figures included."""

    timeout = 300

    def time_reproduce_quick(self) -> None:
        import contextlib
        import io
        import tempfile

        from nntk_array.__main__ import main

        with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
            main(["reproduce", "--quick", "--out", f"{tmp}/study"])
