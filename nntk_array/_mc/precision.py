"""A requested precision: rerun a Monte Carlo estimate with M, 2M, 4M, … perturbations until
its estimated error meets a target (``rtol``/``atol`` of :func:`~nntk_array.nntk` and
:func:`~nntk_array.nonlocal_grad`).

Each round is the ordinary single-M estimate with standard errors, recomputed from the same
seed, so the result is exactly what a plain call with ``samples=result.samples`` and
``return_stderr=True`` returns, and the rounds before the last cost at most as much as the
last one.

Error measures (``se`` the entrywise standard errors, ``K̂`` the estimate, norms Frobenius):

``"relative"``
    ‖se‖ / ‖K̂‖: the root-mean-square relative error of the whole estimate.
``"centred"`` (kernels only)
    ‖se‖ / ‖C K̂ C‖, C = I − 11ᵀ/N the centring matrix (of each side's inputs). Since C is
    an orthogonal projection, E‖C(K̂ − K)C‖² ≤ E‖K̂ − K‖² = ‖se‖², so this bounds the RMS
    of ‖C(K̂ − K)C‖ / ‖C K̂ C‖ from above: conservative, and meaningful when the kernel has
    a large constant part that centring (as in kernel ridge with an intercept, or CKA)
    removes.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from array_api_compat import array_namespace

from .._typing import Array
from .._validate import check_choice, check_positive_float, check_positive_int
from ..options import Estimate

__all__ = ["DEFAULT_MAX_SAMPLES", "DEFAULT_START", "ERRORS", "Target", "refine", "target"]

ERRORS = ("relative", "centred")
DEFAULT_START = 256
DEFAULT_MAX_SAMPLES = 65536


@dataclass(frozen=True)
class Target:
    """A validated precision request: stop once ``error <= rtol`` or ``max(se) <= atol``."""

    rtol: float | None
    atol: float | None
    start: int
    max_samples: int
    error: str
    progress: Callable[[str], None] | None


def target(
    *,
    rtol: object,
    atol: object,
    max_samples: object,
    error: object,
    progress: object,
    samples: int | None,
    explicit: bool,
    errors: tuple[str, ...] = ERRORS,
) -> Target | None:
    """The :class:`Target` of a call, or ``None`` when neither ``rtol`` nor ``atol`` is given.

    ``samples`` is the count given (``None`` when omitted or explicit rows, ``explicit``
    then telling which). Everything is checked before any work starts.

    Raises
    ------
    TypeError
        Non-real ``rtol``/``atol``, a non-integer ``max_samples``, a non-callable
        ``progress``, ``samples`` omitted without a target, or target options
        (``max_samples``, ``error``, ``progress``) given without ``rtol``/``atol``.
    ValueError
        ``rtol``/``atol`` not finite and > 0, ``max_samples`` < 1 or below ``samples``, an
        unknown ``error``, explicit ``samples`` rows together with a target.
    """
    if rtol is None and atol is None:
        given = [
            name
            for name, value, default in (
                ("max_samples", max_samples, None),
                ("error", error, "relative"),
                ("progress", progress, None),
            )
            if value != default
        ]
        if given:
            raise TypeError(f"{', '.join(map(repr, given))} need `rtol` or `atol`")
        if samples is None and not explicit:
            raise TypeError("`samples` is required unless `rtol` or `atol` is given")
        return None
    r = None if rtol is None else check_positive_float("rtol", rtol)
    a = None if atol is None else check_positive_float("atol", atol)
    if explicit:
        raise ValueError(
            "`rtol`/`atol` draw their own perturbations: give `samples` as the first count M "
            "(an integer) or leave it out, not explicit rows"
        )
    measure_name = check_choice("error", error, errors)
    if progress is not None and not callable(progress):
        raise TypeError(
            f"`progress` must be a callable taking a str; got {type(progress).__name__}"
        )
    start = DEFAULT_START if samples is None else samples
    cap = (
        DEFAULT_MAX_SAMPLES
        if max_samples is None
        else check_positive_int("max_samples", max_samples)
    )
    if start < 2:
        raise ValueError(f"`rtol`/`atol` need samples >= 2 (for standard errors); got {start}")
    if cap < start:
        raise ValueError(f"`max_samples` ({cap}) must be >= the first `samples` ({start})")
    return Target(r, a, start, cap, measure_name, cast("Callable[[str], None] | None", progress))


def measure(est: Estimate, error: str) -> float:
    """The error of ``est`` under the measure ``error`` (see the module docstring)."""
    value, se = est.value, est.stderr
    num = math.sqrt(float(_sum_sq(se)))
    if error == "centred":
        value = _centre(value)
    den = math.sqrt(float(_sum_sq(value)))
    if den > 0.0:
        return num / den
    return 0.0 if num == 0.0 else math.inf


def refine(estimate: Callable[[int], Estimate], goal: Target, what: str) -> Estimate:
    """Run ``estimate(M)`` for M = start, 2·start, 4·start, … (the last capped at
    ``max_samples``) until ``goal`` is met; warn with the achieved error if it never is.

    ``what`` names the quantity in progress messages and the warning.
    """
    m, t0 = goal.start, time.perf_counter()
    while True:
        est = estimate(m)
        err = measure(est, goal.error)
        worst = float(_max(est.stderr))
        met = (goal.rtol is not None and err <= goal.rtol) or (
            goal.atol is not None and worst <= goal.atol
        )
        if goal.progress is not None:
            goal.progress(
                f"{what}: samples={m}, {goal.error} error {err:.3g}, max stderr {worst:.3g}"
                f" ({'target met' if met else 'not met'}, {time.perf_counter() - t0:.1f} s)"
            )
        if met:
            return est
        if m >= goal.max_samples:
            asked = " or ".join(
                f"{name} {value:g}"
                for name, value in (("rtol", goal.rtol), ("atol", goal.atol))
                if value is not None
            )
            warnings.warn(
                f"{what}: max_samples={goal.max_samples} reached with {goal.error} error "
                f"{err:.3g} and max stderr {worst:.3g}, short of {asked}; returning that "
                f"estimate (raise max_samples or loosen the target)",
                RuntimeWarning,
                stacklevel=3,
            )
            return est
        m = min(2 * m, goal.max_samples)


def _sum_sq(x: Array) -> Array:
    xp = array_namespace(x)
    return xp.sum(x * x)


def _max(x: Array) -> Array:
    return array_namespace(x).max(x)


def _centre(k: Array) -> Array:
    """C₁ K C₂ over the first two axes (the inputs), for (N1, N2) and (N1, N2, O, O)."""
    xp = array_namespace(k)
    k = k - xp.mean(k, axis=0, keepdims=True)
    return k - xp.mean(k, axis=1, keepdims=True)
