"""``nk.ntk`` of models from PyTorch and JAX, side by side with torch.func and neural-tangents.

Workload: the CNN of the PyTorch "Neural Tangent Kernels" tutorial's kind on the 8 x 8
scikit-learn digits (``load_digits``, pixels / 16), float32, N inputs (default 256),
x2 = x1, the kernel averaged over the O = 10 outputs (``outputs="mean"``, the tutorial's
``compute='trace'`` divided by O, neural-tangents' ``trace_axes=(-1,)``)::

    nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
                  nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
                  nn.Flatten(), nn.Linear(16 * 4 * 4, 10))            # P = 5,050

* ``nk.ntk(nk.from_torch(cnn), theta0, x)`` against the tutorial's recipe, written as the
  tutorial writes it: ``functional_call`` + ``vmap(jacrev(fnet_single), (None, 0))`` for
  both inputs, then ``einsum('Naf,Maf->NM')`` per parameter, summed (and divided by O);
* the same CNN in flax linen (NHWC; OIHW -> HWIO kernels; the Linear rows permuted from the
  (C, H, W) flatten order to (H, W, C)) with the same weights: ``nk.ntk(nk.from_jax(...))``
  against neural-tangents 0.6.5 ``empirical_ntk_fn`` (each implementation, jitted,
  ``vmap_axes=0``). neural-tangents needs an older JAX, so it runs in its own environment
  (``--nt-python``) as a subprocess of the same run, with the weights and inputs passed
  through files; flax is not installed there, so the CNN is the same function written with
  ``jax.lax.conv_general_dilated`` on the flax parameter pytree (same weights, same
  arithmetic). Create that environment with::

      python3 -m venv /tmp/ntenv
      /tmp/ntenv/bin/pip install "neural-tangents==0.6.5" "jax==0.4.23" "jaxlib==0.4.23" \\
          "numpy<2" "scipy<1.13"
      /tmp/ntenv/bin/pip uninstall -y tensorflow   # the CPU build is enough
      /tmp/ntenv/bin/pip install --no-deps "tensorflow-cpu==2.15.1" "ml_dtypes==0.2.0"

Each method: one warm-up call (compiles), then ``--repeat`` timed calls, each synchronized,
interleaved round by round in one process (neural-tangents: its own process, timed there);
the min and median are printed with the ratio nk / peer of the medians and the maximum
difference relative to the peer's kernel. ``nk.ntk`` runs under its default
``memory_budget`` (256 MiB); the script prints the planned block size and the bytes it
budgets. Rerun from the repository root::

    python benchmarks/compare_interop.py --nt-python /tmp/ntenv/bin/python
    python benchmarks/compare_interop.py --n 256 --repeat 7 --nt-python /tmp/ntenv/bin/python
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
from collections.abc import Callable
from typing import Any

import numpy as np

import nntk_array as nk
from nntk_array.backends.sync import synchronize
from nntk_array.testing import to_numpy

O = 10

NT_SCRIPT = r"""
import json, statistics, sys, time
import numpy as np
import jax, jax.numpy as jnp
jax.config.update("jax_default_matmul_precision", "float32")
import neural_tangents as nt

weights_path, x_path, out_path, repeat = sys.argv[1:5]
w = dict(np.load(weights_path))
params = {"params": {
    "Conv_0": {"kernel": jnp.asarray(w["c0k"]), "bias": jnp.asarray(w["c0b"])},
    "Conv_1": {"kernel": jnp.asarray(w["c1k"]), "bias": jnp.asarray(w["c1b"])},
    "Dense_0": {"kernel": jnp.asarray(w["dk"]), "bias": jnp.asarray(w["db"])},
}}
x = jnp.asarray(np.load(x_path))

def conv(p, x):
    y = jax.lax.conv_general_dilated(x, p["kernel"], (1, 1), ((1, 1), (1, 1)),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y + p["bias"]

def apply_fn(params, x):  # flax linen CNN of compare_interop.py, written with lax
    p = params["params"]
    x = jax.nn.relu(conv(p["Conv_0"], x))
    x = jax.nn.relu(conv(p["Conv_1"], x))
    n, h, wd, c = x.shape
    x = x.reshape(n, h // 2, 2, wd // 2, 2, c).mean(axis=(2, 4))
    return x.reshape(n, -1) @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"]

results = {}
for impl in ("JACOBIAN_CONTRACTION", "NTK_VECTOR_PRODUCTS", "STRUCTURED_DERIVATIVES"):
    fn = jax.jit(nt.empirical_ntk_fn(apply_fn, trace_axes=(-1,), vmap_axes=0,
                 implementation=getattr(nt.NtkImplementation, impl)))
    k = fn(x, None, params).block_until_ready()
    times = []
    for _ in range(int(repeat)):
        t0 = time.perf_counter(); k = fn(x, None, params).block_until_ready()
        times.append(time.perf_counter() - t0)
    results[impl] = {"times": times, "kernel": np.asarray(k).tolist()}
json.dump({"jax": jax.__version__, "nt": nt.__version__, "results": results},
          open(out_path, "w"))
"""


def torch_cnn() -> Any:
    """The tutorial-style CNN, seeded."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 4 * 4, 10),
    )


def digits(n: int) -> np.ndarray:
    """The first ``n`` scikit-learn digits, (n, 1, 8, 8) float32 in [0, 1]."""
    from sklearn.datasets import load_digits

    data = load_digits().data
    if n > data.shape[0]:
        raise SystemExit(f"--n must be at most {data.shape[0]}")
    return (data[:n] / 16).astype(np.float32).reshape(n, 1, 8, 8)


def flax_weights(cnn: Any) -> dict[str, np.ndarray]:
    """The torch CNN's weights in flax linen's layout (NHWC, HWIO, (H, W, C) flatten)."""
    sd = {k: v.detach().numpy() for k, v in cnn.state_dict().items()}
    dense = sd["6.weight"].reshape(10, 16, 4, 4).transpose(0, 2, 3, 1).reshape(10, -1)
    return {
        "c0k": sd["0.weight"].transpose(2, 3, 1, 0),
        "c0b": sd["0.bias"],
        "c1k": sd["2.weight"].transpose(2, 3, 1, 0),
        "c1b": sd["2.bias"],
        "dk": np.ascontiguousarray(dense.T),
        "db": sd["6.bias"],
    }


def tutorial_ntk(cnn: Any, x1: Any, x2: Any) -> Any:
    """The torch.func tutorial's ``empirical_ntk_jacobian_contraction``, compute='trace', / O."""
    import torch
    from torch.func import functional_call, jacrev, vmap

    params = {k: v.detach() for k, v in cnn.named_parameters()}

    def fnet_single(params: Any, x: Any) -> Any:
        return functional_call(cnn, params, (x.unsqueeze(0),)).squeeze(0)

    jac1 = vmap(jacrev(fnet_single), (None, 0))(params, x1)
    jac1 = [j.flatten(2) for j in jac1.values()]
    jac2 = vmap(jacrev(fnet_single), (None, 0))(params, x2)
    jac2 = [j.flatten(2) for j in jac2.values()]
    result = torch.stack(
        [torch.einsum("Naf,Maf->NM", j1, j2) for j1, j2 in zip(jac1, jac2, strict=True)]
    )
    return result.sum(0) / O


def flax_model(weights: dict[str, np.ndarray]) -> tuple[Any, Any]:
    """(apply_fn, params) of the flax linen CNN carrying ``weights``."""
    import flax.linen as fnn
    import jax.numpy as jnp

    class CNN(fnn.Module):
        @fnn.compact
        def __call__(self, x: Any) -> Any:
            x = fnn.relu(fnn.Conv(16, (3, 3), padding=1)(x))
            x = fnn.relu(fnn.Conv(16, (3, 3), padding=1)(x))
            x = fnn.avg_pool(x, (2, 2), strides=(2, 2))
            return fnn.Dense(10)(x.reshape(x.shape[0], -1))

    w = {k: jnp.asarray(v) for k, v in weights.items()}
    params = {
        "params": {
            "Conv_0": {"kernel": w["c0k"], "bias": w["c0b"]},
            "Conv_1": {"kernel": w["c1k"], "bias": w["c1b"]},
            "Dense_0": {"kernel": w["dk"], "bias": w["db"]},
        }
    }
    return CNN().apply, params


def interleaved(methods: dict[str, Callable[[], Any]], repeat: int) -> dict[str, Any]:
    """Warm each method up, then time them round by round; {name: (times, last output)}."""
    out: dict[str, Any] = {}
    for name, fn in methods.items():
        k = fn()
        synchronize(k)
        out[name] = ([], k)
    for _ in range(repeat):
        for name, fn in methods.items():
            start = time.perf_counter()
            k = fn()
            synchronize(k)
            out[name][0].append(time.perf_counter() - start)
            out[name] = (out[name][0], k)
    return out


def run_nt(python: str, weights: dict[str, np.ndarray], x: np.ndarray, repeat: int) -> Any:
    with tempfile.TemporaryDirectory() as tmp:
        paths = [os.path.join(tmp, f) for f in ("weights.npz", "x.npy", "out.json")]
        np.savez(paths[0], **weights)
        np.save(paths[1], x)
        done = subprocess.run(
            [python, "-c", NT_SCRIPT, *paths, str(repeat)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            print("neural-tangents failed:", done.stderr.strip()[-800:], file=sys.stderr)
            return None
        with open(paths[2]) as fh:
            return json.load(fh)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--nt-python", default=None, help="python of the neural-tangents env")
    args = parser.parse_args()

    import torch

    torch.set_float32_matmul_precision("highest")
    cnn = torch_cnn()
    x_np = digits(args.n)
    xt = torch.from_numpy(x_np)
    model_t = nk.from_torch(cnn)
    theta_t = model_t.theta0
    methods: dict[str, Callable[[], Any]] = {
        "nk.ntk(from_torch(cnn))": lambda: nk.ntk(model_t, theta_t, xt),
        "torch.func tutorial vmap(jacrev) + einsum": lambda: tutorial_ntk(cnn, xt, xt),
    }
    weights = flax_weights(cnn)
    x_nhwc = np.ascontiguousarray(x_np.transpose(0, 2, 3, 1))
    try:
        import jax

        jax.config.update("jax_default_matmul_precision", "float32")
        import jax.numpy as jnp

        apply_fn, params = flax_model(weights)
        model_j = nk.from_jax(apply_fn, params)
        theta_j, xj = model_j.theta0, jnp.asarray(x_nhwc)
        methods["nk.ntk(from_jax(flax cnn))"] = lambda: nk.ntk(model_j, theta_j, xj)
    except ImportError:
        print("flax/jax not installed: no JAX rows", file=sys.stderr)

    from nntk_array._mc.plan import ntk_blocks

    bound_n = len(x_np)
    per_input = O * model_t.num_params
    size, cache = ntk_blocks(
        None, bound_n, None, n_out=O, full=False, per_input=per_input, itemsize=4, mode="reverse"
    )
    timed = interleaved(methods, args.repeat)
    rows: list[tuple[str, list[float], np.ndarray]] = [
        (name, times, to_numpy(k).astype(np.float64)) for name, (times, k) in timed.items()
    ]
    if args.nt_python:
        nt_out = run_nt(args.nt_python, weights, x_nhwc, args.repeat)
        if nt_out is not None:
            for impl, r in nt_out["results"].items():
                label = f"neural-tangents {nt_out['nt']} {impl.lower()} (jax {nt_out['jax']})"
                rows.append((label, r["times"], np.array(r["kernel"])))

    print(
        f"CNN on digits, float32, P = {model_t.num_params:,}, O = {O}, N = {args.n}, x2 = x1, "
        f"outputs='mean'; {args.repeat} rounds after a warm-up, {os.cpu_count()} CPUs; "
        f"nk.ntk blocks of {size} inputs (Jacobians cached: {cache}) under 256 MiB"
    )
    peers = {
        "nk.ntk(from_torch(cnn))": "torch.func tutorial vmap(jacrev) + einsum",
        "nk.ntk(from_jax(flax cnn))": None,
    }
    by_name = {name: (times, k) for name, times, k in rows}
    print()
    print("| method | min s | median s | nk / peer (median) | max rel. difference |")
    print("|---|---|---|---|---|")
    for name, times, k in rows:
        peer = peers.get(name)
        if name == "nk.ntk(from_jax(flax cnn))":
            nt_rows = [r for r in rows if r[0].startswith("neural-tangents")]
            peer = (
                min(nt_rows, key=lambda r: statistics.median(r[1]))[0]
                if nt_rows
                else "torch.func tutorial vmap(jacrev) + einsum"
            )
        ref_name = peer or "torch.func tutorial vmap(jacrev) + einsum"
        ref = by_name[ref_name][1] if ref_name in by_name else k
        diff = float(np.max(np.abs(k - ref)) / np.max(np.abs(ref)))
        ratio = (
            f"{statistics.median(times) / statistics.median(by_name[peer][0]):.2f} "
            f"({peer.split(' (')[0]})"
            if peer in by_name
            else "—"
        )
        print(
            f"| {name} | {min(times):.4f} | {statistics.median(times):.4f} | {ratio} | "
            f"{diff:.1e} vs {ref_name.split(' (')[0]} |"
        )


if __name__ == "__main__":
    main()
