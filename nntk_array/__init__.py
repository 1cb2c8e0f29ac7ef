"""nntk_array: neural tangent kernels and nonlocal NTKs, written once for every array library.

All algorithms are written against the Python array API standard and accept NumPy, CuPy,
PyTorch, JAX or array-api-strict arrays; results come back in the same library, dtype and
device. Importing this package loads none of torch, jax or cupy.
"""

from ._version import __version__
from .local_ntk import ntk
from .models import MLP

__all__ = ["MLP", "__version__", "ntk"]
