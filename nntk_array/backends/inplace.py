"""Updates in place: whether a library's arrays can be written (NumPy, PyTorch, CuPy: yes;
JAX: no), and products and activations written into arrays the caller owns.

The engine fills reused buffers where it can and builds new arrays where it cannot. The
array API standard has no ``out=``, so a product or an activation written into an existing
array goes through the library's own (NumPy's, CuPy's and PyTorch's ``out=`` and in-place
methods); on other writeable libraries the result is computed and assigned.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from array_api_compat import (
    is_cupy_namespace,
    is_numpy_namespace,
    is_torch_namespace,
    is_writeable_array,
)

from .._typing import Array, Device, Namespace

__all__ = ["clamp_min_into", "matmul_into", "writeable"]


def writeable(xp: Namespace, device: Device = None) -> bool:
    """Whether arrays of ``xp`` on ``device`` can be written in place (``a[...] = b``,
    ``a += b``)."""
    return bool(is_writeable_array(xp.empty((0,), device=device)))


def _native(xp: Namespace) -> ModuleType | None:
    """The library behind ``xp`` where its functions take ``out=`` (NumPy, CuPy, PyTorch)."""
    for behind, name in (
        (is_numpy_namespace, "numpy"),
        (is_cupy_namespace, "cupy"),
        (is_torch_namespace, "torch"),
    ):
        if behind(xp):
            return importlib.import_module(name)
    return None


def matmul_into(xp: Namespace, a: Array, b: Array, out: Array) -> Array:
    """``a @ b`` written into ``out`` and returned.

    ``out`` is a writeable array of the product's shape and dtype (a contiguous view of a
    larger buffer included): a product of (N, width) numbers per set then lands in a buffer
    the caller reuses instead of a fresh array, whose pages and caches cost about as much
    as the product on a CPU.

    Examples
    --------
    >>> import numpy as np
    >>> out = np.zeros((2, 2))
    >>> _ = matmul_into(np, np.eye(2), np.ones((2, 2)), out)
    >>> out
    array([[1., 1.],
           [1., 1.]])
    """
    native = _native(xp)
    if native is None:
        out[...] = xp.matmul(a, b)
    else:
        native.matmul(a, b, out=out)
    return out


def clamp_min_into(xp: Namespace, z: Array, low: float) -> Array:
    """``max(z, low)`` written into ``z`` (writeable) and returned.

    Examples
    --------
    >>> import numpy as np
    >>> z = np.array([-1.0, 2.0])
    >>> _ = clamp_min_into(np, z, 0.0)
    >>> z
    array([0., 2.])
    """
    native = _native(xp)
    if native is None:
        z[...] = xp.maximum(z, low)
    elif is_torch_namespace(xp):
        z.clamp_min_(low)
    else:
        native.maximum(z, low, out=z)
    return z
