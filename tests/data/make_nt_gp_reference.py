"""Write ``nt_gp_reference.json``: neural-tangents' GP inference and ensemble predictor outputs.

Run with an environment that has neural-tangents (0.6.5 was used) and its JAX::

    python tests/data/make_nt_gp_reference.py

The kernels are neural-tangents' own infinite-width NNGP and NTK of
``stax.serial(Dense(512, 1, 1), Relu(), Dense(1, 1, 1))`` on 8 train and 5 test inputs in R²,
in float64. The file stores them, the targets (two outputs), and the outputs of
``predict.gp_inference`` (get nngp, ntk, ntkgp; full covariance) and
``predict.gradient_descent_mse_ensemble`` (get nngp, ntk; several t, including 0 and inf), each
with and without ``diag_reg``. ``tests/test_gp.py`` compares nntk_array to them, without
neural-tangents, translating the conventions (time scaled by 1/y_train.size, diag_reg relative
to tr(K)/N) as the docstrings of ``nntk_array.gp`` state.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
from neural_tangents import predict, stax  # noqa: E402

OUT = Path(__file__).with_name("nt_gp_reference.json")
TIMES = [0.0, 0.5, 3.0, 40.0, math.inf]
LEARNING_RATE = 0.7
DIAG_REGS = [0.0, 1e-2]


def main() -> None:
    rng = np.random.default_rng(0)
    x_train = rng.standard_normal((8, 2))
    x_test = rng.standard_normal((5, 2))
    y_train = np.stack([np.sin(2 * x_train[:, 0]), np.cos(x_train[:, 1])], axis=1)
    _, _, kernel_fn = stax.serial(stax.Dense(512, 1.0, 1.0), stax.Relu(), stax.Dense(1, 1.0, 1.0))
    k_dd = kernel_fn(x_train, None, ("nngp", "ntk"))
    k_td = kernel_fn(x_test, x_train, ("nngp", "ntk"))
    k_tt = kernel_fn(x_test, None, ("nngp", "ntk"))

    def arr(a: object) -> list:
        return np.asarray(a, dtype=np.float64).tolist()

    cases = []
    for reg in DIAG_REGS:
        for absolute in (False, True):
            gp = predict.gp_inference(k_dd, y_train, reg, absolute)
            out = gp(("nngp", "ntk", "ntkgp"), k_td, k_tt)
            cases.append(
                {
                    "kind": "gp_inference",
                    "diag_reg": reg,
                    "absolute": absolute,
                    "result": {g: [arr(m), arr(c)] for g, (m, c) in out._asdict().items()},
                }
            )
            ens = predict.gradient_descent_mse_ensemble(
                kernel_fn, x_train, y_train, LEARNING_RATE, reg, absolute
            )
            out = ens(np.array(TIMES), x_test, ("nngp", "ntk"), compute_cov=True)
            cases.append(
                {
                    "kind": "gradient_descent_mse_ensemble",
                    "diag_reg": reg,
                    "absolute": absolute,
                    "result": {g: [arr(m), arr(c)] for g, (m, c) in out._asdict().items()},
                }
            )
    data = {
        "source": "neural-tangents 0.6.5, tests/data/make_nt_gp_reference.py",
        "times": [str(t) for t in TIMES],  # JSON has no inf
        "learning_rate": LEARNING_RATE,
        "y_train": arr(y_train),
        "nngp_train": arr(k_dd.nngp),
        "ntk_train": arr(k_dd.ntk),
        "nngp_test": arr(k_td.nngp),
        "ntk_test": arr(k_td.ntk),
        "nngp_test_test": arr(k_tt.nngp),
        "ntk_test_test": arr(k_tt.ntk),
        "cases": cases,
    }
    OUT.write_text(json.dumps(data, indent=None) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
