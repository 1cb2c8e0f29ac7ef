"""Kernel ridge at large N without an N × N kernel: the local NTK operator + conjugate
gradients, and an NNTK root factor + Woodbury.

Each case runs in a fresh subprocess, so its peak resident memory (``ru_maxrss``) is its own:
NumPy float64, ``nk.MLP(1, (256,), 1)`` (ReLU, P = 769), inputs x ~ U(-1, 1), targets
sin(4x) + |x|, ridge 1e-3 (relative to tr(K)/N), 1,000 test inputs, default memory budgets.
CG uses the default randomized Nyström preconditioner, whose ℓ follows the operator's memory
budget (ℓ = 100 at N = 4096, 55 at N = 100,000 for 256 MiB). The NNTK is the sketch
estimator, σ = 0.1, M = 256 (r = 256). The agreement check runs both paths and the dense
``nk.kernel_regression`` at N = 4096 and reports the largest relative difference of the test
predictions, max|f − f_dense| / max|f_dense|. A first line reports the peak memory of an
interpreter that only imports NumPy and nntk_array (the baseline under every case's peak).

Usage: ``python benchmarks/large_n_ridge.py [N] [PATH ...]`` (default 100000, paths ``ntk``
and ``nntk``; ``PATH-only`` skips the agreement check at N = 4096).
"""

from __future__ import annotations

import json
import subprocess
import sys

CASE = r"""
import json, resource, sys, time
import numpy as np
import nntk_array as nk

path, n, dense = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "dense"
model = nk.MLP(1, (256,), 1)
theta = model.init(0, xp=np)
rng = np.random.default_rng(1)
x = rng.uniform(-1, 1, (n, 1))
xt = np.linspace(-1, 1, 1000)[:, None]
y = np.sin(4 * x[:, 0]) + np.abs(x[:, 0])
ridge, opts = 1e-3, dict(sigma=0.1, samples=256, seed=0, estimator="sketch")


class Counting:  # the operator protocol: count the products CG takes
    def __init__(self, op):
        self.op, self.shape, self.dtype, self.device = op, op.shape, op.dtype, op.device
        self.count = 0

    def matmul(self, v):
        self.count += 1
        return self.op.matmul(v)

    def diagonal(self):
        return self.op.diagonal()


t0 = time.perf_counter()
if path == "ntk":
    op = Counting(nk.ntk_operator(model, theta, x))
    f, ft = nk.kernel_regression(op, y, nk.ntk_operator(model, theta, xt, x), ridge=ridge)
    extra = {"products": op.count}
    if dense:
        k, kt = nk.ntk(model, theta, x), nk.ntk(model, theta, xt, x)
        _, ref = nk.kernel_regression(k, y, kt, ridge=ridge)
else:
    r = nk.nntk_features(model, theta, x, **opts)
    rt = nk.nntk_features(model, theta, xt, **opts)
    f, ft = nk.kernel_regression(nk.LowRankOperator(r), y, nk.LowRankOperator(rt, r), ridge=ridge)
    extra = {"rank": r.shape[1]}
    if dense:
        _, ref = nk.kernel_regression(r @ r.T, y, rt @ r.T, ridge=ridge)
seconds = time.perf_counter() - t0
out = {"path": path, "n": n, "seconds": round(seconds, 2),
       "peak_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1), **extra}
if dense:
    out["rel_diff_vs_dense"] = float(np.abs(ft - ref).max() / np.abs(ref).max())
print(json.dumps(out))
"""


def run(path: str, n: int, dense: bool) -> dict[str, object]:
    """One case in a fresh interpreter: its time, peak memory and (``dense``) agreement."""
    args = [sys.executable, "-c", CASE, path, str(n), "dense" if dense else "-"]
    done = subprocess.run(args, check=True, capture_output=True, text=True)
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


BASELINE = r"""
import json, resource
import numpy as np
import nntk_array as nk
print(json.dumps({"path": "baseline", "peak_mib":
      round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))
"""


def baseline() -> dict[str, object]:
    """Peak memory of an interpreter that only imports NumPy and nntk_array."""
    done = subprocess.run(
        [sys.executable, "-c", BASELINE], check=True, capture_output=True, text=True
    )
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    paths = sys.argv[2:] or ["ntk", "nntk"]
    print(json.dumps(baseline()), flush=True)
    for path in paths:
        if not path.endswith("-only"):
            print(json.dumps(run(path.removesuffix("-only"), 4096, dense=True)), flush=True)
        print(json.dumps(run(path.removesuffix("-only"), n, dense=False)), flush=True)


if __name__ == "__main__":
    main()
