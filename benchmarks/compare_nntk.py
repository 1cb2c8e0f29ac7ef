"""Time the Monte Carlo nonlocal NTK: ``nk.nntk`` against two hand-written peers.

Workload: the ReLU MLP 64 -> 512 -> 512 -> 512 -> 1 in float32, NTK parameterization, with
biases (P = 559,105), sigma = 0.1, x2 = x1 of N random inputs, M perturbations, N = M in
{64, 256, 1024} by default. All three methods compute the same estimator, the unbiased
U-statistic (docs: Mathematics, "Kernel estimators"), K = A (G − diag G) Aᵀ / (M (M − 1) σ²),
with A[i, m] = f(θ + σ u_m, x_i) − f(θ, x_i) and G = U Uᵀ:

* ``nk.nntk`` (default options: chunked batched evaluations, random tiles regenerated from
  the seed, Gram or streaming route by cost, memory budget 384 MiB);
* peer (a), "loop": draw U (M x P), a Python loop of M forward passes (one perturbed network
  each), then the N x P nonlocal-gradient matrix Ĝ = A U / (M σ) and its Gram Ĝ Ĝᵀ minus the
  diagonal pairs;
* peer (b), "batched": draw U, one batched forward over all M perturbed networks (a (M, P)
  parameter batch through ``MLP.apply``), then A (Z Zᵀ − diag) Aᵀ with Z = U.

The peers use the same forward code (``nk.MLP.apply``) and the backend's own RNG in float32,
so the comparison isolates the estimator's structure. Each configuration runs in a fresh
subprocess: one warm-up call at N = M = 16, then the median of ``--repeat`` calls (default 5,
one at N = M >= 1024) timed with ``perf_counter`` after a synchronize. Peak memory is the
subprocess's maximum resident set size (``ru_maxrss``), including the interpreter, the
library import and the warm-up ("baseline", measured after the warm-up).
Phase shares of ``nk.nntk`` come from a profile of one call (``--profile``).

Rerun from the repository root::

    python benchmarks/compare_nntk.py                       # numpy and torch, N = M in 64/256/1024
    python benchmarks/compare_nntk.py --backend torch --sizes 256
    python benchmarks/compare_nntk.py --quick               # N = M = 32, a smoke test
    python benchmarks/compare_nntk.py --profile --backend numpy --sizes 1024
    python benchmarks/compare_nntk.py --check               # the three agree on one U
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import pstats
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

import numpy as np
from array_api_compat import device as array_device

import nntk_array as nk
from nntk_array.backends.sync import synchronize
from nntk_array.testing import to_numpy

IN_FEATURES = 64
HIDDEN = (512, 512, 512)
SIGMA = 0.1
METHODS = ("nntk", "batched", "loop")


def _namespace(backend: str, device: str) -> tuple[Any, Any]:
    if backend == "numpy":
        from array_api_compat import numpy as xp

        return xp, None
    import torch
    from array_api_compat import torch as xp

    torch.set_float32_matmul_precision("highest")
    return xp, torch.device(device)


def _randn(backend: str, seed: int, shape: tuple[int, ...], device: Any) -> Any:
    if backend == "numpy":
        return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)
    import torch

    g = torch.Generator(device=device).manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float32, device=device)


def _problem(backend: str, device: str, n: int) -> tuple[Any, Any, nk.MLP, Any, Any]:
    xp, dev = _namespace(backend, device)
    model = nk.MLP(IN_FEATURES, HIDDEN, 1, "relu")
    theta = model.init(0, xp=xp, dtype=xp.float32, device=dev)
    x = xp.asarray(
        np.random.default_rng(1).standard_normal((n, IN_FEATURES)), dtype=xp.float32, device=dev
    )
    return xp, dev, model, theta, x


def peer_batched(xp: Any, u: Any, model: nk.MLP, theta: Any, x: Any) -> Any:
    """Peer (b): one batched forward over all M perturbed networks, then A (Z Zᵀ) Aᵀ."""
    m, dev = u.shape[0], array_device(theta)
    f0 = model.apply(theta, x)[:, 0]
    a = model.apply(theta[None, :] + SIGMA * u, x)[:, :, 0] - f0[None, :]  # (M, N)
    g = xp.matmul(u, xp.permute_dims(u, (1, 0)))
    g = g - xp.linalg.diagonal(g)[:, None] * xp.eye(m, dtype=g.dtype, device=dev)
    k = xp.matmul(xp.permute_dims(a, (1, 0)), xp.matmul(g, a))
    return k / (m * (m - 1) * SIGMA**2)


def peer_loop(xp: Any, u: Any, model: nk.MLP, theta: Any, x: Any) -> Any:
    """Peer (a): M forward passes in a loop, then the N x P gradient matrix and its Gram."""
    m = u.shape[0]
    f0 = model.apply(theta, x)[:, 0]
    cols = [model.apply(theta + SIGMA * u[j, :], x)[:, 0] - f0 for j in range(m)]
    a = xp.stack(cols, axis=1) / (m * SIGMA)  # (N, M)
    grads = xp.matmul(a, u)  # (N, P) nonlocal gradients
    k = xp.matmul(grads, xp.permute_dims(grads, (1, 0)))
    diag = xp.matmul(a * xp.sum(u * u, axis=1)[None, :], xp.permute_dims(a, (1, 0)))
    return (k - diag) * (m / (m - 1))


def _method(backend: str, method: str, model: nk.MLP, xp: Any, dev: Any) -> Any:
    def run(theta: Any, x: Any) -> Any:
        n = x.shape[0]
        if method == "nntk":
            return nk.nntk(model, theta, x, sigma=SIGMA, samples=n, seed=7)
        u = _randn(backend, 7, (n, model.num_params), dev)
        return (peer_batched if method == "batched" else peer_loop)(xp, u, model, theta, x)

    return run


def run_one(backend: str, device: str, method: str, n: int, repeat: int) -> dict[str, Any]:
    """Time one method at N = M = n in this process: a warm-up at N = M = 16, then the
    median of ``repeat`` calls; peak RSS over the whole process, and a checksum."""
    xp, dev, model, theta, x = _problem(backend, device, n)
    run = _method(backend, method, model, xp, dev)
    synchronize(run(theta, x[:16, ...]))
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    times = []
    for _ in range(repeat):
        synchronize(theta)
        start = time.perf_counter()
        k = run(theta, x)
        synchronize(k)
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kk = to_numpy(k).astype(np.float64)
    return {
        "seconds": statistics.median(times),
        "peak_mb": peak,
        "baseline_mb": baseline,
        "trace": float(np.trace(kk)),
    }


def profile_phases(backend: str, device: str, n: int) -> None:
    """Print the share of random numbers, forward passes and contractions in one nk.nntk call.

    Random-number time is the main thread's wall time in ``draw_parallel`` (the draws run
    in worker threads); the other phases are cumulative times of the functions named.
    """
    _, _, model, theta, x = _problem(backend, device, n)
    prof = cProfile.Profile()
    start = time.perf_counter()
    prof.enable()
    k = nk.nntk(model, theta, x, sigma=SIGMA, samples=n, seed=7)
    synchronize(k)
    prof.disable()
    total = time.perf_counter() - start
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    phases = {
        "random numbers (drawn twice where not cached)": [("random.py", "draw_parallel")],
        "batched forward passes": [("mlp.py", "_forward")],
        "Gram products U_c U_cᵀ": [("linalg.py", "gram")],
        "tile assembly (concat)": [("directions.py", "_grid")],
    }
    print(f"nk.nntk {backend} N = M = {n}: {total:.2f} s")
    accounted = 0.0
    for label, funcs in phases.items():
        cum = sum(
            v[3]
            for key, v in stats.items()
            for f, fn in funcs
            if key[0].endswith(f) and key[2] == fn
        )
        accounted += cum
        print(f"  {label:<48} {cum:7.2f} s  {100 * cum / total:5.1f} %")
    rest = total - accounted
    print(
        f"  {'rest (differences, contractions, Python)':<48} {rest:7.2f} s  "
        f"{100 * rest / total:5.1f} %"
    )


def check(backend: str, device: str, n: int = 32) -> None:
    """All three methods on the same directions U agree (the timed runs draw different U)."""
    xp, dev, model, theta, x = _problem(backend, device, n)
    u = _randn(backend, 11, (n, model.num_params), dev)
    ref = to_numpy(nk.nntk(model, theta, x, sigma=SIGMA, samples=u, accumulate="float64"))
    for name, peer in (("batched", peer_batched), ("loop", peer_loop)):
        k = to_numpy(peer(xp, u, model, theta, x))
        err = float(np.max(np.abs(k - ref)) / np.max(np.abs(ref)))
        print(
            f"check {backend} N = M = {n}: peer {name} vs nk.nntk(samples=U): "
            f"max rel. difference {err:.1e}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=("numpy", "torch", "both"), default="both")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--quick", action="store_true", help="N = M = 32 only")
    parser.add_argument("--profile", action="store_true", help="phase shares of nk.nntk")
    parser.add_argument("--check", action="store_true", help="peers == nk.nntk on one U")
    parser.add_argument("--repeat", type=int, default=None, help="timed calls per method (median)")
    parser.add_argument(
        "--child", nargs=4, metavar=("BACKEND", "METHOD", "N", "R"), help="internal"
    )
    args = parser.parse_args()
    if args.child:
        backend, method, n, r = args.child
        print(json.dumps(run_one(backend, args.device, method, int(n), int(r))))
        return
    sizes = [32] if args.quick else args.sizes
    backends = ("numpy", "torch") if args.backend == "both" else (args.backend,)
    if args.check:
        for b in backends:
            check(b, args.device)
        return
    if args.profile:
        for b in backends:
            for n in sizes:
                profile_phases(b, args.device, n)
        return
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"python {platform.python_version()}, nntk_array {nk.__version__}"
    )
    print(
        f"MLP {IN_FEATURES}->{'->'.join(map(str, HIDDEN))}->1 ReLU float32, P = "
        f"{nk.MLP(IN_FEATURES, HIDDEN).num_params:,}, sigma = {SIGMA}, x2 = x1, N = M"
    )
    header = (
        f"{'backend':<7} {'N=M':>5} {'method':<8} {'seconds':>9} {'ratio':>7} "
        f"{'peak MB':>8} {'base MB':>8} {'trace':>12}"
    )
    print(header)
    for b in backends:
        for n in sizes:
            rows = {}
            for method in args.methods:
                out = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--device",
                        args.device,
                        "--child",
                        b,
                        method,
                        str(n),
                        str(args.repeat or (1 if n >= 1024 else 5)),
                    ],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if out.returncode != 0:
                    print(f"{b:<7} {n:>5} {method:<8} failed: {out.stderr.strip()[-300:]}")
                    continue
                rows[method] = json.loads(out.stdout.strip().splitlines()[-1])
            peers = [rows[p]["seconds"] for p in ("batched", "loop") if p in rows]
            best = min(peers) if peers else None
            for method, r in rows.items():
                ratio = f"{r['seconds'] / best:7.3f}" if best else "      -"
                print(
                    f"{b:<7} {n:>5} {method:<8} {r['seconds']:9.3f} {ratio} "
                    f"{r['peak_mb']:8.0f} {r['baseline_mb']:8.0f} {r['trace']:12.5g}"
                )


if __name__ == "__main__":
    main()
