"""Symmetric products X Xᵀ, the largest contraction of a Monte Carlo kernel.

The standard has only ``matmul``. NumPy's ``matmul`` recognises ``x @ x.T`` and calls the
BLAS symmetric rank-k update (half the flops); PyTorch on the CPU does not, so there the upper
block triangle is multiplied and mirrored (10/16 of the flops with 4 row blocks). Accelerators
and other libraries get the plain product.
"""

from __future__ import annotations

from array_api_compat import is_numpy_namespace, is_torch_namespace

from .._typing import Array, Namespace

__all__ = ["gram"]

_BLOCKS = 4
_MIN_ROWS = 256  # below this the blocks are too small to pay off


def gram(xp: Namespace, x: Array) -> Array:
    """``x @ x.T`` for a 2-D array, shape (M, M)."""
    xt = xp.permute_dims(x, (1, 0))
    m = x.shape[0]
    if is_numpy_namespace(xp) or m < _MIN_ROWS or not _cpu_torch(xp, x):
        return xp.matmul(x, xt)
    bounds = [(m * b) // _BLOCKS for b in range(_BLOCKS + 1)]
    rows = [x[bounds[b] : bounds[b + 1], :] for b in range(_BLOCKS)]
    upper = {
        (i, j): xp.matmul(rows[i], xp.permute_dims(rows[j], (1, 0)))
        for i in range(_BLOCKS)
        for j in range(i, _BLOCKS)
    }

    def block(i: int, j: int) -> Array:
        return upper[i, j] if i <= j else xp.permute_dims(upper[j, i], (1, 0))

    rows_out = [xp.concat([block(i, j) for j in range(_BLOCKS)], axis=1) for i in range(_BLOCKS)]
    return xp.concat(rows_out, axis=0)


def _cpu_torch(xp: Namespace, x: Array) -> bool:
    return bool(is_torch_namespace(xp) and x.device.type == "cpu")
