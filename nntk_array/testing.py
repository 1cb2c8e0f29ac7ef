"""Helpers for tests of nntk_array and of code that embeds it: host copies and tolerances.

Only tests should copy device arrays to the host; algorithms never do.
"""

from __future__ import annotations

import numpy as np
from array_api_compat import (
    is_array_api_strict_namespace,
    is_cupy_array,
    is_jax_array,
    is_torch_array,
)
from array_api_compat import array_namespace as _array_namespace

from ._typing import Array, DType

__all__ = ["to_numpy", "tol"]

_TIERS = {
    # tier: (float32, float64) relative tolerance
    "elementwise": (1.2e-5, 2.2e-14),
    "contraction": (1.4e-3, 6e-8),
    "exact": (1e-5, 1e-10),
}


def to_numpy(x: Array) -> np.ndarray:
    """Copy an array of any supported library to a NumPy array on the host."""
    if is_torch_array(x):
        return x.detach().cpu().numpy()
    if is_cupy_array(x):
        return x.get()
    if is_jax_array(x):
        return np.asarray(x)
    xp = _array_namespace(x)
    if is_array_api_strict_namespace(xp):
        x = x.to_device(xp.__array_namespace_info__().default_device())
    return np.asarray(x)


def tol(dtype: DType, tier: str) -> float:
    """Relative tolerance of a comparison ``tier`` in ``dtype``.

    ``elementwise``: same formula on both sides (100 eps); ``contraction``: sums of products
    compared across libraries or algorithms (4 sqrt(eps), as array-api-extra);
    ``exact``: two exact algorithms for the same quantity (e.g. structured vs autodiff NTK).
    """
    f32, f64 = _TIERS[tier]
    return f32 if "float32" in str(dtype) else f64
