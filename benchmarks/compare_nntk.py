"""Time the Monte Carlo nonlocal NTK against the reference peers, side by side in one process.

Workload: the ReLU MLP 64 -> 512 -> 512 -> 512 -> 1 in float32, NTK parameterization, with
biases (P = 559,105), sigma = 0.1, x2 = x1 of N inputs, M perturbations, N = M in
{64, 256, 1024} by default. The peers come from the reference script ``ntk_baselines.py``
(imported unchanged from ``--peers DIR``):

* ``mc_batched``: draw all M x P directions, one broadcast matmul per layer over the M
  perturbed networks, then A (Z Zᵀ) Aᵀ;
* ``mc_naive``: draw the M x P directions, M forward passes, then the N x P gradient matrix
  and its Gram.

``nk.nntk`` runs with its defaults (the unbiased estimator, ``memory_budget`` 384 MiB; on
this network the default variance reduction does not apply, see the Performance page), and,
if ``perturbation="lowrank"`` exists, with rank-1 and rank-4 perturbations. Every method
runs once as a warm-up (below N = M = 1024), then ``--repeat`` rounds call each method in
turn (interleaved); the
table gives each method's minimum and median, and the ratio of the minima to the better peer.
Peers report their phases (random numbers, forward passes, contraction) themselves;
``nk.nntk``'s come from a profile of one call (``--phases``): random numbers are the time
in the tile draws (``_block``), the forward the model's batched evaluation (or its column
sweep, less the sweep's draws and products), the Gram the
products U_c U_cᵀ without their draws. Peak memory (``--memory``) is measured in a fresh
subprocess per method: the growth of the maximum resident set over the state after setup.

Rerun from the repository root::

    python benchmarks/compare_nntk.py --peers ../shared/peers                 # 64/256/1024
    python benchmarks/compare_nntk.py --peers ../shared/peers --sizes 256 --backend torch
    python benchmarks/compare_nntk.py --peers ../shared/peers --quick         # N = M = 32
    python benchmarks/compare_nntk.py --peers ../shared/peers --phases --memory
"""

from __future__ import annotations

import argparse
import cProfile
import importlib
import json
import os
import platform
import pstats
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import nntk_array as nk
from nntk_array.backends.sync import synchronize

HIDDEN = (512, 512, 512)


def load_peers(path: str) -> Any:
    """The reference peer module ``ntk_baselines`` from the directory ``path``."""
    if not os.path.isfile(os.path.join(path, "ntk_baselines.py")):
        raise SystemExit(f"--peers {path!r}: no ntk_baselines.py there")
    sys.path.insert(0, os.path.abspath(path))
    return importlib.import_module("ntk_baselines")


def _setup(nb: Any, backend: str, n: int) -> tuple[Any, Any, Any, nk.MLP, Any, Any]:
    """The peers' backend, parameters and inputs, and the same network for ``nk.nntk``."""
    if backend == "numpy":
        from array_api_compat import numpy as xp

        be = nb.NumpyBackend()
    else:
        import torch
        from array_api_compat import torch as xp

        torch.set_float32_matmul_precision("highest")
        be = nb.TorchBackend("cpu")
    raw = nb.make_params_np()
    params = [(be.asarray(w), be.asarray(b)) for w, b in raw]
    x = be.asarray(nb.make_x_np(n))
    model = nk.MLP(nb.D_IN, HIDDEN, 1, activation="relu", bias_std=nb.B_STD)
    # the peers' layout is the MLP's: per layer W (fan_in, fan_out) row-major, then b
    theta = xp.asarray(np.concatenate([a.ravel() for layer in raw for a in layer]))
    return be, params, x, model, theta, xp


def methods(nb: Any, backend: str, n: int) -> dict[str, Callable[[], Any]]:
    """Every timed method at N = M = n, each a call returning its kernel."""
    be, params, x, model, theta, _ = _setup(nb, backend, n)
    sigma = nb.SIGMA
    calls: dict[str, Callable[[], Any]] = {
        "nk.nntk": lambda: nk.nntk(model, theta, x, sigma=sigma, samples=n, seed=7),
        "peer mc_batched": lambda: nb.mc_batched(be, params, x, n),
        "peer mc_naive": lambda: nb.mc_naive(be, params, x, n),
    }
    try:
        nk.nntk(model, theta, x[:2], sigma=sigma, samples=2, seed=0, perturbation="lowrank")
    except TypeError:  # no low-rank perturbations in this version
        return calls
    for r in (1, 4):
        calls[f"nk.nntk lowrank r={r}"] = lambda r=r: nk.nntk(
            model, theta, x, sigma=sigma, samples=n, seed=7, perturbation="lowrank", rank=r
        )
    return calls


def interleaved(
    calls: dict[str, Callable[[], Any]], repeat: int, warm_up: bool
) -> dict[str, list[float]]:
    """A warm-up call of each method (if ``warm_up``), then ``repeat`` rounds of one call
    each, in turn."""
    for call in calls.values() if warm_up else ():
        synchronize(call())
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeat):
        for name, call in calls.items():
            start = time.perf_counter()
            synchronize(call())
            times[name].append(time.perf_counter() - start)
    return times


def peer_phases(nb: Any, backend: str, n: int, name: str) -> dict[str, float]:
    """The phases a peer reports for one call (after the timed rounds, so warm)."""
    be, params, x, *_ = _setup(nb, backend, n)
    phases: dict[str, float] = {}
    (nb.mc_batched if name == "peer mc_batched" else nb.mc_naive)(be, params, x, n, phases)
    return phases


def nntk_phases(call: Callable[[], Any]) -> dict[str, float]:
    """``nk.nntk``'s phases from a profile of one call: random numbers, forward passes,
    Gram products and the rest."""
    prof = cProfile.Profile()
    start = time.perf_counter()
    prof.enable()
    synchronize(call())
    prof.disable()
    total = time.perf_counter() - start
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]

    def cum(file: str, func: str, caller: str | None = None) -> float:
        out = 0.0
        for key, (_, _, _, ct, callers) in stats.items():
            if key[0].endswith(file) and key[2] == func:
                if caller is None:
                    out += ct
                else:
                    out += sum(v[3] for c, v in callers.items() if c[2] == caller)
        return out

    rng = cum("directions.py", "_block")
    # a column sweep's forward pass holds its reads of U (their draws and Gram products)
    sweep = cum("directions.py", "__call__")
    forward = cum("mlp.py", "_forward") + cum("mlp.py", "lowrank_apply")
    forward += cum("mlp.py", "apply_by_columns") - sweep
    gram_route = cum("estimators.py", "_gram")  # its column blocks are drawn again
    gram = gram_route - (cum("directions.py", "_block", "columns") if gram_route else 0.0)
    gram += cum("linalg.py", "gram", "__call__")
    return {
        "random numbers": rng,
        "forward": forward,
        "Gram": gram,
        "rest": max(0.0, total - rng - forward - gram),
    }


def _peak_mb() -> float:
    """This process's peak resident set: Linux's VmHWM, which starts afresh at exec.
    ``ru_maxrss`` does not: a child started by a parent that had already reached a larger
    peak (this script after timing the peers) reports the parent's, so growth read 0."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_memory(peers: str, backend: str, n: int, name: str) -> dict[str, float]:
    """In this (fresh) process: the growth of the peak resident set over one call."""
    nb = load_peers(peers)
    call = methods(nb, backend, n)[name]
    before = _peak_mb()
    start = time.perf_counter()
    synchronize(call())
    seconds = time.perf_counter() - start
    after = _peak_mb()
    return {"peak_growth_mb": after - before, "seconds": seconds}


def memory(peers: str, backend: str, n: int, name: str) -> float | None:
    out = subprocess.run(
        [sys.executable, __file__, "--peers", peers, "--child", backend, str(n), name],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        print(f"  memory of {name!r} failed: {out.stderr.strip()[-300:]}")
        return None
    return float(json.loads(out.stdout.strip().splitlines()[-1])["peak_growth_mb"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--peers", required=True, help="directory holding ntk_baselines.py")
    parser.add_argument("--backend", choices=("numpy", "torch", "both"), default="both")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--quick", action="store_true", help="N = M = 32, one round")
    parser.add_argument("--repeat", type=int, default=None, help="rounds (default 3, 2 at 1024)")
    parser.add_argument("--phases", action="store_true", help="phase shares of every method")
    parser.add_argument("--memory", action="store_true", help="peak memory per method")
    parser.add_argument(
        "--memory-of", nargs="+", default=None, help="with --memory: only these methods"
    )
    parser.add_argument("--json", default=None, help="write every number to this file")
    parser.add_argument("--child", nargs=3, metavar=("BACKEND", "N", "METHOD"), help="internal")
    args = parser.parse_args()
    if args.child:
        backend, n, name = args.child
        print(json.dumps(child_memory(args.peers, backend, int(n), name)))
        return
    nb = load_peers(args.peers)
    sizes = [32] if args.quick else args.sizes
    backends = ("numpy", "torch") if args.backend == "both" else (args.backend,)
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, python "
        f"{platform.python_version()}, nntk_array {nk.__version__}, numpy {np.__version__}"
    )
    print(f"MLP {nb.DIMS} ReLU float32, P = {nb.P:,}, sigma = {nb.SIGMA}, x2 = x1, N = M")
    report: list[dict[str, Any]] = []
    for backend in backends:
        if backend == "torch":
            import torch

            print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
        for n in sizes:
            calls = methods(nb, backend, n)
            repeat = 1 if args.quick else args.repeat or (2 if n >= 1024 else 3)
            # calls of tens of seconds (N = M >= 1024) need no warm-up of their own
            times = interleaved(calls, repeat, warm_up=n < 1024)
            best_peer = min(min(times[p]) for p in calls if p.startswith("peer"))
            for name, ts in times.items():
                row: dict[str, Any] = {
                    "backend": backend,
                    "n": n,
                    "method": name,
                    "min_s": min(ts),
                    "median_s": statistics.median(ts),
                    "ratio_to_best_peer": min(ts) / best_peer,
                }
                if args.phases:
                    ph = (
                        peer_phases(nb, backend, n, name)
                        if name.startswith("peer")
                        else nntk_phases(calls[name])
                    )
                    row["phases"] = ph
                if args.memory and (args.memory_of is None or name in args.memory_of):
                    row["peak_growth_mb"] = memory(args.peers, backend, n, name)
                report.append(row)
                extra = ""
                if "phases" in row:
                    total = sum(row["phases"].values())
                    extra += "  " + ", ".join(
                        f"{k} {v:.2f} s ({100 * v / total:.0f}%)" for k, v in row["phases"].items()
                    )
                if row.get("peak_growth_mb") is not None:
                    extra += f"  peak +{row['peak_growth_mb']:.0f} MB"
                print(
                    f"{backend:<6} N=M={n:<5} {name:<22} min {row['min_s']:8.3f} s  median "
                    f"{row['median_s']:8.3f} s  x{row['ratio_to_best_peer']:.2f} best peer{extra}",
                    flush=True,
                )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=1)


if __name__ == "__main__":
    main()
