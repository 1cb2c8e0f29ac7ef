"""``nk.ntk`` side by side with neural-tangents' ``empirical_ntk_fn`` and ``torch.func``.

Workload: the README's MLP 64 -> 512 -> 512 -> 512 -> 1 (ReLU, NTK parameterization, biases,
P = 559,105) in float32 on N random inputs (default 1024), x2 = x1, the kernel averaged over the
single output. All methods get the same parameters and inputs and must return the same kernel
(the maximum error relative to ``nk.ntk`` on NumPy is printed):

* ``nk.ntk`` on NumPy, PyTorch and JAX (structured per-layer contraction);
* neural-tangents 0.6.5 ``empirical_ntk_fn`` with each of its implementations
  (``JACOBIAN_CONTRACTION``, ``NTK_VECTOR_PRODUCTS``, ``STRUCTURED_DERIVATIVES``), jitted, on
  ``stax.serial(Dense(512), Relu(), ..., Dense(1))`` carrying our parameters. It needs an older
  JAX than ours, so it runs in its own environment (``--nt-python``), as a subprocess of this
  script, in the same run; create it with::

      python3 -m venv /tmp/ntenv
      /tmp/ntenv/bin/pip install "neural-tangents==0.6.5" "jax==0.4.23" "jaxlib==0.4.23" \
          "numpy<2" "scipy<1.13"
      /tmp/ntenv/bin/pip uninstall -y tensorflow   # the CPU build is enough
      /tmp/ntenv/bin/pip install --no-deps "tensorflow-cpu==2.15.1" "ml_dtypes==0.2.0"

* the ``torch.func`` Jacobian contraction of the PyTorch NTK tutorial (from
  ``compare_ntk.py``).

Each method: one warm-up call (compiles), then the median of ``--repeat`` timed calls, each
synchronized. Rerun from the repository root::

    python benchmarks/compare_peers.py --nt-python /tmp/ntenv/bin/python
    python benchmarks/compare_peers.py --n 256 --repeat 5 --nt-python /tmp/ntenv/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np

import nntk_array as nk
from nntk_array.backends.sync import synchronize
from nntk_array.testing import to_numpy

HIDDEN = (512, 512, 512)
IN_FEATURES = 64

NT_SCRIPT = r"""
import json, statistics, sys, time
import numpy as np
import jax, jax.numpy as jnp
jax.config.update("jax_default_matmul_precision", "float32")
import neural_tangents as nt
from neural_tangents import stax

theta_path, x_path, out_path, repeat, hidden = sys.argv[1:6]
theta, x = np.load(theta_path), jnp.asarray(np.load(x_path))
widths = [x.shape[1]] + [int(w) for w in hidden.split(",")] + [1]
layers, params, start = [], [], 0
for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
    w = theta[start : start + fan_in * fan_out].reshape(fan_in, fan_out)
    b = theta[start + fan_in * fan_out : start + fan_in * fan_out + fan_out]
    start += fan_in * fan_out + fan_out
    layers.append(stax.Dense(fan_out, W_std=1.0, b_std=1.0, parameterization="ntk"))
    if i < len(widths) - 2:
        layers.append(stax.Relu())
    params.append((jnp.asarray(w), jnp.asarray(b)))
    if i < len(widths) - 2:
        params.append(())
_, apply_fn, _ = stax.serial(*layers)
results = {}
for impl in ("JACOBIAN_CONTRACTION", "NTK_VECTOR_PRODUCTS", "STRUCTURED_DERIVATIVES"):
    fn = jax.jit(nt.empirical_ntk_fn(apply_fn, trace_axes=(-1,), vmap_axes=0,
                 implementation=getattr(nt.NtkImplementation, impl)))
    k = fn(x, None, params).block_until_ready()
    times = []
    for _ in range(int(repeat)):
        t0 = time.perf_counter(); k = fn(x, None, params).block_until_ready()
        times.append(time.perf_counter() - t0)
    results[impl] = {"seconds": statistics.median(times), "kernel": np.asarray(k).tolist()}
json.dump({"jax": jax.__version__, "nt": nt.__version__, "results": results},
          open(out_path, "w"))
"""


def _median_time(fn: Any, repeat: int) -> tuple[float, Any]:
    out = fn()
    synchronize(out)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        synchronize(out)
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--nt-python", default=None, help="python of the neural-tangents env")
    parser.add_argument("--no-torch-func", action="store_true")
    args = parser.parse_args()

    model = nk.MLP(IN_FEATURES, HIDDEN, 1, "relu")
    theta = model.init(0, xp=np, dtype=np.float32)
    x = np.random.default_rng(1).standard_normal((args.n, IN_FEATURES)).astype(np.float32)
    rows: list[tuple[str, float, np.ndarray]] = []

    seconds, ref = _median_time(lambda: nk.ntk(model, theta, x), args.repeat)
    ref = to_numpy(ref).astype(np.float64)
    rows.append(("nk.ntk numpy", seconds, ref))
    try:
        import torch
        from array_api_compat import torch as xt

        torch.set_float32_matmul_precision("highest")
        th, xx = xt.asarray(theta), xt.asarray(x)
        seconds, k = _median_time(lambda: nk.ntk(model, th, xx), args.repeat)
        rows.append(("nk.ntk torch", seconds, to_numpy(k)))
    except ImportError:
        pass
    try:
        import jax

        jax.config.update("jax_default_matmul_precision", "float32")
        import jax.numpy as jnp

        tj, xj = jnp.asarray(theta), jnp.asarray(x)
        seconds, k = _median_time(lambda: nk.ntk(model, tj, xj), args.repeat)
        rows.append(("nk.ntk jax (eager)", seconds, to_numpy(k)))
    except ImportError:
        pass

    if args.nt_python:
        with tempfile.TemporaryDirectory() as tmp:
            paths = [os.path.join(tmp, f) for f in ("theta.npy", "x.npy", "out.json")]
            np.save(paths[0], theta)
            np.save(paths[1], x)
            done = subprocess.run(
                [
                    args.nt_python,
                    "-c",
                    NT_SCRIPT,
                    *paths,
                    str(args.repeat),
                    ",".join(map(str, HIDDEN)),
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0:
                print("neural-tangents failed:", done.stderr.strip()[-500:], file=sys.stderr)
            else:
                with open(paths[2]) as fh:
                    nt_out = json.load(fh)
                for impl, r in nt_out["results"].items():
                    rows.append(
                        (
                            f"neural-tangents {nt_out['nt']} {impl.lower()} (jax "
                            f"{nt_out['jax']}, jit)",
                            r["seconds"],
                            np.array(r["kernel"]),
                        )
                    )

    if not args.no_torch_func:
        try:
            import torch

            sys.path.insert(0, os.path.dirname(__file__))
            from compare_ntk import Method, measure, torch_func_ntk, torch_network

            net, xt = torch_network(model, theta), torch.from_numpy(x)
            seconds, k = measure(
                Method("torch.func", "torch:cpu", lambda: torch_func_ntk(net, xt, xt)),
                args.repeat,
            )
            rows.append(("torch.func vmap(jacrev) contraction (tutorial)", seconds, k))
        except ImportError:
            pass

    print(
        f"MLP {IN_FEATURES}->{'->'.join(map(str, HIDDEN))}->1 ReLU float32, P = "
        f"{model.num_params:,}, N = {args.n}, x2 = x1, median of {args.repeat}; "
        f"{os.cpu_count()} CPUs"
    )
    peers = {name: s for name, s, _ in rows if not name.startswith("nk.ntk")}
    print(f"{'method':<62} {'seconds':>9} {'max rel err':>11}  ratios of nk.ntk numpy to it")
    for name, seconds, k in rows:
        err = float(np.max(np.abs(np.asarray(k, dtype=np.float64) - ref)) / np.max(np.abs(ref)))
        extra = "" if name.startswith("nk.ntk") else f"  {rows[0][1] / seconds:6.3f}x"
        print(f"{name:<62} {seconds:9.4f} {err:11.1e}{extra}")
    if peers:
        best = min(peers, key=peers.__getitem__)
        print(f"nk.ntk numpy / fastest peer ({best}): {rows[0][1] / peers[best]:.3f}")


if __name__ == "__main__":
    main()
