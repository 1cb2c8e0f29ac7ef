"""Sums by segment (scatter-add), which the array API standard does not have."""

from __future__ import annotations

from array_api_compat import (
    device,
    is_cupy_namespace,
    is_jax_namespace,
    is_numpy_namespace,
    is_torch_namespace,
)

from .._typing import Array, Namespace

__all__ = ["segment_sum"]


def segment_sum(xp: Namespace, values: Array, segments: Array, num_segments: int) -> Array:
    """``values`` (K,) summed by segment: entry s of the result (``num_segments``,) is the sum
    of the values k with ``segments[k] == s`` (zero where there are none).

    The library's own scatter-add where it has one (``bincount`` with weights on NumPy and
    CuPy, ``index_add`` on torch, ``segment_sum`` on JAX: differentiable there and compiled
    under ``jax.jit``, ``num_segments`` being static); otherwise, on any array API library,
    a stable sort of the segments, a running sum and two searches for each segment's ends.

    Examples
    --------
    >>> import numpy as np
    >>> segment_sum(np, np.array([1.0, 2.0, 4.0]), np.array([2, 0, 2]), 3)
    array([2., 0., 5.])
    """
    if is_numpy_namespace(xp) or is_cupy_namespace(xp):
        sums = xp.bincount(segments, weights=values, minlength=num_segments)  # in float64
        return xp.astype(sums, values.dtype, copy=False)
    if is_torch_namespace(xp):
        zeros = xp.zeros(num_segments, dtype=values.dtype, device=device(values))
        return zeros.index_add(0, segments, values)
    if is_jax_namespace(xp):
        import jax

        return jax.ops.segment_sum(values, segments, num_segments=num_segments)
    order = xp.argsort(segments, stable=True)
    running = xp.cumulative_sum(xp.take(values, order), include_initial=True)
    ordered = xp.take(segments, order)
    ids = xp.arange(num_segments, dtype=segments.dtype, device=device(values))
    ends = xp.searchsorted(ordered, ids, side="right")
    return xp.take(running, ends) - xp.take(running, xp.searchsorted(ordered, ids))
