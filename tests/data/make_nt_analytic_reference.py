"""Write ``nt_analytic_reference.json``: neural-tangents' infinite-width NNGP and NTK kernels.

Run with an environment that has neural-tangents (0.6.5 was used) and its JAX::

    python tests/data/make_nt_analytic_reference.py

The kernels are those of ``stax.serial(Dense(512, W, b), φ, ..., Dense(512, W, b), φ,
Dense(1, W, b))`` (NTK parameterization, ``depth`` hidden layers) for φ in Relu, Erf, Sign,
depth 1 to 3 and two (W_std, b_std), in float64, on 8 inputs in R³: six Gaussian ones, one
within 1e-7 of the first and the negative of the second. ``tests/test_analytic.py`` compares
``nk.analytic`` to them without neural-tangents; the conventions are those the docstring of
``nntk_array.analytic`` states (Erf is ``stax.Erf()``, i.e. a = b = 1, c = 0).
"""

from __future__ import annotations

import json
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
from neural_tangents import stax  # noqa: E402

OUT = Path(__file__).with_name("nt_analytic_reference.json")
ACTIVATIONS = {"relu": stax.Relu, "erf": stax.Erf, "sign": stax.Sign}
DEPTHS = [1, 2, 3]
SCALES = [(1.0, 1.0), (1.5, 0.3)]  # (W_std, b_std)


def inputs() -> np.ndarray:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 3))
    near = x[0] + 1e-7 * rng.standard_normal(3)
    return np.concatenate([x, near[None], -x[1:2]])


def main() -> None:
    x = inputs()
    cases = []
    for name, layer in ACTIVATIONS.items():
        for depth in DEPTHS:
            for w_std, b_std in SCALES:
                hidden = [stax.Dense(512, w_std, b_std), layer()] * depth
                _, _, kernel_fn = stax.serial(*hidden, stax.Dense(1, w_std, b_std))
                k = kernel_fn(x, None, ("nngp", "ntk"))
                cases.append(
                    {
                        "activation": name,
                        "depth": depth,
                        "weight_std": w_std,
                        "bias_std": b_std,
                        "nngp": np.asarray(k.nngp, dtype=np.float64).tolist(),
                        "ntk": np.asarray(k.ntk, dtype=np.float64).tolist(),
                    }
                )
    data = {
        "source": "neural-tangents 0.6.5, tests/data/make_nt_analytic_reference.py",
        "x": x.tolist(),
        "cases": cases,
    }
    OUT.write_text(json.dumps(data, indent=None) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
