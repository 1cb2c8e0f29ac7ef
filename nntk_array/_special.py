"""A portable error function in standard array-API operations, accurate to float64 rounding.

For |x| < 3: erf(x) = (2x/√π) e^{-x²} Σ_n (2x²)^n / (2n+1)!!, a series of positive terms
(no cancellation), 60 terms in Horner form. For |x| >= 3: erfc(x) from Laplace's continued
fraction evaluated bottom-up to depth 50. Both branches are evaluated on clamped arguments so
neither produces inf or NaN where it is not selected.
"""

from __future__ import annotations

import math

from array_api_compat import device

from ._typing import Array, Namespace

__all__ = ["erf", "ndtri"]

_SPLIT = 3.0
_SERIES_TERMS = 60
_CF_DEPTH = 50
_CLAMP = 10.0  # erfc(10) < 1e-44: erf is 1 in every float format beyond it
# c_n = 1 / (2n+1)!!, highest order first for Horner's rule.
_SERIES = [1.0 / math.prod(range(1, 2 * n + 2, 2)) for n in range(_SERIES_TERMS)][::-1]


def erf(xp: Namespace, x: Array) -> Array:
    """Elementwise error function of a real floating array, in its dtype and on its device."""
    ax = xp.abs(x)
    small = xp.minimum(ax, _SPLIT)
    y = 2.0 * small * small
    series = xp.full(x.shape, _SERIES[0], dtype=x.dtype, device=device(x))
    for c in _SERIES[1:]:
        series = series * y + c
    erf_small = (2.0 / math.sqrt(math.pi)) * small * xp.exp(-small * small) * series

    large = xp.minimum(xp.maximum(ax, _SPLIT), _CLAMP)
    t = large
    for k in range(_CF_DEPTH, 0, -1):
        t = large + (0.5 * k) / t
    erf_large = 1.0 - xp.exp(-large * large) / (math.sqrt(math.pi) * t)

    return xp.sign(x) * xp.where(ax < _SPLIT, erf_small, erf_large)


# Acklam's rational approximation of the normal quantile (relative error < 1.2e-9).
_NDTRI_A = (
    -39.69683028665376,
    220.9460984245205,
    -275.9285104469687,
    138.3577518672690,
    -30.66479806614716,
    2.506628277459239,
)
_NDTRI_B = (
    -54.47609879822406,
    161.5858368580409,
    -155.6989798598866,
    66.80131188771972,
    -13.28068155288572,
    1.0,
)
_NDTRI_C = (
    -0.007784894002430293,
    -0.3223964580411365,
    -2.400758277161838,
    -2.549732539343734,
    4.374664141464968,
    2.938163982698783,
)
_NDTRI_D = (0.007784695709041462, 0.3224671290700398, 2.445134137142996, 3.754408661907416, 1.0)
_NDTRI_SPLIT = 0.02425


def _horner(coefs: tuple[float, ...], x: Array) -> Array:
    out = x * coefs[0] + coefs[1]
    for c in coefs[2:]:
        out = out * x + c
    return out


def ndtri(xp: Namespace, p: Array) -> Array:
    """Standard normal quantile Φ⁻¹(p) for p in (0, 1), to about 1e-9 relative accuracy.

    Used to map (quasi-)uniform points to Gaussian ones, where 1e-9 is far below the Monte
    Carlo error. Arguments are clamped to [1e-300, 1 - 2**-53] style bounds of their dtype by
    the caller; every branch is evaluated on a safe argument so none yields NaN.
    """
    q = p - 0.5
    r = q * q
    central = q * _horner(_NDTRI_A, r) / _horner(_NDTRI_B, r)
    tail_p = xp.minimum(p, 1.0 - p)  # in (0, 0.5]
    t = xp.sqrt(-2.0 * xp.log(tail_p))
    tail = _horner(_NDTRI_C, t) / _horner(_NDTRI_D, t)
    tail = xp.where(p < 0.5, tail, -tail)
    return xp.where(tail_p < _NDTRI_SPLIT, tail, central)
