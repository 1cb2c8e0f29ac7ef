"""Helpers for tests of nntk_array and of code that embeds it: host copies and tolerances.

Only tests should copy device arrays to the host; algorithms never do.
"""

from __future__ import annotations

import numpy as np
from array_api_compat import array_namespace as _array_namespace
from array_api_compat import (
    is_array_api_strict_namespace,
    is_cupy_array,
    is_jax_array,
    is_torch_array,
)

from ._typing import Array, DType

__all__ = ["eps", "to_numpy", "tol"]

_TIERS = {
    # tier: (float32, float64) relative tolerance
    "elementwise": (1.2e-5, 2.2e-14),
    "contraction": (1.4e-3, 6e-8),
    "exact": (1e-5, 1e-10),
}


def to_numpy(x: Array) -> np.ndarray:
    """Copy an array of any supported library to a NumPy array on the host."""
    if is_torch_array(x):
        cpu: np.ndarray = x.detach().cpu().numpy()
        return cpu
    if is_cupy_array(x):
        host: np.ndarray = x.get()
        return host
    if is_jax_array(x):
        return np.asarray(x)
    xp = _array_namespace(x)
    if is_array_api_strict_namespace(xp):
        x = x.to_device(xp.__array_namespace_info__().default_device())
    out: np.ndarray = np.asarray(x)
    return out


def tol(dtype: DType, tier: str) -> float:
    """Relative tolerance of a comparison ``tier`` in ``dtype``.

    ``elementwise``: same formula on both sides (100 eps); ``contraction``: sums of products
    compared across libraries or algorithms (4 sqrt(eps), as array-api-extra);
    ``exact``: two exact algorithms for the same quantity (e.g. structured vs autodiff NTK).
    """
    f32, f64 = _TIERS[tier]
    return f32 if _is_single(dtype) else f64


def eps(dtype: DType) -> float:
    """Machine epsilon of a float32 or float64 dtype of any library."""
    return float(np.finfo(np.float32 if _is_single(dtype) else np.float64).eps)


def _is_single(dtype: DType) -> bool:
    return "float32" in str(dtype)
