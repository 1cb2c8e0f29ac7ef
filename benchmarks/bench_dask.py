"""Kernels of Dask arrays on a ``dask.distributed`` LocalCluster: time against worker count.

One worker process per core, one thread each (BLAS pinned to one thread per worker, so the
workers do not oversubscribe the cores), loopback only. The ``in-memory`` row is the NumPy
call on the same inputs in this process, with BLAS on the same single thread: the
reference the workers divide. Each call computes the kernel and its sum (so no N² numbers are
gathered into one process). Throughput = 1 / time; the scaling ratio is time(1 worker) /
time(w workers) from one asv run.
"""

from __future__ import annotations

import os
from typing import Any
from unittest import mock

import numpy as np

import nntk_array as nk

WORKLOAD = {
    "ntk": {"n": 4096, "chunk": 512},
    "nntk": {"n": 1024, "chunk": 256, "samples": 256},
}
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


class DaskScaling:
    """MLP 4 -> 256 -> 256 -> 1 (ReLU, float64, P = 67,329); sigma = 0.1."""

    params = (["in-memory", 1, 2], ["ntk", "nntk"])
    param_names = ("workers", "kernel")
    timeout = 900
    number = 1
    repeat = (1, 3, 120.0)

    def setup(self, workers: Any, kernel: str) -> None:
        try:
            import dask.array as da
            import distributed
            from threadpoolctl import threadpool_limits
        except ImportError as err:
            raise NotImplementedError(f"dask.distributed not installed: {err}") from None
        self.limits = threadpool_limits(1)  # the in-memory reference uses one core too
        spec = WORKLOAD[kernel]
        self.model = nk.MLP(4, (256, 256), 1, activation="relu")
        self.theta = self.model.init(0, xp=np, dtype=np.float64)
        self.x = np.random.default_rng(0).normal(size=(spec["n"], 4))
        nonlocal_args = {"sigma": 0.1, "samples": spec.get("samples"), "seed": 0}
        self.kwargs = nonlocal_args if kernel == "nntk" else {}
        self.fn = nk.nntk if kernel == "nntk" else nk.ntk
        self.client = self.cluster = None
        if workers != "in-memory":
            # one BLAS thread per worker, inherited from the environment they start in
            with mock.patch.dict(os.environ, dict.fromkeys(THREAD_VARS, "1")):
                self.cluster = distributed.LocalCluster(
                    n_workers=workers,
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address=":0",
                )
            self.client = distributed.Client(self.cluster)
            self.x = da.from_array(self.x, chunks=spec["chunk"])
        self.time_kernel(workers, kernel)  # warm-up: imports on the workers, first calls

    def teardown(self, workers: Any, kernel: str) -> None:
        if self.client is not None:
            self.client.close()
            self.cluster.close()
        self.limits.restore_original_limits()

    def time_kernel(self, workers: Any, kernel: str) -> None:
        # Reduced where it is computed: the throughput of the kernel, not of gathering N²
        # numbers into one process.
        k = self.fn(self.model, self.theta, self.x, **self.kwargs).sum()
        if self.client is not None:
            self.client.compute(k).result()
