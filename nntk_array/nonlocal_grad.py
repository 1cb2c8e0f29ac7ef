"""The Monte Carlo nonlocal gradient of any function of a batch of parameter vectors."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from array_api_compat import device

from ._mc import precision
from ._mc.differences import chunks, shifting
from ._mc.directions import check_explicit, make_directions
from ._mc.plan import DEFAULT_BUDGET, grad_plan
from ._mc.smoothing import make_form
from ._typing import Array
from ._validate import check_finite, check_ndim
from ._xp import resolve
from .options import (
    Estimate,
    Estimator,
    Smoothing,
    check_seed,
    renamed,
    resources_spec,
    sample_count,
    smoothing_spec,
)

__all__ = ["nonlocal_grad"]


def nonlocal_grad(
    f: Callable[[Array], Array] | None = None,
    theta: Array | None = None,
    *,
    sigma: float | None = None,
    samples: int | Array | None = None,
    seed: Any = None,
    smoothing: Smoothing | None = None,
    form: str = "gaussian",
    radial: str = "gaussian",
    scale: str = "gradient-consistent",
    sampling: str = "iid",
    memory_budget: int | None = None,
    samples_per_call: int | None = None,
    resources: Any = None,
    return_stderr: bool = False,
    rtol: float | None = None,
    atol: float | None = None,
    max_samples: int | None = None,
    progress: Callable[[str], None] | None = None,
    fun: Callable[[Array], Array] | None = None,
    rng: Any = None,
    batch_size: int | None = None,
) -> Array | Estimate:
    """Monte Carlo nonlocal gradient G fun(θ) of any function of parameters.

    Gaussian form: G f = E[(f(θ+h) − f(θ)) h]/σ², h ~ N(0, σ²I), which is exactly ∇ of f
    smoothed by N(0, σ²I) (Stein's identity); it exists for non-differentiable and noisy f.
    Paper form: G f = c E[(f(θ+h) − f(θ)) h/‖h‖²] with a radial density (docs:
    Mathematics, 'The nonlocal gradient').

    Parameters
    ----------
    f : callable
        Maps a batch of parameter vectors (B, P) to outputs (B, ...) in the same library.
        (Called ``fun`` before 0.3.)
    theta : array, shape (P,)
    sigma, samples, seed, smoothing, form, radial, scale, sampling, samples_per_call
        As in :func:`nntk_array.nntk`. ``samples`` may be explicit (M, P) unit-scale rows.
    memory_budget, resources
        As in :func:`nntk_array.nntk` (``route`` does not apply). Memory: the (F, P) running
        sums (three of them with ``return_stderr``), one drawn block of directions and one
        chunk of evaluations; nothing grows with M. A chunk is sized by its perturbed
        parameters and outputs, since what ``f`` allocates inside is unknown here: where
        ``f``'s own temporaries per parameter set are large (a wide forward pass), bound
        them with ``samples_per_call``.
    return_stderr : bool, default False
        Also return the entrywise Monte Carlo standard error (batch means over independent
        samples, or over 20 groups for structured sampling).
    rtol, atol, max_samples, progress
        A requested precision, as in :func:`nntk_array.nntk`: M = ``samples`` (default
        256), 2M, 4M, … up to ``max_samples`` (default 65536) from the same seed until
        ‖se‖/‖ĝ‖ <= ``rtol`` (Frobenius norms over all entries) or max(se) <= ``atol``;
        the result equals a plain call with ``samples=result.samples``,
        ``return_stderr=True`` and the same seed, and is an :class:`Estimate`.

    fun, rng, batch_size
        Deprecated names of ``f``, ``seed`` and ``samples_per_call``; they still work and
        warn.

    Returns
    -------
    array or Estimate
        The gradient, shape (..., P): one row per output entry of ``f`` (shape (P,) for a
        scalar ``f``), in ``theta``'s dtype, namespace and device. With ``return_stderr=True``
        an :class:`Estimate` (``.value``, ``.stderr``, ``.samples``) that unpacks as
        ``grad, stderr`` (also whenever ``rtol`` or ``atol`` is given).

    Raises
    ------
    TypeError
        Non-floating or mixed-library inputs, a non-callable ``f``, a bad ``seed``, a
        non-integer ``samples``, ``samples`` omitted without ``rtol``/``atol`` or the
        target options given without them.
    ValueError
        ``theta`` not 1-D, ``f`` output not (B, ...), NaN/inf, ``sigma <= 0``,
        ``samples < 1`` (or < 2 with ``return_stderr``), unknown options, bad
        ``rtol``/``atol``/``max_samples``, a target with explicit ``samples`` rows.

    Warns
    -----
    RuntimeWarning
        ``max_samples`` reached short of ``rtol``/``atol``.
    DeprecationWarning
        For the old keyword names ``fun`` (now ``f``), ``rng`` (now ``seed``) and
        ``batch_size`` (now ``samples_per_call``).

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
    f = renamed("f", "fun", f, fun)
    seed = renamed("seed", "rng", seed, rng)
    samples_per_call = renamed("samples_per_call", "batch_size", samples_per_call, batch_size)
    if theta is None:
        raise TypeError("nonlocal_grad() missing the required argument `theta`")
    count = None if samples is None else sample_count(samples)
    samples_arr = None if count is not None else samples
    xp, (theta, samples_arr) = resolve(theta=theta, samples=samples_arr)
    if not callable(f):
        raise TypeError(f"`f` must be a callable f(thetas); got {type(f).__name__}")
    if not isinstance(return_stderr, bool):
        raise TypeError(f"`return_stderr` must be a bool; got {type(return_stderr).__name__}")
    check_ndim("theta", theta, (1,), "(P,)")
    p = theta.shape[0]
    check_finite(xp, theta=theta, samples=samples_arr)
    smooth = smoothing_spec(smoothing, sigma, form, radial, scale)
    if smooth.perturbation != "gaussian":
        raise ValueError("nonlocal_grad takes perturbation='gaussian' only (lowrank: nk.nntk)")
    sampler = Estimator(sampling=sampling)  # validates `sampling`
    res = resources_spec(resources, memory_budget, samples_per_call, "auto")
    seed = check_seed(seed)
    goal = precision.target(
        rtol=rtol,
        atol=atol,
        max_samples=max_samples,
        error="relative",
        progress=progress,
        samples=count,
        explicit=samples_arr is not None,
    )
    if samples_arr is not None:
        check_explicit(samples_arr, p, sampler.sampling, seed)
    m = count if samples_arr is None else samples_arr.shape[0]
    if return_stderr and m is not None and m < 2:
        raise ValueError(f"return_stderr needs samples >= 2; got {m}")
    probe = f(theta[None, :])
    if not hasattr(probe, "shape") or probe.ndim < 1 or probe.shape[0] != 1:
        raise ValueError(
            f"`f(thetas)` must return shape (B, ...); for thetas of shape (1, P) it returned "
            f"{getattr(probe, 'shape', type(probe))}"
        )
    resolve(theta=theta, output=probe)
    out_shape = tuple(probe.shape[1:])
    n_out = math.prod(out_shape)
    smoothing_form = make_form(smooth, sampler, p)
    stderr = return_stderr or goal is not None

    def evaluate(thetas: Array) -> Array:
        return xp.reshape(f(thetas), (thetas.shape[0], n_out))

    def estimate(m: int, rows: Array | None) -> Array | Estimate:
        plan = grad_plan(
            budget=res.memory_budget or DEFAULT_BUDGET,
            samples_per_call=res.samples_per_call,
            m=m,
            p=p,
            n_out=n_out,
            itemsize=4 if theta.dtype == xp.float32 else 8,
            copies=smoothing_form.copies,
            stderr=stderr,
        )
        dirs = make_directions(
            xp,
            m if rows is None else rows,
            sampling,
            seed,
            num_params=p,
            dtype=theta.dtype,
            device=device(theta),
            group_size=plan.group_size,
            cache_bytes=0,  # each row is used once
        )
        sums = _GradientSums(xp, dirs.group_size, dirs.num_rows, stderr)
        for c in chunks(
            shifting(evaluate),
            theta,
            dirs,
            smoothing_form,
            chunk=plan.chunk,
            draw=plan.draw,
            acc=theta.dtype,
        ):
            assert c.h is not None  # kept by default
            sums.add(c.start, c.stop, c.d * (c.w / c.t)[:, None], c.h)
        grad = sums.total / m
        shape = (*out_shape, p)
        if not stderr:
            return xp.reshape(grad, shape)
        se = sums.stderr(grad, dirs.groups)
        return Estimate(xp.reshape(grad, shape), xp.reshape(se, shape), samples=m)

    if goal is None:
        assert m is not None
        return estimate(m, samples_arr)

    def refined(m: int) -> Estimate:
        est = estimate(m, None)
        assert isinstance(est, Estimate)
        return est

    return precision.refine(refined, goal, "nonlocal_grad")


class _GradientSums:
    """Running sums of the gradient terms Y_m = rows_m h_m, and what the batch-means
    standard error needs: per sample (independent rows) or per group of dependent rows."""

    def __init__(self, xp: Any, group_size: int, m: int, stderr: bool) -> None:
        self.xp, self.gsize, self.m, self.want_se = xp, group_size, m, stderr
        self.total: Array = None
        self.sq: Array = None
        self.weighted: Array = None
        self.open: Array = None

    def add(self, start: int, stop: int, rows: Array, h: Array) -> None:
        """Add samples ``start:stop`` with weighted differences ``rows`` (B, F) and ``h``."""
        xp = self.xp
        h = xp.astype(h, rows.dtype, copy=False)
        part = xp.matmul(xp.permute_dims(rows, (1, 0)), h)  # (F, P)
        self.total = part if self.total is None else self.total + part
        if not self.want_se:
            return
        if self.gsize == 1:  # per-sample terms
            sq = xp.matmul(xp.permute_dims(rows * rows, (1, 0)), h * h)
            self.sq = sq if self.sq is None else self.sq + sq
            self.weighted = self.total
            return
        g = self.gsize
        for g0 in range(start - start % g, stop, g):  # groups straddle chunks
            lo, hi = max(start, g0), min(stop, g0 + g)
            piece = xp.matmul(
                xp.permute_dims(rows[lo - start : hi - start, :], (1, 0)),
                h[lo - start : hi - start, :],
            )
            self.open = piece if lo == g0 else self.open + piece
            if hi == min(g0 + g, self.m):  # group complete
                acc_g, n_g = self.open, hi - g0
                sq = acc_g * acc_g
                self.sq = sq if self.sq is None else self.sq + sq
                wt = n_g * acc_g
                self.weighted = wt if self.weighted is None else self.weighted + wt

    def stderr(self, grad: Array, groups: list[tuple[int, int]]) -> Array:
        """Var of the weighted mean of L independent group means Y_g = acc_g / n_g, with
        ĝ = Σ_g n_g Y_g / M: L/(L-1) Σ_g (n_g/M)² (Y_g − ĝ)², expanded in running sums."""
        xp = self.xp
        sum_n2 = float(sum((e - s) ** 2 for s, e in groups))
        var = (self.sq - 2.0 * grad * self.weighted + grad * grad * sum_n2) / self.m**2
        var = xp.maximum(var * (len(groups) / (len(groups) - 1)), 0.0)
        return xp.sqrt(var)
