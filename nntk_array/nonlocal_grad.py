"""The Monte Carlo nonlocal gradient of any function of a batch of parameter vectors."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from array_api_compat import device

from ._differences import (
    check_resources,
    check_samples_array,
    check_seed,
    chunk_rows,
    evaluate_differences,
    make_directions,
    make_smoothing,
)
from ._typing import Array
from ._validate import check_finite, check_ndim, check_positive_int
from ._xp import resolve

__all__ = ["nonlocal_grad"]

_STDERR_GROUPS = 20


def nonlocal_grad(
    fun: Callable[[Array], Array],
    theta: Array,
    *,
    sigma: float,
    samples: int | Array,
    seed: int | None = None,
    rng: Any = None,
    form: str = "gaussian",
    radial: str = "gaussian",
    scale: str = "gradient-consistent",
    sampling: str = "iid",
    batch_size: int | None = None,
    memory_budget: int | None = None,
    return_stderr: bool = False,
) -> Array | tuple[Array, Array]:
    """Monte Carlo nonlocal gradient G fun(θ) of any function of parameters.

    Gaussian form: G f = E[(f(θ+h) − f(θ)) h]/σ², h ~ N(0, σ²I), which is exactly ∇ of f
    smoothed by N(0, σ²I) (Stein's identity); it exists for non-differentiable and noisy f.
    Paper form: G f = c E[(f(θ+h) − f(θ)) h/‖h‖²] with a radial density (math.md §2).

    Parameters
    ----------
    fun : callable
        Maps a batch of parameter vectors (B, P) to outputs (B, ...) in the same library.
    theta : array, shape (P,)
    sigma, samples, seed, rng, form, radial, scale, sampling, batch_size, memory_budget
        As in :func:`nntk_array.nntk`. ``samples`` may be explicit (M, P) unit-scale rows.
    return_stderr : bool, default False
        Also return the entrywise Monte Carlo standard error (batch means over independent
        samples, or over 20 groups for structured sampling).

    Returns
    -------
    grad : array, shape (..., P)
        One gradient row per output entry of ``fun`` (shape (P,) for scalar ``fun``), in
        ``theta``'s dtype, namespace and device.
    stderr : array, same shape, only with ``return_stderr=True``

    Raises
    ------
    TypeError
        Non-floating or mixed-library inputs, a non-callable ``fun``, a bad ``seed``/``rng``.
    ValueError
        ``theta`` not 1-D, ``fun`` output not (B, ...), NaN/inf, ``sigma <= 0``,
        ``samples < 1`` (or < 2 with ``return_stderr``), unknown options.

    Examples
    --------
    >>> import numpy as np
    >>> import nntk_array as nk
    >>> a = np.array([1.0, -2.0, 0.5])
    >>> u = np.sqrt(3.0) * np.eye(3)   # explicit directions with Uᵀ U = M I: exact for linear f
    >>> nk.nonlocal_grad(lambda t: t @ a, np.zeros(3), sigma=0.1, samples=u)
    array([ 1. , -2. ,  0.5])
    >>> nk.nonlocal_grad(lambda t: np.sign(t[:, 0]), np.zeros(1), sigma=0.5, samples=10**5,
    ...                  seed=1).round(1)        # d/dθ E sign(θ + σ g) = 2 φ(0)/σ ≈ 1.6
    array([1.6])
    """
    samples_arr = samples if hasattr(samples, "shape") else None
    xp, (theta, samples_arr) = resolve(theta=theta, samples=samples_arr)
    if not callable(fun):
        raise TypeError(f"`fun` must be a callable fun(thetas); got {type(fun).__name__}")
    check_ndim("theta", theta, (1,), "(P,)")
    p = theta.shape[0]
    if samples_arr is not None:
        check_samples_array(samples_arr, p)
    check_finite(xp, theta=theta, samples=samples_arr)
    budget, batch_size = check_resources(memory_budget, batch_size, return_stderr)
    m_hint = (
        samples_arr.shape[0] if samples_arr is not None else check_positive_int("samples", samples)
    )
    if return_stderr and m_hint < 2:
        raise ValueError(f"return_stderr needs samples >= 2; got {m_hint}")
    sm = make_smoothing(
        sigma, form, radial, scale, num_params=p, antithetic=sampling == "antithetic"
    )
    probe = fun(theta[None, :])
    if not hasattr(probe, "shape") or probe.ndim < 1 or probe.shape[0] != 1:
        raise ValueError(
            f"`fun(thetas)` must return shape (B, ...); for thetas of shape (1, P) it returned "
            f"{getattr(probe, 'shape', type(probe))}"
        )
    resolve(theta=theta, output=probe)
    out_shape = tuple(probe.shape[1:])
    n_out = math.prod(out_shape)
    itemsize = 4 if theta.dtype == xp.float32 else 8
    per_set = itemsize * (4 * p + 4 * n_out)
    dirs = make_directions(
        xp,
        samples if samples_arr is None else samples_arr,
        sampling,
        check_seed(seed, rng),
        num_params=p,
        dtype=theta.dtype,
        dev=device(theta),
        group_size=lambda m: max(1, min(-(-m // _STDERR_GROUPS) if return_stderr else m, p)),
        cache_bytes=0,
    )
    chunk = chunk_rows(batch_size, budget, per_set, dirs.num_rows)
    m, gsize = dirs.num_rows, dirs.group_size
    state: dict[str, Array] = {"sum": None, "sq": None, "weighted": None, "open": None}

    def accumulate(start: int, stop: int, u: Array, d: Array, w: Array) -> None:
        rows = xp.reshape(d, (stop - start, n_out)) * w[:, None]  # (B, F)
        u = xp.astype(u, rows.dtype, copy=False)
        part = xp.matmul(xp.permute_dims(rows, (1, 0)), u)  # (F, P)
        state["sum"] = part if state["sum"] is None else state["sum"] + part
        if not return_stderr:
            return
        if gsize == 1:  # per-sample terms Y_m = rows_m u_m
            sq = xp.matmul(xp.permute_dims(rows * rows, (1, 0)), u * u)
            state["sq"] = sq if state["sq"] is None else state["sq"] + sq
            state["weighted"] = state["sum"]
            return
        for g0 in range(start - start % gsize, stop, gsize):  # groups straddle chunks
            lo, hi = max(start, g0), min(stop, g0 + gsize)
            piece = xp.matmul(
                xp.permute_dims(rows[lo - start : hi - start, :], (1, 0)),
                u[lo - start : hi - start, :],
            )
            state["open"] = piece if lo == g0 else state["open"] + piece
            if hi == min(g0 + gsize, m):  # group complete
                acc_g, n_g = state["open"], hi - g0
                sq = acc_g * acc_g
                state["sq"] = sq if state["sq"] is None else state["sq"] + sq
                wt = n_g * acc_g
                state["weighted"] = wt if state["weighted"] is None else state["weighted"] + wt

    evaluate_differences(
        fun,
        theta,
        dirs,
        sm,
        chunk=chunk,
        acc_dtype=theta.dtype,
        on_chunk=accumulate,
        keep=False,
    )
    grad = state["sum"] / m
    shape = (*out_shape, p)
    if not return_stderr:
        return xp.reshape(grad, shape)
    # Var of the weighted mean of L independent group means Y_g = acc_g / n_g, with
    # ĝ = Σ_g n_g Y_g / M: L/(L-1) Σ_g (n_g/M)² (Y_g − ĝ)², expanded in running sums.
    groups = dirs.groups
    n_groups = len(groups)
    sum_n2 = float(sum((e - s) ** 2 for s, e in groups))
    var = (state["sq"] - 2.0 * grad * state["weighted"] + grad * grad * sum_n2) / m**2
    var = xp.maximum(var * (n_groups / (n_groups - 1)), 0.0)
    return xp.reshape(grad, shape), xp.reshape(xp.sqrt(var), shape)
