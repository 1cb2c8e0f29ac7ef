"""Error and alignment metrics of the kernel study.

(docs: Mathematics, 'Prediction' and 'The study protocol'.)
"""

from __future__ import annotations

from array_api_compat import device

from ._typing import Array
from ._validate import check_finite, check_ndim
from ._xp import resolve

__all__ = ["band_error", "kernel_alignment"]


def kernel_alignment(kernel: Array, y: Array, *, centered: bool = True) -> Array:
    """Kernel-target alignment yᵀKy / (‖K‖_F ‖y‖²), centred (HKH, H = I − 11ᵀ/N) by default.

    Cristianini et al. (2002); the centred version is Cortes, Mohri & Rostamizadeh (2012).
    Invariant under K -> cK for c > 0; 1 for K = yyᵀ (centred y).

    Parameters
    ----------
    kernel : array, shape (N, N)
    y : array, shape (N,)
    centered : bool, default True

    Returns
    -------
    array, shape ()
        In [-1, 1]; 0 when K or y is zero (after centring).

    Raises
    ------
    TypeError
        Non-floating or mixed-library inputs.
    ValueError
        ``kernel`` not (N, N) or ``y`` not (N,), mixed devices, NaN/inf.

    Examples
    --------
    >>> import numpy as np
    >>> import nntk_array as nk
    >>> y = np.array([1.0, -1.0, 1.0, -1.0])
    >>> float(nk.kernel_alignment(np.outer(y, y), y))
    1.0
    """
    xp, (kernel, y) = resolve(kernel=kernel, y=y)
    check_ndim("kernel", kernel, (2,), "(N, N)")
    n = kernel.shape[0]
    check_ndim("y", y, (1,), f"({n},)")
    if kernel.shape[1] != n or y.shape[0] != n:
        raise ValueError(
            f"`kernel` must be (N, N) and `y` (N,); got {tuple(kernel.shape)}, {tuple(y.shape)}"
        )
    check_finite(xp, kernel=kernel, y=y)
    if centered:
        kernel = kernel - xp.mean(kernel, axis=0, keepdims=True)
        kernel = kernel - xp.mean(kernel, axis=1, keepdims=True)
        y = y - xp.mean(y)
    norm = xp.sqrt(xp.sum(kernel * kernel)) * xp.sum(y * y)
    value = xp.sum(y * xp.matmul(kernel, y))
    return xp.where(norm > 0, value / xp.where(norm > 0, norm, 1.0), 0.0)


def band_error(x: Array, error: Array, points: Array, *, width: float) -> Array:
    """Largest absolute error over inputs within ``width`` of any of ``points`` (jumps or kinks).

    Parameters
    ----------
    x : array, shape (N,)
        1-D inputs.
    error : array, shape (N,)
        Prediction minus target at ``x``.
    points : array, shape (K,)
        Locations of the non-smooth points.
    width : float
        Half-width of the band.

    Returns
    -------
    array, shape ()
        0 if no input lies in the band.

    Raises
    ------
    TypeError
        Non-floating or mixed-library inputs.
    ValueError
        ``x`` or ``points`` not 1-D, ``error`` not shaped like ``x``, mixed devices, NaN/inf.

    Examples
    --------
    >>> import numpy as np
    >>> import nntk_array as nk
    >>> x = np.linspace(-1, 1, 5)
    >>> float(nk.band_error(x, np.array([0.1, 0.2, 0.9, 0.3, 0.1]), np.array([0.0]), width=0.6))
    0.9
    """
    xp, (x, error, points) = resolve(x=x, error=error, points=points)
    check_ndim("x", x, (1,), "(N,)")
    check_ndim("points", points, (1,), "(K,)")
    if tuple(error.shape) != tuple(x.shape):
        raise ValueError(f"`error` must have the shape of `x`; got {tuple(error.shape)}")
    check_finite(xp, x=x, error=error, points=points)
    near = xp.any(xp.abs(x[:, None] - points[None, :]) <= width, axis=1)
    zero = xp.zeros((), dtype=error.dtype, device=device(error))
    return xp.max(xp.where(near, xp.abs(error), zero))
