"""Ranks of many queries among few sorted values, by buckets instead of binary searches.

A binary search per query costs about ``log2 N`` mispredicted branches on a CPU: about 80 ns
per query at N = 320 on a 2-core x86 VM, where the breakpoint evaluation of a one-input
network ranks half a million breakpoints per call. Here the range of the sorted values is
cut into ``BUCKETS_PER_VALUE·N`` equal buckets. A query's bucket is an affine map, a clip and
a truncation; the values in buckets before it are all smaller, those after it all larger,
and the few in its own bucket are counted by a branchless search of ``ceil(log2(C + 1))``
steps, C being the most values any bucket holds. Every step is one pass of array operations
over all queries, so evenly spread values (C = 1 or 2) cost a handful of passes per query.
Clustered values (C of 8 or more) go through the library's own ``searchsorted``.

The bucket map is the same monotone function of the values and the queries (a subtraction,
a product with a positive number, a clip and a truncation, each monotone under rounding),
which is all the counting needs: the ranks are exact for any values, whatever their spread.
Traced arrays (``jax.jit``, ``torch.func``), whose C cannot be read, queries of another
dtype than the values, and values whose range overflows or is subnormal go through the
library's own ``searchsorted``.
"""

from __future__ import annotations

from array_api_compat import device as array_device

from .._typing import Array, Namespace
from ..backends.tracing import is_concrete

__all__ = ["BUCKETS_PER_VALUE", "MAX_STEPS", "ranks"]

#: buckets per sorted value: with two, evenly spread values share no bucket (C = 1), and N
#: uniformly random values put at most about 5 into one
BUCKETS_PER_VALUE = 2
#: more steps than this (a bucket of 8 or more values: clustered values) and the library's
#: binary search is faster; measured at N = 320, 524,288 queries, NumPy: 11 ms for evenly
#: spread values (1 step) and 16 ms for normal ones (3 steps) against 42 ms, 41 ms against
#: 16 ms for clustered ones (9 steps, whose searches the branch predictor learns)
MAX_STEPS = 3


def ranks(xp: Namespace, values: Array, queries: Array, side: str = "right") -> Array:
    """How many of the sorted ``values`` lie at or below each query (``side="right"``), or
    strictly below it (``"left"``): ``xp.searchsorted(values, queries, side=side)``.

    Parameters
    ----------
    values : array, shape (N,)
        Sorted ascending, finite.
    queries : array, shape (Q,)
        Any real numbers, infinities included (other dtypes than ``values``' go through
        ``searchsorted``).
    side : {"right", "left"}

    Returns
    -------
    array, shape (Q,)
        The ranks, in the library's default indexing dtype.

    Examples
    --------
    >>> import numpy as np
    >>> ranks(np, np.array([0.0, 1.0, 1.0, 3.0]), np.array([-1.0, 1.0, 2.5, np.inf]))
    array([0, 3, 3, 4])
    >>> ranks(np, np.array([0.0, 1.0, 1.0, 3.0]), np.array([1.0]), side="left")
    array([1])
    """
    found = _by_buckets(xp, values, queries, side)
    return xp.searchsorted(values, queries, side=side) if found is None else found


def _by_buckets(xp: Namespace, values: Array, queries: Array, side: str) -> Array | None:
    """The ranks by buckets, or ``None`` where the library's binary search is used instead."""
    n = values.shape[0]
    # the buckets of values and queries must come from one arithmetic: one dtype
    if (
        n == 0
        or values.dtype != queries.dtype
        or not (is_concrete(values) and is_concrete(queries))
    ):
        return None
    dev = array_device(values)
    index = xp.__array_namespace_info__().default_dtypes(device=dev)["indexing"]
    k = BUCKETS_PER_VALUE * n
    lo, hi = float(values[0]), float(values[-1])
    span, largest = hi - lo, float(xp.finfo(values.dtype).max)
    # equal values: all in the first bucket (searched in log2 N steps), larger queries in
    # later ones (any positive scale keeps the map monotone; zero would make inf·0 a NaN)
    scale = k / span if span > 0 else 1.0
    if not (span <= largest / 2 and 0 < scale <= largest):  # a huge or a subnormal span
        return None

    def bucket(v: Array) -> Array:
        # clipped to the values' range first (also monotone), so that v - lo cannot
        # overflow; then to [0, k - 1], so that truncation is the floor
        return xp.astype(xp.clip((xp.clip(v, lo, hi) - lo) * scale, 0, k - 1), index)

    ids = xp.arange(k, dtype=index, device=dev)
    first = xp.astype(xp.searchsorted(bucket(values), ids, side="left"), index)  # (k,)
    most = int(xp.max(xp.diff(first, append=xp.asarray([n], dtype=index, device=dev))))
    if most.bit_length() > MAX_STEPS:
        return None
    # values[i - 1] at index i, then NaNs, below no query: a step past the query's bucket
    # meets a larger value of a later bucket or a NaN, so the search stays in its bucket
    nan = xp.full((most + 1,), xp.nan, dtype=values.dtype, device=dev)
    shifted = xp.concat([values[:1], values, nan])

    def below(v: Array) -> Array:
        return v <= queries if side == "right" else v < queries

    pos = xp.take(first, bucket(queries))
    # branchless binary lifting inside the bucket: pos only ever moves past counted values
    for step in (1 << s for s in reversed(range(most.bit_length()))):
        cand = pos + step
        pos = xp.where(below(xp.take(shifted, cand)), cand, pos)
    return pos
