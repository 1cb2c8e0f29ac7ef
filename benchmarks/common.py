"""The backend x dtype base class every asv benchmark builds on.

``backend`` is one of ``numpy``, ``torch:cpu``, ``torch:cuda``, ``jax:cpu``, ``jax:gpu``,
``cupy`` (array-api-strict is for correctness, not speed); a backend that is not installed,
or a device that is absent, skips (asv treats ``NotImplementedError`` from ``setup`` as skip).
Set-up pins full float32 matmul precision (no TF32), enables JAX x64, and every timed call goes
through ``self.sync``, which waits for the device; subclasses make one warm-up call in
``setup`` so JIT compilation and first-touch allocations are not timed.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import numpy as np

from nntk_array.backends.namespaces import load
from nntk_array.backends.sync import synchronize

# Imported once here, so that asv's forked benchmark processes do not import them again.
for _library in ("torch", "jax"):
    with contextlib.suppress(ImportError):
        __import__(_library)

ALL_BACKENDS = ["numpy", "torch:cpu", "torch:cuda", "jax:cpu", "jax:gpu", "cupy"]
# NNTK_BENCH_BACKENDS=numpy,torch:cpu runs the suite on those backends only.
BACKENDS = [
    b
    for b in os.environ.get("NNTK_BENCH_BACKENDS", ",".join(ALL_BACKENDS)).split(",")
    if b in ALL_BACKENDS
] or ALL_BACKENDS
DTYPES = ["float32", "float64"]
LARGE = os.environ.get("NNTK_BENCH_LARGE") == "1"  # the slow sizes, off by default


def namespace(backend: str) -> tuple[Any, Any]:
    """(array namespace, device) of ``backend``; ``NotImplementedError`` when unavailable."""
    lib, _, dev = backend.partition(":")
    try:
        return load(lib, dev or None)
    except (ImportError, RuntimeError) as err:
        raise NotImplementedError(f"{backend}: {err}") from None


class XPBenchmark:
    """Base: ``self.xp``, ``self.device``, ``self.dtype``, ``self.asarray``, ``self.sync``."""

    param_names: tuple[str, ...] = ("backend", "dtype")
    params: tuple[list[Any], ...] = (BACKENDS, DTYPES)
    timeout = 600

    def setup(self, backend: str, dtype: str, *args: Any) -> None:
        self.xp, self.device = namespace(backend)
        self.dtype = getattr(self.xp, dtype)
        self.rng = np.random.default_rng(0)

    def asarray(self, a: Any) -> Any:
        out = self.xp.asarray(np.asarray(a), dtype=self.dtype, device=self.device)
        synchronize(out)
        return out

    @staticmethod
    def sync(out: Any) -> Any:
        """Wait for ``out`` (or each array of a tuple) to be computed."""
        for a in out if isinstance(out, tuple) else (out,):
            if a is not None:
                synchronize(a)
        return out

    def gpu_peak_bytes(self, fn: Any) -> float:
        """Peak device memory of one call of ``fn`` (CUDA torch and CuPy; skip elsewhere)."""
        name = getattr(self.xp, "__name__", "")
        if "torch" in name and self.device is not None and self.device.type == "cuda":
            import torch

            torch.cuda.reset_peak_memory_stats()
            self.sync(fn())
            return float(torch.cuda.max_memory_allocated())
        if "cupy" in name:
            import cupy

            pool = cupy.get_default_memory_pool()
            pool.free_all_blocks()
            self.sync(fn())
            return float(pool.total_bytes())
        raise NotImplementedError("device memory is tracked on CUDA only")
