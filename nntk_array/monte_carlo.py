"""Averages of random kernels over initializations (and perturbation seeds), streaming."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

from ._mc.moments import RunningMoments
from ._typing import Array
from ._xp import resolve

__all__ = ["monte_carlo_kernel"]


def monte_carlo_kernel(
    kernel_fn: Callable[[int], Array], seeds: int | Iterable[int]
) -> tuple[Array, Array]:
    """Mean of ``kernel_fn(seed)`` over seeds and its standard error, in constant memory.

    Parameters
    ----------
    kernel_fn : callable
        ``kernel_fn(seed) -> array``: one random kernel, for example the NTK of a network
        initialized with ``seed`` (and an NNTK estimated with perturbation seed ``seed``).
    seeds : int or iterable of int
        S seeds (``range(S)`` for an int S >= 2).

    Returns
    -------
    mean : array
    stderr : array
        Entrywise standard error of the mean, std / √S (Welford's running variance, so
        only two arrays are held whatever S is).

    Raises
    ------
    ValueError
        Fewer than two seeds; kernels of different shapes.
    TypeError
        Non-array or non-floating kernels, mixed libraries.

    Examples
    --------
    >>> import numpy as np
    >>> import nntk_array as nk
    >>> x = np.linspace(-1, 1, 3)[:, None]
    >>> model = nk.MLP(1, (256,))
    >>> mean, se = nk.monte_carlo_kernel(lambda s: nk.ntk(model, model.init(s, xp=np), x), 8)
    >>> mean.shape, bool(np.all(se < 0.2 * mean))
    ((3, 3), True)
    """
    if isinstance(seeds, bool):
        raise TypeError("`seeds` must be an int or an iterable of ints, not a bool")
    if isinstance(seeds, int):
        if seeds < 2:
            raise ValueError(f"`seeds` must be >= 2 to give a standard error; got {seeds}")
        seeds = range(seeds)
    moments = RunningMoments()
    for seed in seeds:
        xp, (k,) = resolve(kernel=kernel_fn(seed))
        if moments.mean is not None and tuple(k.shape) != tuple(moments.mean.shape):
            raise ValueError(
                f"`kernel_fn` returned shape {tuple(k.shape)} for seed {seed!r} but "
                f"{tuple(moments.mean.shape)} before"
            )
        moments.add(xp, k)
    count = moments.count
    if count < 2:
        raise ValueError(f"`seeds` must hold at least 2 seeds; got {count}")
    return moments.mean, (moments.m2 / (count - 1)) ** 0.5 / math.sqrt(count)
