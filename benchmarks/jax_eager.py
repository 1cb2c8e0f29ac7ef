"""Eager JAX against NumPy and PyTorch on the issue-17 workloads (python -m benchmarks.jax_eager).

Workloads: (a) the study's network ``nk.MLP(1, (256,), 1, activation="relu")``, N = 320
inputs on [-2, 2], M = 2048, σ = 0.3, in float64 and float32; (b) ``nk.MLP(16, (256, 256),
1)``, N = 128, M = 256, float32. Each is timed with the default estimator
(``variance_reduction="auto"``: the reduced engine) and the plain one (``"none"``). Per
workload the backends take turns (interleaved rounds in one process, so a busy machine slows
them alike); every call uses a new seed. JAX's first call, which compiles the loop bodies,
is reported on its own; the table gives the median of the later calls and JAX's ratio to
the fastest CPU backend.

Usage: ``python -m benchmarks.jax_eager [--repeats 3] [--workloads a64,a32,b32]``
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import nntk_array as nk
from nntk_array.backends.namespaces import load
from nntk_array.backends.sync import synchronize

WORKLOADS: dict[str, tuple[Callable[[], nk.MLP], int, int, str]] = {
    "a64": (lambda: nk.MLP(1, (256,), 1, activation="relu"), 320, 2048, "float64"),
    "a32": (lambda: nk.MLP(1, (256,), 1, activation="relu"), 320, 2048, "float32"),
    "b32": (lambda: nk.MLP(16, (256, 256), 1), 128, 256, "float32"),
}
BACKENDS = ("numpy", "torch", "jax")


def _inputs(model: nk.MLP, n: int) -> np.ndarray:
    if model.in_features == 1:
        return np.linspace(-2.0, 2.0, n)[:, None]
    return np.random.default_rng(0).standard_normal((n, model.in_features))


def _case(backend: str, workload: str, reduction: str) -> Callable[[int], Any]:
    make, n, m, dtype = WORKLOADS[workload]
    xp, dev = load(backend, None)
    model = make()
    theta = model.init(0, xp=xp, dtype=getattr(xp, dtype), device=dev)
    x = xp.asarray(_inputs(model, n), dtype=getattr(xp, dtype), device=dev)

    def call(seed: int) -> Any:
        k = nk.nntk(model, theta, x, sigma=0.3, samples=m, seed=seed, variance_reduction=reduction)
        synchronize(k)
        return k

    return call


def _timed(call: Callable[[int], Any], seed: int) -> float:
    t0 = time.perf_counter()
    call(seed)
    return time.perf_counter() - t0


def run(workloads: list[str], repeats: int) -> list[dict[str, Any]]:
    rows = []
    for workload in workloads:
        for reduction in ("auto", "none"):
            cases = {b: _case(b, workload, reduction) for b in BACKENDS}
            first = {b: _timed(cases[b], 0) for b in BACKENDS}  # JAX compiles here
            times: dict[str, list[float]] = {b: [] for b in BACKENDS}
            for r in range(repeats):
                for b in BACKENDS:
                    times[b].append(_timed(cases[b], r + 1))
            med = {b: statistics.median(times[b]) for b in BACKENDS}
            fastest = min(med["numpy"], med["torch"])
            rows.append(
                {
                    "workload": workload,
                    "variance_reduction": reduction,
                    "jax_first": first["jax"],
                    **{b: med[b] for b in BACKENDS},
                    "ratio": med["jax"] / fastest,
                }
            )
            row = rows[-1]
            print(
                f"| {workload} | {reduction} | {row['jax_first']:.2f} | {row['jax']:.2f} | "
                f"{row['numpy']:.2f} | {row['torch']:.2f} | {row['ratio']:.2f} |",
                flush=True,
            )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    args = parser.parse_args(argv)
    print(
        "| workload | variance_reduction | JAX first call (s) | JAX (s) | NumPy (s) | "
        "PyTorch (s) | JAX / fastest |"
    )
    print("|---|---|---|---|---|---|---|")
    run([w for w in args.workloads.split(",") if w], args.repeats)


if __name__ == "__main__":
    main()
