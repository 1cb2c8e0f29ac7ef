"""Time the exact local NTK of one MLP: nntk_array on NumPy, PyTorch and JAX vs. torch.func.

Workload: the ReLU MLP 64 -> 512 -> 512 -> 512 -> 1 in float32, NTK parameterization
(``z = a @ W / sqrt(fan_in) + b``, all parameters drawn N(0, 1)), with biases, so
P = 559,105 parameters, evaluated on N random inputs (default N = 1024). Every method returns
the same (N, N) kernel Theta(x, x) = J(x) J(x)^T, averaged over the outputs:

* ``nk.ntk`` on NumPy, on PyTorch CPU and (if jax is importable) on JAX CPU: the structured
  per-layer contraction, which never forms the (N, P) Jacobian;
* the peer, the route of the official PyTorch "Neural Tangent Kernels" tutorial: an equivalent
  ``torch.nn`` network carrying the same parameters (``nn.Linear`` layers, each fed its input
  times 1/sqrt(fan_in) so that the parameterization, hence the kernel, match), per-sample
  Jacobians from ``vmap(jacrev(fnet_single), (None, 0))`` over ``torch.func.functional_call``,
  contracted with ``einsum('Naf,Mbf->NMab')`` and summed over the parameters
  (``empirical_ntk_jacobian_contraction``), with x2 = x1 passed explicitly as in the tutorial.

Each method is called once to warm up, then timed ``--repeat`` times with
``time.perf_counter`` (after ``synchronize``); the median is reported together with its ratio
to the torch.func time and the maximum error relative to the torch.func kernel,
``max |K - K_ref| / max |K_ref|``.

Rerun from the repository root::

    python benchmarks/compare_ntk.py              # N = 1024, 3 repeats
    python benchmarks/compare_ntk.py --n 2048 --repeat 5
    python benchmarks/compare_ntk.py --quick      # N = 128, a smoke test

The torch.func Jacobian takes N * P * 4 bytes per input set (about 2.3 GB for N = 1024).
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, jacrev, vmap

import nntk_array as nk
from nntk_array.backends.sync import synchronize
from nntk_array.testing import to_numpy

IN_FEATURES = 64
HIDDEN = (512, 512, 512)
OUT_FEATURES = 1
QUICK_N = 128


@dataclass(frozen=True)
class Method:
    """One way of computing the kernel: ``run()`` returns it as a NumPy-convertible array."""

    name: str
    backend: str
    run: Callable[[], Any]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1024, help="number of inputs N (default 1024)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per method (default 3)")
    parser.add_argument("--quick", action="store_true", help=f"use N = {QUICK_N}")
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="cuda: torch.func, torch, JAX and CuPy on the GPU (NumPy stays on the CPU)",
    )
    args = parser.parse_args()
    if args.quick:
        args.n = QUICK_N
    if args.n < 1 or args.repeat < 1:
        parser.error("--n and --repeat must be positive")
    return args


class Scale(nn.Module):
    """Multiply by a constant: the 1/sqrt(fan_in) of the NTK parameterization."""

    def __init__(self, coef: float) -> None:
        super().__init__()
        self.coef = coef

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return self.coef * a


def torch_network(model: nk.MLP, theta: np.ndarray) -> nn.Sequential:
    """The ``torch.nn`` twin of ``model`` at ``theta``, in the same NTK parameterization.

    ``nk.MLP`` stores each layer as W of shape (fan_in, fan_out), row-major, then the bias, and
    computes ``z = a @ W / sqrt(fan_in) + b``; here ``Scale(1/sqrt(fan_in))`` feeds
    ``nn.Linear`` (``a @ weight.T + bias``) with ``weight = W.T``. Folding the scale into the
    weight instead would give the same function but not the same kernel: the weight gradients,
    hence their share of the NTK, would shrink by sqrt(fan_in) (resp. fan_in).
    """
    widths = (model.in_features, *model.hidden, model.out_features)
    layers: list[nn.Module] = []
    start = 0
    for fan_in, fan_out in itertools.pairwise(widths):
        w = theta[start : start + fan_in * fan_out].reshape(fan_in, fan_out)
        start += fan_in * fan_out
        b = theta[start : start + fan_out]
        start += fan_out
        linear = nn.Linear(fan_in, fan_out)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(w.T))
            linear.bias.copy_(torch.from_numpy(b))
        layers += [Scale(1.0 / math.sqrt(fan_in)), linear, nn.ReLU()]
    if start != theta.shape[0]:
        raise ValueError(f"layout covers {start} of {theta.shape[0]} parameters")
    return nn.Sequential(*layers[:-1])


def torch_func_ntk(net: nn.Module, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    """The tutorial's ``empirical_ntk_jacobian_contraction``, averaged over the outputs."""
    params = {k: v.detach() for k, v in net.named_parameters()}

    def fnet_single(params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(net, params, (x.unsqueeze(0),)).squeeze(0)

    jac1 = vmap(jacrev(fnet_single), (None, 0))(params, x1)
    jac1 = [j.flatten(2) for j in jac1.values()]
    jac2 = vmap(jacrev(fnet_single), (None, 0))(params, x2)
    jac2 = [j.flatten(2) for j in jac2.values()]
    result = torch.stack(
        [torch.einsum("Naf,Mbf->NMab", j1, j2) for j1, j2 in zip(jac1, jac2, strict=True)]
    )
    return result.sum(0).diagonal(dim1=-2, dim2=-1).mean(-1)


def build_methods(model: nk.MLP, theta: np.ndarray, x: np.ndarray, device: str) -> list[Method]:
    """The methods to compare; the torch.func reference comes first."""
    theta_t, x_t = torch.from_numpy(theta).to(device), torch.from_numpy(x).to(device)
    net = torch_network(model, theta).to(device)
    methods = [
        Method("torch.func vmap(jacrev)", f"torch:{device}", lambda: torch_func_ntk(net, x_t, x_t)),
        Method("nk.ntk", "numpy", lambda: nk.ntk(model, theta, x)),
        Method("nk.ntk", f"torch:{device}", lambda: nk.ntk(model, theta_t, x_t)),
    ]
    if importlib.util.find_spec("jax") is not None:
        import jax

        # As torch's "highest": no TF32 for float32 matmuls (3 digits lost on GPUs otherwise).
        jax.config.update("jax_default_matmul_precision", "float32")
        dev = jax.devices("gpu" if device == "cuda" else "cpu")[0]
        theta_j, x_j = jax.device_put(theta, dev), jax.device_put(x, dev)
        methods.append(Method("nk.ntk", f"jax:{dev.platform}", lambda: nk.ntk(model, theta_j, x_j)))
    if device == "cuda" and importlib.util.find_spec("cupy") is not None:
        import cupy

        theta_c, x_c = cupy.asarray(theta), cupy.asarray(x)
        methods.append(Method("nk.ntk", "cupy", lambda: nk.ntk(model, theta_c, x_c)))
    return methods


def measure(method: Method, repeat: int) -> tuple[float, np.ndarray]:
    """Median wall time of ``repeat`` runs after one warm-up, and the kernel as NumPy."""
    kernel = method.run()
    synchronize(kernel)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        kernel = method.run()
        synchronize(kernel)
        times.append(time.perf_counter() - start)
    return statistics.median(times), to_numpy(kernel)


def relative_error(kernel: np.ndarray, reference: np.ndarray) -> float:
    """``max |K - K_ref| / max |K_ref|``, in float64."""
    diff = np.abs(kernel.astype(np.float64) - reference.astype(np.float64))
    return float(diff.max() / np.abs(reference.astype(np.float64)).max())


def print_environment(model: nk.MLP, n: int, repeat: int) -> None:
    print(f"workload: {model!r}")
    print(f"          P = {model.num_params:,} parameters, N = {n} inputs, float32, x2 = x1")
    print(f"repeats:  {repeat} timed runs per method after one warm-up; median reported")
    print(f"python {platform.python_version()}, numpy {np.__version__}, torch {torch.__version__}")
    if importlib.util.find_spec("jax") is not None:
        import jax

        print(f"jax {jax.__version__} on {jax.devices()}")
    else:
        print("jax not importable: skipped")
    print(
        f"cpus: os.cpu_count() = {os.cpu_count()}, torch.get_num_threads() = "
        f"{torch.get_num_threads()}, torch.get_num_interop_threads() = "
        f"{torch.get_num_interop_threads()}"
    )
    print()


def print_table(rows: list[tuple[Method, float, float]]) -> None:
    """Rows of (method, median seconds, relative error); the first row is the reference."""
    ref_time = rows[0][1]
    header = (
        f"{'method':<24} {'backend':<10} {'median s':>10} {'ratio':>8} {'speed-up':>9} "
        f"{'max rel err':>12}"
    )
    print(header)
    print("-" * len(header))
    for method, seconds, err in rows:
        print(
            f"{method.name:<24} {method.backend:<10} {seconds:>10.4f} {seconds / ref_time:>8.4f} "
            f"{ref_time / seconds:>8.1f}x {err:>12.2e}"
        )
    print("ratio = time / torch.func time; speed-up = torch.func time / time")


def main() -> None:
    args = parse_args()
    torch.set_float32_matmul_precision("highest")
    model = nk.MLP(IN_FEATURES, HIDDEN, OUT_FEATURES, activation="relu")
    theta = model.init(0, xp=np, dtype=np.float32)
    x = np.random.default_rng(1).standard_normal((args.n, IN_FEATURES), dtype=np.float32)
    print_environment(model, args.n, args.repeat)

    rows: list[tuple[Method, float, float]] = []
    reference: np.ndarray | None = None
    for method in build_methods(model, theta, x, args.device):
        seconds, kernel = measure(method, args.repeat)
        if reference is None:
            reference = kernel
        rows.append((method, seconds, relative_error(kernel, reference)))
    print_table(rows)


if __name__ == "__main__":
    main()
