"""Infinite-width NTK and NNGP of the built-in MLP, and their Gaussian-smoothed versions.

Closed forms in pure array-API code (docs: Mathematics, 'Infinite width'), with
neural-tangents' conventions: the network
``nk.MLP(d, (m,) * L, 1, activation, parameterization="ntk")`` with standard deviations
``weight_std`` (σ_w) and ``bias_std`` (σ_b) in every layer, i.e. ``stax.serial(Dense(m, σ_w,
σ_b), φ, ..., Dense(1, σ_w, σ_b))``. The recursion over a dense layer is
nngp' = σ_w² nngp + σ_b², ntk' = σ_w² ntk + nngp'; over the activation
nngp' = κ_φ(Σ), ntk' = κ_φ'(Σ) ntk, with κ_ψ(Σ) = E ψ(u) ψ(u'), (u, u') ~ N(0, Σ):

* ReLU (arc-cosine kernels of Cho & Saul): κ = √(Σ₁₁Σ₂₂)(sin θ + (π − θ) cos θ)/(2π),
  κ' = (π − θ)/(2π), cos θ = Σ₁₂/√(Σ₁₁Σ₂₂);
* erf (Williams): κ = (2/π) arcsin(2Σ₁₂/√((1 + 2Σ₁₁)(1 + 2Σ₂₂))),
  κ' = (4/π)/√((1 + 2Σ₁₁)(1 + 2Σ₂₂) − 4Σ₁₂²);
* sign: κ = 1 − 2θ/π and, as in neural-tangents, κ' = 0 (the a.e. derivative).

``sigma=σ > 0`` gives the Gaussian-smoothed kernel (the fixed-kernel NNTK, Stein form) of
a one-hidden-layer network: every parameter perturbed by N(0, σ²) adds independent noise of
variance σ²Σ(x, x) to each pre-activation, so κ and κ' are taken at
Σ̃ = [[(1 + σ²)Σ₁₁, Σ₁₂], [Σ₁₂, (1 + σ²)Σ₂₂]] while the factor Σ₁₂ in front of κ' is not
inflated; for sign, κ' is the distributional 2/(π√(Σ̃₁₁Σ̃₂₂ − Σ₁₂²)), finite for σ > 0.
"""

from __future__ import annotations

import math

from ._typing import Array, Namespace
from ._validate import check_choice, check_finite, check_ndim, check_positive_float
from ._xp import resolve
from .options import renamed

__all__ = ["ACTIVATIONS", "nngp", "ntk"]

ACTIVATIONS = ("relu", "erf", "sign")


def ntk(
    x1: Array,
    x2: Array | None = None,
    *,
    activation: str = "relu",
    depth: int = 1,
    weight_std: float = 1.0,
    bias_std: float = 1.0,
    sigma: float = 0.0,
    smoothing: float | None = None,
) -> Array:
    """Infinite-width NTK Θ(x1, x2) of an MLP with ``depth`` hidden layers and one output.

    Parameters
    ----------
    x1 : array, shape (N1, d)
    x2 : array, shape (N2, d), optional
        Defaults to ``x1``.
    activation : {"relu", "erf", "sign"}
    depth : int, default 1
        Number of hidden layers L >= 1.
    weight_std, bias_std : float, default 1.0
        σ_w > 0 and σ_b >= 0 of every layer (NTK parameterization).
    sigma : float, default 0.0
        σ of the Gaussian parameter smoothing (one hidden layer only), as in
        :func:`nntk_array.nntk`: the infinite-width fixed-kernel NNTK in Stein form.
    smoothing : float, optional
        The name of ``sigma`` before 0.3 (deprecated).

    Returns
    -------
    array, shape (N1, N2), in the inputs' namespace, dtype and device

    Raises
    ------
    TypeError
        Non-floating or mixed-library inputs.
    ValueError
        Shapes, NaN/inf, an unknown activation, ``depth < 1``, bad standard deviations,
        ``sigma > 0`` with ``depth > 1``.

    Warns
    -----
    DeprecationWarning
        For ``smoothing=`` (now ``sigma=``).

    Examples
    --------
    >>> import numpy as np
    >>> import nntk_array as nk
    >>> x = np.array([[-1.0], [-1 / 3], [1 / 3], [1.0]])
    >>> np.round(nk.analytic.ntk(x, activation="sign", sigma=0.5)[0], 4)  # docs: Mathematics
    array([2.4392, 2.1597, 1.4768, 1.    ])
    """
    sigma = renamed("sigma", "smoothing", sigma, smoothing, default=0.0)
    return _kernel(x1, x2, activation, depth, weight_std, bias_std, sigma, want_ntk=True)


def nngp(
    x1: Array,
    x2: Array | None = None,
    *,
    activation: str = "relu",
    depth: int = 1,
    weight_std: float = 1.0,
    bias_std: float = 1.0,
) -> Array:
    """Infinite-width NNGP kernel (output covariance at initialization); see :func:`ntk`.

    Parameters
    ----------
    x1 : array, shape (N1, d)
    x2 : array, shape (N2, d), optional
        Defaults to ``x1``.
    activation : {"relu", "erf", "sign"}
    depth : int, default 1
        Number of hidden layers L >= 1.
    weight_std, bias_std : float, default 1.0
        σ_w > 0 and σ_b >= 0 of every layer (NTK parameterization).

    Returns
    -------
    array, shape (N1, N2), in the inputs' namespace, dtype and device

    Raises
    ------
    TypeError
        Non-floating or mixed-library inputs.
    ValueError
        Shapes, NaN/inf, an unknown activation, ``depth < 1``, bad standard deviations.

    Examples
    --------
    >>> import numpy as np
    >>> import nntk_array as nk
    >>> x = np.array([[1.0], [-1.0]])
    >>> np.round(nk.analytic.nngp(x, activation="sign"), 4)
    array([[2., 1.],
           [1., 2.]])
    """
    return _kernel(x1, x2, activation, depth, weight_std, bias_std, 0.0, want_ntk=False)


def _kernel(
    x1: Array,
    x2: Array | None,
    activation: str,
    depth: int,
    weight_std: float,
    bias_std: float,
    sigma: float,
    *,
    want_ntk: bool,
) -> Array:
    xp, (x1, x2) = resolve(x1=x1, x2=x2)
    check_ndim("x1", x1, (2,), "(N1, d)")
    if x2 is not None:
        check_ndim("x2", x2, (2,), f"(N2, {x1.shape[1]})")
        if x2.shape[1] != x1.shape[1]:
            raise ValueError(f"`x2` must have shape (N2, {x1.shape[1]}); got {x2.shape}")
    check_finite(xp, x1=x1, x2=x2)
    check_choice("activation", activation, ACTIVATIONS)
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"`depth` must be an int >= 1; got {depth!r}")
    sw2 = check_positive_float("weight_std", weight_std) ** 2
    if isinstance(bias_std, bool) or not isinstance(bias_std, (int, float)) or not bias_std >= 0:
        raise ValueError(f"`bias_std` must be >= 0; got {bias_std!r}")
    sb2 = float(bias_std) ** 2
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or sigma < 0:
        raise ValueError(f"`sigma` must be >= 0; got {sigma!r}")
    if sigma > 0 and depth > 1:
        raise ValueError("`sigma` > 0 has a closed form for one hidden layer only (depth=1)")
    x2_ = x1 if x2 is None else x2
    d = x1.shape[1]
    # first dense layer: covariances of the pre-activations
    s12 = sw2 * xp.matmul(x1, xp.permute_dims(x2_, (1, 0))) / d + sb2
    s11 = sw2 * xp.sum(x1 * x1, axis=1) / d + sb2
    s22 = sw2 * xp.sum(x2_ * x2_, axis=1) / d + sb2
    theta = s12
    infl = 1.0 + float(sigma) ** 2
    for _ in range(depth):
        k, kd = _dual(xp, activation, s11[:, None] * infl, s12, s22[None, :] * infl, sigma > 0)
        theta = kd * theta
        s12 = sw2 * k + sb2
        theta = sw2 * theta + s12
        if depth > 1:  # diagonals for the next layer
            s11 = sw2 * _dual_diag(xp, activation, s11) + sb2
            s22 = sw2 * _dual_diag(xp, activation, s22) + sb2
    return theta if want_ntk else s12


def _dual(
    xp: Namespace, activation: str, s11: Array, s12: Array, s22: Array, smoothed: bool
) -> tuple[Array, Array]:
    """(κ_φ, κ_φ') for covariance blocks broadcast to (N1, N2)."""
    norm = xp.sqrt(s11 * s22)
    if activation == "erf":
        a = (1.0 + 2.0 * s11) * (1.0 + 2.0 * s22)
        k = (2.0 / math.pi) * xp.asin(xp.clip(2.0 * s12 / xp.sqrt(a), -1.0, 1.0))
        return k, (4.0 / math.pi) / xp.sqrt(a - 4.0 * s12 * s12)
    cos = xp.clip(s12 / norm, -1.0, 1.0)
    angle = xp.acos(cos)
    if activation == "relu":
        k = norm * (xp.sqrt(1.0 - cos * cos) + (math.pi - angle) * cos) / (2.0 * math.pi)
        return k, (math.pi - angle) / (2.0 * math.pi)
    k = 1.0 - 2.0 * angle / math.pi
    if not smoothed:
        return k, xp.zeros_like(k)
    return k, (2.0 / math.pi) / xp.sqrt(s11 * s22 - s12 * s12)


def _dual_diag(xp: Namespace, activation: str, s: Array) -> Array:
    """κ_φ(Σ) on the diagonal (x = x')."""
    if activation == "relu":
        return s / 2.0
    if activation == "erf":
        return (2.0 / math.pi) * xp.asin(2.0 * s / (1.0 + 2.0 * s))
    return xp.ones_like(s)
