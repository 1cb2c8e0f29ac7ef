"""nntk_array: neural tangent kernels and nonlocal NTKs, written once for every array library.

All algorithms are written against the Python array API standard and accept NumPy, CuPy,
PyTorch, JAX or array-api-strict arrays; results come back in the same library, dtype and
device. Importing this package loads none of torch, jax or cupy.
"""

from . import analytic
from ._version import __version__
from .attention import Attention, attention_weights, effective_sample_size
from .gp import gp_inference, gradient_descent_ensemble
from .local_ntk import ntk
from .metrics import band_error, kernel_alignment
from .models import MLP, Model, from_jax, from_torch
from .monte_carlo import monte_carlo_kernel
from .nonlocal_grad import nonlocal_grad
from .nonlocal_ntk import nntk
from .operators import KernelOperator, LowRankOperator, nntk_features, ntk_operator
from .options import Estimate, Estimator, Resources, Smoothing
from .predict import gradient_flow, kernel_regression
from .spectra import (
    Spectrum,
    effective_dimension,
    kernel_spectrum,
    mode_learning_curves,
    spectral_energy,
)
from .tracking import KernelTrack, track_kernel
from .train import TrainResult, train

__all__ = [
    "MLP",
    "Attention",
    "Estimate",
    "Estimator",
    "KernelOperator",
    "KernelTrack",
    "LowRankOperator",
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
