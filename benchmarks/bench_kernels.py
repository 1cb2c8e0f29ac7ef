"""Local NTK, Monte Carlo NNTK (sizes, estimators, samplings, attention) and nonlocal gradients."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

import nntk_array as nk
from nntk_array.models.ranks import ranks

from .common import LARGE, XPBenchmark

WIDE = (512, 512, 512)  # the MLP 64 -> 512 -> 512 -> 512 -> 1 of the README, P = 559,105
NARROW = (128, 128)  # 64 -> 128 -> 128 -> 1, P = 25,089


def _mlp(hidden: tuple[int, ...]) -> nk.MLP:
    return nk.MLP(64, hidden, 1, "relu")


class LocalNTK(XPBenchmark):
    param_names = (*XPBenchmark.param_names, "n", "depth")
    params = (*XPBenchmark.params, [128, 1024], [1, 3])

    def setup(self, backend: str, dtype: str, n: int, depth: int) -> None:
        super().setup(backend, dtype)
        self.model = _mlp((512,) * depth)
        self.theta = self.model.init(0, xp=self.xp, dtype=self.dtype, device=self.device)
        self.x = self.asarray(self.rng.standard_normal((n, 64)))
        self.sync(nk.ntk(self.model, self.theta, self.x[:8, ...]))

    def time_ntk(self, *args: Any) -> None:
        self.sync(nk.ntk(self.model, self.theta, self.x))

    def peakmem_ntk(self, *args: Any) -> None:
        self.sync(nk.ntk(self.model, self.theta, self.x))


class _NNTKSizes(XPBenchmark):
    """Default estimator (U-statistic) against N and M; the large sizes need NNTK_BENCH_LARGE."""

    param_names = (*XPBenchmark.param_names, "n", "m")
    params = (
        *XPBenchmark.params,
        [64, 256] + ([1024] if LARGE else []),
        [64, 256, 1024] + ([4096] if LARGE else []),
    )

    def setup(self, backend: str, dtype: str, n: int, m: int) -> None:
        super().setup(backend, dtype)
        self.model = _mlp(NARROW)
        self.theta = self.model.init(0, xp=self.xp, dtype=self.dtype, device=self.device)
        self.x = self.asarray(self.rng.standard_normal((n, 64)))
        self.m = m
        self.sync(self.run(16))

    def run(self, m: int) -> Any:
        return nk.nntk(self.model, self.theta, self.x, sigma=0.1, samples=m, seed=0)


class NNTKSize(_NNTKSizes):
    def time_nntk(self, *args: Any) -> None:
        self.sync(self.run(self.m))

    def peakmem_nntk(self, *args: Any) -> None:
        self.sync(self.run(self.m))


class NNTKDeviceMemory(_NNTKSizes):
    """Peak GPU memory of the NNTKSize calls (CUDA torch and CuPy; skipped elsewhere)."""

    def setup(self, backend: str, dtype: str, n: int, m: int) -> None:
        if backend not in ("torch:cuda", "cupy"):
            raise NotImplementedError("device memory is tracked on CUDA only")
        super().setup(backend, dtype, n, m)

    def track_gpu_peak_bytes(self, *args: Any) -> float:
        return self.gpu_peak_bytes(lambda: self.run(self.m))

    track_gpu_peak_bytes.unit = "bytes"  # type: ignore[attr-defined]


class NNTKOptions(XPBenchmark):
    """Each estimator (with iid sampling) and each sampling (with the U-statistic), N = 64,
    M = 128 (directional: M = 128 orthogonal directions)."""

    param_names = (*XPBenchmark.param_names, "option")
    params = (
        *XPBenchmark.params,
        [
            "unbiased/iid",
            "plugin/iid",
            "sketch/iid",
            "directional/orthogonal",
            "unbiased/antithetic",
            "unbiased/orthogonal",
            "unbiased/qmc",
        ],
    )

    def setup(self, backend: str, dtype: str, option: str) -> None:
        super().setup(backend, dtype)
        estimator, sampling = option.split("/")
        self.model = _mlp(NARROW)
        self.theta = self.model.init(0, xp=self.xp, dtype=self.dtype, device=self.device)
        self.x = self.asarray(self.rng.standard_normal((64, 64)))
        self.kw = {"estimator": estimator, "sampling": sampling}
        self.sync(self.run(16))

    def run(self, m: int) -> Any:
        return nk.nntk(self.model, self.theta, self.x, sigma=0.1, samples=m, seed=0, **self.kw)

    def time_nntk(self, *args: Any) -> None:
        self.sync(self.run(128))


class NNTKAttention(XPBenchmark):
    param_names = (*XPBenchmark.param_names, "score")
    params = (*XPBenchmark.params, ["distance", "output", "temperature-inf"])

    def setup(self, backend: str, dtype: str, score: str) -> None:
        super().setup(backend, dtype)
        self.model = _mlp(NARROW)
        self.theta = self.model.init(0, xp=self.xp, dtype=self.dtype, device=self.device)
        self.x = self.asarray(self.rng.standard_normal((128, 64)))
        self.x = self.x[:64, ...]
        self.att = (
            nk.Attention(temperature=math.inf)
            if score == "temperature-inf"
            else nk.Attention(score=score)
        )
        self.sync(self.run(16))

    def run(self, m: int) -> Any:
        return nk.nntk(
            self.model, self.theta, self.x, sigma=0.1, samples=m, seed=0, attention=self.att
        )

    def time_nntk(self, *args: Any) -> None:
        self.sync(self.run(128))


class NNTKMemoryFlatInM:
    """Peak memory at a fixed budget against M (NumPy): it should not grow with M.

    MLP 64 -> 256 -> 256 -> 1 (P = 82,689) with a 32 MiB budget, which the directions
    already exceed at the smallest M (256 x P float32 = 85 MB); below that the whole problem
    fits and the peak is smaller, not flat.
    """

    param_names = ("m",)
    params = ([256, 1024, 4096],)
    timeout = 600

    def setup(self, m: int) -> None:
        import numpy as np

        self.model = nk.MLP(64, (256, 256), 1, "relu")
        self.theta = self.model.init(0, xp=np, dtype=np.float32)
        self.x = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)

    def peakmem_nntk(self, m: int) -> None:
        nk.nntk(
            self.model, self.theta, self.x, sigma=0.1, samples=m, seed=0, memory_budget=32 * 2**20
        )


class NonlocalGrad(XPBenchmark):
    param_names = (*XPBenchmark.param_names, "p", "m")
    params = (*XPBenchmark.params, [1_000, 100_000], [64, 512])

    def setup(self, backend: str, dtype: str, p: int, m: int) -> None:
        super().setup(backend, dtype)
        self.a = self.asarray(self.rng.standard_normal(p))
        self.theta = self.asarray(self.rng.standard_normal(p))
        self.m = m
        xp = self.xp
        self.fun = lambda t: xp.sign(xp.matmul(t, self.a))
        self.sync(nk.nonlocal_grad(self.fun, self.theta, sigma=0.1, samples=8, seed=0))

    def time_nonlocal_grad(self, *args: Any) -> None:
        self.sync(nk.nonlocal_grad(self.fun, self.theta, sigma=0.1, samples=self.m, seed=0))


class CallOverhead:
    """N = 8, M = 16 on a tiny model with NumPy: the fixed cost of a call (target < 2 ms)."""

    def setup(self) -> None:
        import numpy as np

        self.model = nk.MLP(1, (16,))
        self.theta = self.model.init(0, xp=np)
        self.x = np.linspace(-1, 1, 8)[:, None]
        nk.nntk(self.model, self.theta, self.x, sigma=0.1, samples=16, seed=0)

    def time_nntk_small(self) -> None:
        nk.nntk(self.model, self.theta, self.x, sigma=0.1, samples=16, seed=0)


class StudyNetwork(XPBenchmark):
    """The study's network, 1-256-1 ReLU, N = 320, M = 2048: plain and default estimators."""

    param_names = (*XPBenchmark.param_names, "variance_reduction")
    params = (*XPBenchmark.params, ["none", "auto"])

    def setup(self, backend: str, dtype: str, variance_reduction: str) -> None:
        super().setup(backend, dtype)
        self.model = nk.MLP(1, (256,), 1, "relu")
        self.theta = self.model.init(0, xp=self.xp, dtype=self.dtype, device=self.device)
        self.x = self.asarray(self.rng.uniform(-2.0, 2.0, (320, 1)))
        self.reduction = variance_reduction
        self.sync(self.run(1))  # compiles once on JAX; later seeds reuse it

    def run(self, seed: int) -> Any:
        return nk.nntk(
            self.model,
            self.theta,
            self.x,
            sigma=0.3,
            samples=2048,
            seed=seed,
            variance_reduction=self.reduction,
        )

    def time_nntk(self, *args: Any) -> None:
        self.sync(self.run(2))


class BreakpointRanks(XPBenchmark):
    """The ranks of the study's network's evaluation: 524,288 breakpoints among N = 320
    sorted inputs, by buckets (``nntk_array.models.ranks``) against the library's binary
    search, for evenly spread and normally distributed inputs."""

    param_names = (*XPBenchmark.param_names, "inputs", "method")
    params = (*XPBenchmark.params, ["even", "normal"], ["buckets", "searchsorted"])

    def setup(self, backend: str, dtype: str, inputs: str, method: str) -> None:
        super().setup(backend, dtype)
        even = np.linspace(-2.0, 2.0, 320)
        self.values = self.asarray(even if inputs == "even" else np.sort(self.rng.normal(size=320)))
        self.queries = self.asarray(2.0 * self.rng.normal(size=2**19))
        self.method = method

    def time_ranks(self, *args: Any) -> None:
        if self.method == "buckets":
            self.sync(ranks(self.xp, self.values, self.queries))
        else:
            self.sync(self.xp.searchsorted(self.values, self.queries))


class Perturbations(XPBenchmark):
    """The 64-512-512-512-1 MLP (P = 559,105), N = M = 256: Gaussian against low-rank
    perturbations (N = M = 1024 with NNTK_BENCH_LARGE; the GPU rows come from the
    torch:cuda, jax:gpu and cupy backends)."""

    param_names = (*XPBenchmark.param_names, "n", "perturbation")
    params = (
        *XPBenchmark.params,
        [256] + ([1024] if LARGE else []),
        ["gaussian", "lowrank r=1", "lowrank r=4"],
    )

    def setup(self, backend: str, dtype: str, n: int, perturbation: str) -> None:
        super().setup(backend, dtype)
        self.model = _mlp(WIDE)
        self.theta = self.model.init(0, xp=self.xp, dtype=self.dtype, device=self.device)
        self.x = self.asarray(self.rng.standard_normal((n, 64)))
        family, _, rank = perturbation.partition(" r=")
        self.options: dict[str, Any] = {"perturbation": family}
        if rank:
            self.options["rank"] = int(rank)
        self.n = n
        self.sync(self.run(16))

    def run(self, m: int) -> Any:
        x = self.x[:m, ...]
        return nk.nntk(self.model, self.theta, x, sigma=0.1, samples=m, seed=0, **self.options)

    def time_nntk(self, *args: Any) -> None:
        self.sync(self.run(self.n))

    def peakmem_nntk(self, *args: Any) -> None:
        self.sync(self.run(self.n))
