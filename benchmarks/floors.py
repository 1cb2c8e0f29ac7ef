"""The least time this machine allows the speed targets' workloads (python -m benchmarks.floors).

A floor counts only the work no implementation of the estimator can skip, each part at the
rate this machine reaches on it, measured here side by side:

* ``gaussian``: the MLP 64 -> 512 -> 512 -> 512 -> 1 (P = 559,105) at N = M = 1024, float32:
  the forward passes of the M perturbed networks (2·M·N multiply-adds per weight, each
  network with its own weights: batched products of shape (N, fan_in) @ (fan_in, fan_out)),
  U's Gram (M²·P multiply-adds as the library forms it: a symmetric product) and M·P normals
  drawn once, on all cores;
* ``lowrank``: the same forward with the weights shared (the low-rank family's GEMMs, one
  set's (N, fan_in) rows at a time) and nothing else;
* ``study``: the study's network 1-256-1 (P = 769) at N = 320, M = 2048, float64: M·P
  normals and the stream route's products (2·N·M·P + 2·N²·P), the forward taken as free;
* ``draws (b)``: the M·P = 256 x 70,401 float32 normals of the 16-256-256-1 workload.

Rates are the best of ``--repeats`` timings of one representative piece, scaled to the whole
workload. Floors are lower bounds: they leave out every elementwise pass and the
differences' products.

With ``--peers DIR`` (the directory of the reference peers' ``ntk_baselines.py``) the
Gaussian workload is also run once by ``nk.nntk`` and by the peer ``mc_batched``, side by
side, on NumPy and PyTorch. ``nk.nntk``'s tile draws are counted in that call: within its
default memory budget (peak under 1 GB) it draws some numbers twice, since neither U (2.3 GB)
nor the activations of all M networks (2.1 GB a layer) can be held. The table then adds the
Gaussian floor with those draws, and the least ratios to the peer and to the Gaussian call
that this machine allows, beside the targets (0.67 and 0.40).

Usage: ``python -m benchmarks.floors [--repeats 5] [--backends numpy,torch,jax] [--peers DIR]``
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import nntk_array as nk
from nntk_array._mc import directions
from nntk_array.backends.linalg import gram
from nntk_array.backends.namespaces import load
from nntk_array.backends.random import Generator, draw_parallel
from nntk_array.backends.sync import synchronize

BIG = nk.MLP(64, (512, 512, 512), 1)
STUDY = nk.MLP(1, (256,), 1)
SMALL_B = nk.MLP(16, (256, 256), 1)
COLUMNS = 65_536  # columns of U in the timed piece of the Gram


def _best(call: Callable[[], Any], repeats: int) -> float:
    synchronize(call())
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        synchronize(call())
        times.append(time.perf_counter() - t0)
    return min(times)


def _normals(xp: Any, dev: Any, rows: int, cols: int, dtype: Any, repeats: int) -> float:
    """Seconds per normal: ``rows`` x ``cols`` drawn as one block per core, as the tiles are."""
    g = Generator(0, xp=xp, device=dev)
    halves = 2 if rows % 2 == 0 else 1
    shape = (rows // halves, cols)
    draws = [lambda i=i: g.spawn_normal((i,), shape, dtype=dtype) for i in range(halves)]
    return _best(lambda: draw_parallel(draws, xp=xp, device=dev)[-1], repeats) / (rows * cols)


def _layer_flops(model: nk.MLP, n: int) -> int:
    """Multiply-adds of one forward pass over ``n`` inputs, times 2."""
    return 2 * n * sum(b.fan_in * b.fan_out for b in model.matrix_blocks)


def floors(backend: str, repeats: int) -> dict[str, float]:
    """The floors (seconds) of each workload on ``backend``, and the rates behind them."""
    xp, dev = load(backend, None)
    rng = np.random.default_rng(0)

    def arr(shape: tuple[int, ...], dtype: Any) -> Any:
        return xp.asarray(rng.standard_normal(shape), dtype=dtype, device=dev)

    f32, f64 = xp.float32, xp.float64
    out: dict[str, float] = {}
    if backend != "jax":
        n = m = 1024
        own_a, own_w = arr((4, n, 512), f32), arr((4, 512, 512), f32)
        own = _best(lambda: xp.matmul(own_a, own_w), repeats) / (4 * 2 * n * 512 * 512)
        shared_a, shared_w = arr((n, 512), f32), arr((512, 512), f32)
        shared = _best(lambda: xp.matmul(shared_a, shared_w), repeats) / (2 * n * 512 * 512)
        u = arr((m, COLUMNS), f32)
        per_gram = _best(lambda: gram(xp, u), repeats) / COLUMNS
        normal32 = _normals(xp, dev, 256, COLUMNS, f32, repeats)
        p = BIG.num_params
        forward = _layer_flops(BIG, n) * m * own
        out |= {
            "forward": forward,
            "gram": per_gram * p,
            "draws": normal32 * m * p,
            "gaussian": forward + per_gram * p + normal32 * m * p,
            "lowrank": _layer_flops(BIG, n) * m * shared,
            "GFLOP/s own weights": 1e-9 / own,
            "GFLOP/s shared weights": 1e-9 / shared,
        }
        n, m, p = 320, 2048, STUDY.num_params
        a, ut = arr((n, m), f64), arr((m, p), f64)
        contract = _best(lambda: xp.matmul(a, ut), repeats) * (1 + n / m)
        normal64 = _normals(xp, dev, m, p, f64, repeats)
        out |= {"study draws": normal64 * m * p, "study": normal64 * m * p + contract}
    out["draws (b)"] = _normals(xp, dev, 256, SMALL_B.num_params, f32, repeats) * (
        256 * SMALL_B.num_params
    )
    return out


def against_peer(nb: Any, backend: str, floor: dict[str, float]) -> dict[str, float]:
    """One ``nk.nntk`` call and one ``mc_batched`` call on the Gaussian workload, side by
    side; the Gaussian floor with the draws the call made, and the least ratios it allows."""
    from .compare_nntk import methods

    calls = methods(nb, backend, 1024)
    drawn = 0
    draw = directions._Gaussian._draw

    def counted(self: Any, i: int, j: int, out: Any = None) -> Any:
        nonlocal drawn
        drawn += math.prod(self._tile_shape(i, j))
        return draw(self, i, j, out)

    directions._Gaussian._draw = counted  # type: ignore[method-assign]
    try:
        t0 = time.perf_counter()
        synchronize(calls["nk.nntk"]())
        call = time.perf_counter() - t0
    finally:
        directions._Gaussian._draw = draw  # type: ignore[method-assign]
    t0 = time.perf_counter()
    synchronize(calls["peer mc_batched"]())
    peer = time.perf_counter() - t0
    passes = drawn / (1024 * BIG.num_params)
    bounded = floor["gaussian"] + floor["draws"] * (passes - 1)  # the draws it repeats
    return {
        "nk.nntk draws per number": passes,
        "gaussian, within the budget": bounded,
        "nk.nntk call": call,
        "peer mc_batched": peer,
        "least ratio to the peer (target 0.67)": bounded / peer,
        "least low-rank share of the call (target 0.40)": floor["lowrank"] / call,
    }


def _cell(key: str, value: float | None) -> str:
    if value is None:
        return ""
    if "GFLOP" in key:
        return f"{value:.1f}"
    return f"{value:.2f}" if "least" in key or "per number" in key else f"{value:.3g} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--backends", default="numpy,torch,jax")
    parser.add_argument("--peers", help="directory of the reference peers' ntk_baselines.py")
    args = parser.parse_args()
    backends = args.backends.split(",")
    results = {b: floors(b, args.repeats) for b in backends}
    if args.peers:
        from .compare_nntk import load_peers

        nb = load_peers(args.peers)
        for b in backends:
            if b != "jax":
                results[b] |= against_peer(nb, b, results[b])
    keys = list(dict.fromkeys(k for r in results.values() for k in r))
    print("| floor | " + " | ".join(backends) + " |")
    print("|---|" + "---|" * len(backends))
    for k in keys:
        cells = [_cell(k, results[b].get(k)) for b in backends]
        print(f"| {k} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
