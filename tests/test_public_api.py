from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version

import nntk_array as nk

# array libraries and the interop extras (nntk_array.interop imports them on demand)
OPTIONAL = ("torch", "jax", "cupy", "sklearn", "gpytorch")


def test_import_loads_no_optional_backend():
    code = (
        "import sys, nntk_array as nk; import numpy as np;"
        "m = nk.MLP(1, (4,)); t = m.init(0, xp=np); nk.ntk(m, t, np.zeros((2, 1)));"
        "nk.nntk(m, t, np.zeros((2, 1)), sigma=0.1, samples=4, seed=0);"
        f"print(sorted(k for k in {OPTIONAL!r} if k in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_public_names():
    assert sorted(nk.__all__) == sorted(
        [
            "MLP",
            "Attention",
            "Estimate",
            "Estimator",
            "KernelOperator",
            "LowRankOperator",
            "KernelTrack",
            "Model",
            "Resources",
            "Smoothing",
            "Spectrum",
            "TrainResult",
            "__version__",
            "analytic",
            "attention_weights",
            "band_error",
            "effective_dimension",
            "effective_sample_size",
            "from_jax",
            "from_torch",
            "gp_inference",
            "gradient_descent_ensemble",
            "gradient_flow",
            "kernel_alignment",
            "kernel_regression",
            "kernel_spectrum",
            "mode_learning_curves",
            "monte_carlo_kernel",
            "nntk",
            "nntk_features",
            "nonlocal_grad",
            "ntk",
            "ntk_operator",
            "spectral_energy",
            "track_kernel",
            "train",
        ]
    )
    for name in nk.__all__:
        assert getattr(nk, name).__doc__ or name == "__version__"


def test_version_is_single_sourced():
    assert nk.__version__ == version("nntk-array")
