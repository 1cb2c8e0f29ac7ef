"""nntk_array: neural tangent kernels and nonlocal NTKs, written once for every array library.

All algorithms are written against the Python array API standard and accept NumPy, CuPy,
PyTorch, JAX or array-api-strict arrays; results come back in the same library, dtype and
device. Importing this package loads none of torch, jax or cupy.
"""

from ._version import __version__
from .attention import Attention, attention_weights, effective_sample_size
from .local_ntk import ntk
from .models import MLP
from .nonlocal_grad import nonlocal_grad
from .nonlocal_ntk import nntk

__all__ = [
    "MLP",
    "Attention",
    "__version__",
    "attention_weights",
    "effective_sample_size",
    "nntk",
    "nonlocal_grad",
    "ntk",
]
