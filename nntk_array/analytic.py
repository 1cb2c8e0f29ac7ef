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

The angle is θ = 2 atan2(√(P − Σ₁₂), √(P + Σ₁₂)), P = √(Σ₁₁Σ₂₂), with both gaps P ∓ Σ₁₂
computed from the inputs and carried through the layers without cancellation: arccos of a
rounded correlation is off by √(2ε) near ρ = 1, and sign's recursion takes a square root of
that at every layer. Identical inputs get the exact diagonal (σ_w² + σ_b² for sign) at every
depth, and nearly identical ones the exact kernel's values to float rounding.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

from ._typing import Array, Namespace
from ._validate import (
    check_choice,
    check_finite,
    check_ndim,
    check_positive_float,
    check_positive_int,
)
from ._xp import resolve
from .backends.special import erf
from .backends.tracing import is_concrete
from .options import renamed

__all__ = ["ACTIVATIONS", "finite_width_nntk", "nngp", "ntk"]

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


def finite_width_nntk(
    model: Any,
    theta: Array,
    x1: Array,
    x2: Array | None = None,
    *,
    sigma: float,
    rank: int | None = None,
) -> Array:
    """Exact Gaussian NNTK ∇f_σ(x1)·∇f_σ(x2) of a one-hidden-layer MLP at its finite width.

    Perturbing every parameter by N(0, σ²) shifts unit j's pre-activation z_j(x) by
    independent noise of scale s(x) = σ √(c_w² ‖x‖² + c_b²) and averages the readout's
    perturbation out, so f_σ is the same network with φ replaced by φ̃_s(μ) = E φ(μ + s g)
    and (docs: Mathematics, 'One hidden layer, finite width')

        Θ_σ(x, x') = c_v² Σ_j [φ̃_s(z_j) φ̃_{s'}(z'_j) + V̄_j² φ̃'_s(z_j) φ̃'_{s'}(z'_j)
                     (c_w² x·x' + c_b²)] + c_o²,

    with V̄_j² the mean over outputs of the squared readout weights (the kernel averaged over
    outputs, as :func:`nntk_array.nntk`'s default). It is what ``nk.nntk(model, theta, x1,
    x2, sigma=sigma)`` estimates, without Monte Carlo noise.

    With ``rank=r`` it is the exact target K_r of ``nk.nntk(..., perturbation="lowrank",
    rank=r)`` instead (docs: Mathematics, 'Low-rank perturbations'). The low-rank noise on the
    hidden layer, c_w xᵀE with E = (σ/√r) Σ_k a_k b_kᵀ, is Gaussian given the a_k, with one
    variance σ²c_w²‖x‖²c shared by all units, c = χ²_r/r; so φ̃_s is averaged over c (with
    s(c)² = σ²(c_w²‖x‖²c + c_b²)) in the features and the bias term, and over the size-biased
    c (c ~ χ²_{r+2}/r) in the weight term:

        K_r(x, x') = c_v² Σ_j [F̄_j F̄'_j + V̄_j² (c_w² x·x' D̄ᵂ_j D̄ᵂ'_j + c_b² D̄_j D̄'_j)] + c_o²,

    F̄ = E_c φ̃_{s(c)}(z_j), D̄ = E_c φ̃'_{s(c)}(z_j), D̄ᵂ = E_c[c φ̃'_{s(c)}(z_j)], each by
    generalized Gauss–Laguerre quadrature over rc/2 ~ Gamma(r/2) (200 nodes). The readout's
    low-rank perturbation changes nothing (f is linear in it). Its distance to the
    Gaussian kernel (``rank=None``) falls like 1/r.

    Parameters
    ----------
    model : MLP
        One hidden layer, activation ``"relu"``, ``"erf"`` or ``"sign"``, any
        parameterization, standard deviations, bias setting and number of outputs.
    theta : array, shape (P,)
    x1 : array, shape (N1, in_features)
    x2 : array, shape (N2, in_features), optional
        Defaults to ``x1``.
    sigma : float
        The smoothing scale σ > 0.
    rank : int, optional
        The rank r >= 1 of low-rank weight perturbations; ``None`` (default) for Gaussian
        ones.

    Returns
    -------
    array, shape (N1, N2), in ``theta``'s namespace, dtype and device

    Raises
    ------
    TypeError
        ``model`` is not an :class:`~nntk_array.MLP`; non-floating or mixed-library inputs;
        ``rank`` not an int.
    ValueError
        Not one hidden layer or another activation, ``sigma <= 0``, ``rank < 1``, shapes,
        NaN/inf.

    Examples
    --------
    >>> import numpy as np
    >>> import nntk_array as nk
    >>> model = nk.MLP(1, (64,), activation="sign")
    >>> theta, x = model.init(0, xp=np), np.linspace(-1.0, 1.0, 4)[:, None]
    >>> exact = nk.analytic.finite_width_nntk(model, theta, x, sigma=0.3)
    >>> est, se = nk.nntk(model, theta, x, sigma=0.3, samples=256, seed=0, return_stderr=True)
    >>> bool(np.all(np.abs(est - exact) < 5 * se))
    True

    The low-rank target, here at r = 1, and its estimate:

    >>> exact_r = nk.analytic.finite_width_nntk(model, theta, x, sigma=0.3, rank=1)
    >>> est, se = nk.nntk(
    ...     model, theta, x, sigma=0.3, samples=256, seed=0, perturbation="lowrank", rank=1,
    ...     return_stderr=True,
    ... )
    >>> bool(np.all(np.abs(est - exact_r) < 5 * se))
    True
    """
    from .models.mlp import MLP

    if not isinstance(model, MLP):
        raise TypeError(f"`model` must be an nk.MLP; got {type(model).__name__}")
    if len(model.hidden) != 1 or model.activation not in ACTIVATIONS:
        raise ValueError(
            f"`model` must have one hidden layer and activation in {ACTIVATIONS}; got {model!r}"
        )
    sigma = check_positive_float("sigma", sigma)
    if rank is not None:
        rank = check_positive_int("rank", rank)
    xp, (theta, x1, x2) = resolve(theta=theta, x1=x1, x2=x2)
    model.check_theta(theta, batched=False)
    model.check_x("x1", x1)
    if x2 is not None:
        model.check_x("x2", x2)
    check_finite(xp, theta=theta, x1=x1, x2=x2)
    last = model.last_layer
    assert last is not None
    d, m = last.fan_in, last.width
    w = xp.reshape(theta[: d * m], (d, m))
    b = 0.0 if last.b_start is None else theta[last.b_start : last.b_start + m]
    o = model.out_features
    v = xp.reshape(theta[last.v_start : last.v_start + m * o], (m, o))

    def parts(x: Array) -> tuple[Array, Array, Array]:
        z = last.c_w * xp.matmul(x, w) + last.c_b * b
        sq = last.c_w**2 * xp.sum(x * x, axis=1, keepdims=True)
        if rank is None:
            fn, deriv = smoothed_activation(xp, model.activation, sigma * xp.sqrt(sq + last.c_b**2))
            return fn(xp, z), deriv(xp, z), deriv(xp, z)
        return _scale_mixture(xp, model.activation, z, sq, last.c_b**2, sigma, rank)

    f1, g1, gw1 = parts(x1)
    f2, g2, gw2 = (f1, g1, gw1) if x2 is None else parts(x2)
    x2_ = x1 if x2 is None else x2
    v2 = xp.mean(v * v, axis=1)
    feats = xp.matmul(f1, xp.permute_dims(f2, (1, 0)))
    inner = last.c_w**2 * xp.matmul(x1, xp.permute_dims(x2_, (1, 0)))
    weights = xp.matmul(gw1 * v2, xp.permute_dims(gw2, (1, 0))) * inner
    biases = last.c_b**2 * xp.matmul(g1 * v2, xp.permute_dims(g2, (1, 0)))
    return last.c_v**2 * (feats + weights + biases) + last.c_o**2


#: quadrature nodes of the low-rank scale mixtures
_LAGUERRE_NODES = 200


def _gauss_laguerre(n: int, alpha: float) -> list[tuple[float, float]]:
    """Nodes and weights (summing to 1) of t ~ Gamma(alpha + 1): generalized Gauss–Laguerre
    by the Golub–Welsch eigenproblem (host NumPy, float64; they are constants)."""
    import numpy as np

    k = np.arange(n, dtype=np.float64)
    diag = 2.0 * k + alpha + 1.0
    off = np.sqrt(k[1:] * (k[1:] + alpha))
    jacobi = np.diag(diag) + np.diag(off, 1) + np.diag(off, -1)
    nodes, vectors = np.linalg.eigh(jacobi)
    weights = vectors[0, :] ** 2
    weights = weights / weights.sum()
    return [(float(t), float(q)) for t, q in zip(nodes, weights, strict=True) if q > 1e-300]


def _scale_mixture(
    xp: Namespace, activation: str, z: Array, sq: Array, bias_sq: float, sigma: float, rank: int
) -> tuple[Array, Array, Array]:
    """E_c φ̃_{s(c)}(z), E_c φ̃'_{s(c)}(z) and E_c[c φ̃'_{s(c)}(z)] for c = χ²_r/r and
    s(c)² = σ²(sq·c + bias_sq): c = 2t/r with t ~ Gamma(r/2), the last one size-biased
    (t ~ Gamma(r/2 + 1))."""

    def mixture(alpha: float, want_fn: bool) -> tuple[Array | None, Array]:
        fsum: Array | None = None
        dsum: Array | None = None
        for t, q in _gauss_laguerre(_LAGUERRE_NODES, alpha):
            s = sigma * xp.sqrt(sq * (2.0 * t / rank) + bias_sq)
            fn, deriv = smoothed_activation(xp, activation, s)
            d = q * deriv(xp, z)
            dsum = d if dsum is None else dsum + d
            if want_fn:
                f = q * fn(xp, z)
                fsum = f if fsum is None else fsum + f
        assert dsum is not None
        return fsum, dsum

    f, d = mixture(rank / 2.0 - 1.0, True)
    _, dw = mixture(rank / 2.0, False)
    assert f is not None
    return f, d, dw


Activation = Callable[[Namespace, Array], Array]


def smoothed_activation(xp: Namespace, name: str, s: Array) -> tuple[Activation, Activation]:
    """φ̃_s(μ) = E φ(μ + s g), g ~ N(0, 1), and its derivative in μ, for ``name`` in
    :data:`ACTIVATIONS` and noise scales ``s`` broadcasting against μ (docs: Mathematics,
    'One hidden layer, finite width'). A zero scale gives NaN: smoothing needs s > 0."""
    root2 = math.sqrt(2.0)

    def cdf(xp: Namespace, u: Array) -> Array:
        return 0.5 + 0.5 * erf(xp, u / root2)

    def pdf(xp: Namespace, u: Array) -> Array:
        return xp.exp(-0.5 * u * u) / math.sqrt(2.0 * math.pi)

    if name == "sign":
        return (
            lambda xp, mu: erf(xp, mu / (root2 * s)),
            lambda xp, mu: 2.0 * pdf(xp, mu / s) / s,
        )
    if name == "relu":
        return (
            lambda xp, mu: mu * cdf(xp, mu / s) + s * pdf(xp, mu / s),
            lambda xp, mu: cdf(xp, mu / s),
        )
    check_choice("activation", name, ACTIVATIONS)
    width = xp.sqrt(1.0 + 2.0 * s * s)
    return (
        lambda xp, mu: erf(xp, mu / width),
        lambda xp, mu: (2.0 / math.sqrt(math.pi)) * xp.exp(-(mu * mu) / (width * width)) / width,
    )


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
    cov = _input_cov(xp, x1, x2_, sw2, sb2)
    s2 = float(sigma) ** 2
    ntk = cov.s12
    for _ in range(depth):
        post, kd = _dual(xp, activation, _inflated(cov, s2) if s2 > 0 else cov, smoothed=s2 > 0)
        cov = _dense(xp, post, sw2, sb2)
        ntk = sw2 * (kd * ntk) + cov.s12
    return ntk if want_ntk else cov.s12


class _Cov(NamedTuple):
    """The covariance Σ of a pair (u, u'), one per pair of inputs, broadcast to (N1, N2).

    Beside Σ12 it carries gap = P - Σ12 and cogap = P + Σ12 (P = √(Σ11Σ22)), each computed
    without subtracting nearly equal numbers. The arc-cosine kernels depend on Σ12 through the
    angle θ, which near ρ = Σ12/P = ±1 is √(2(1 ∓ ρ)): forming 1 - ρ from a rounded ρ turns a
    rounding error ε into an angle √(2ε), and sign's recursion takes another square root at
    every layer (it gave 1.99994 instead of 2 on the diagonal at depth 2 and 1.87 at depth 5,
    for Gaussian inputs in R³).
    """

    s11: Array  # (N1, 1)
    s22: Array  # (1, N2)
    s12: Array
    p: Array
    gap: Array
    cogap: Array


# Pairs whose Gram-matrix gap P ∓ Σ12 is below this fraction of P get it from the inputs'
# differences: elsewhere the Gram's absolute error ~ε costs the angle at most 3 bits
# (δθ ≈ δ(gap/P)/θ with θ > 0.17).
_NEAR = 1.0 / 64.0
# Elements of the (pairs, features) blocks of those differences: bounds their memory.
_BLOCK = 2**22


def _input_cov(xp: Namespace, x1: Array, x2: Array, sw2: float, sb2: float) -> _Cov:
    """The first dense layer's pre-activation covariance; small gaps from the inputs themselves.

    The pre-activations are inner products with a = (σ_w x/√d, σ_b). With the unit vectors
    â, b̂, P ∓ Σ12 = P ‖â ∓ b̂‖²/2: a sum of squares, exactly 0 for identical inputs, with
    absolute error of the order of ε‖â ∓ b̂‖ rather than the Gram matrix's ε. Only the pairs
    with a small gap (nearly parallel or opposite inputs) pay its O(d) per pair; under a JAX
    trace, where they cannot be selected, all pairs do.
    """
    w2 = sw2 / x1.shape[1]
    s11, s22 = w2 * xp.sum(x1 * x1, axis=1) + sb2, w2 * xp.sum(x2 * x2, axis=1) + sb2
    n1, n2 = xp.sqrt(s11), xp.sqrt(s22)
    p = n1[:, None] * n2[None, :]
    s12 = w2 * xp.matmul(x1, xp.permute_dims(x2, (1, 0))) + sb2
    gap, cogap = xp.clip(p - s12, min=0.0), xp.clip(p + s12, min=0.0)
    near = xp.reshape((gap < _NEAR * p) | (cogap < _NEAR * p), (-1,))
    if is_concrete(near):
        pairs = xp.nonzero(near)[0]
    else:  # a JAX trace (or a lazy array) cannot select pairs: take all
        near, pairs = xp.ones_like(near), xp.arange(near.shape[0])
    if pairs.shape[0] > 0:
        w = math.sqrt(w2)
        minus, plus = _pair_sums(xp, (w * x1, n1), (w * x2, n2), math.sqrt(sb2), pairs)
        # back to (N1, N2) without a scatter: a selected position holds the k-th pair, k the
        # number of selected positions before it
        at = xp.clip(xp.cumulative_sum(xp.astype(near, pairs.dtype)) - 1, min=0)
        selected = xp.reshape(near, p.shape)
        gap = xp.where(selected, xp.reshape(xp.take(minus, at), p.shape) * p / 2.0, gap)
        cogap = xp.where(selected, xp.reshape(xp.take(plus, at), p.shape) * p / 2.0, cogap)
    return _Cov(s11[:, None], s22[None, :], s12, p, gap, cogap)


def _pair_sums(
    xp: Namespace, first: tuple[Array, Array], second: tuple[Array, Array], sb: float, pairs: Array
) -> tuple[Array, Array]:
    """‖â ∓ b̂‖² for the flat (row-major) pair indices ``pairs``.

    ``first`` and ``second`` are the inputs scaled by σ_w/√d and the norms n of a = (., σ_b).
    Written as â ∓ b̂ = (a ∓ b)/n1 ± b (n2 - n1)/(n1 n2) with differences of the inputs only,
    identical (or opposite) inputs give exactly 0 however a compiler fuses the arithmetic,
    while separately rounded a/n1 and b/n2, or norms summed in another order, need not agree
    (under ``jax.jit`` they did not, by an angle of 1e-17, which depth 5 of sign turns
    into 0.07).
    """
    (x1, n1), (x2, n2) = first, second
    r1, r2 = _reciprocal(xp, n1), _reciprocal(xp, n2)  # 0 for variance 0, whose P = 0
    n_2 = x2.shape[0]
    minus, plus = [], []
    step = max(1, _BLOCK // max(1, x1.shape[1]))
    for start in range(0, pairs.shape[0], step):
        k = pairs[start : min(start + step, pairs.shape[0])]
        i, j = k // n_2, k % n_2
        xi, yj, ri, rj = (
            xp.take(x1, i, axis=0),
            xp.take(x2, j, axis=0),
            xp.take(r1, i),
            xp.take(r2, j),
        )
        # n2 - n1 = (‖b‖² - ‖a‖²)/(n1 + n2), the numerator as Σ (y - x)(y + x): 0 for identical
        # or opposite inputs also where a compiler sums the two norms differently
        sq = xp.sum((yj - xi) * (yj + xi), axis=1)
        c = sq * _reciprocal(xp, xp.take(n1, i) + xp.take(n2, j)) * ri * rj
        cross = yj * c[:, None]
        minus.append(xp.sum(((xi - yj) * ri[:, None] + cross) ** 2, axis=1) + (sb * c) ** 2)
        plus.append(
            xp.sum(((xi + yj) * ri[:, None] - cross) ** 2, axis=1) + (sb * (2.0 * ri - c)) ** 2
        )
    return xp.concat(minus), xp.concat(plus)


def _reciprocal(xp: Namespace, n: Array) -> Array:
    positive = n > 0
    return xp.astype(positive, n.dtype) / xp.where(positive, n, xp.ones_like(n))


def _inflated(cov: _Cov, s2: float) -> _Cov:
    """Σ̃: the smoothing noise inflates the variances by 1 + σ², not Σ12, so P gains σ²P."""
    return _Cov(
        cov.s11 * (1.0 + s2),
        cov.s22 * (1.0 + s2),
        cov.s12,
        cov.p * (1.0 + s2),
        cov.gap + s2 * cov.p,
        cov.cogap + s2 * cov.p,
    )


def _dual(xp: Namespace, activation: str, cov: _Cov, *, smoothed: bool) -> tuple[_Cov, Array]:
    """The covariance of (φ(u), φ(u')) and κ_φ'(Σ) = E φ'(u) φ'(u')."""
    q11, q22 = _dual_diag(xp, activation, cov.s11), _dual_diag(xp, activation, cov.s22)
    m = xp.sqrt(q11 * q22)
    if activation == "erf":
        a = (1.0 + 2.0 * cov.s11) * (1.0 + 2.0 * cov.s22)
        q12 = (2.0 / math.pi) * xp.asin(xp.clip(2.0 * cov.s12 / xp.sqrt(a), -1.0, 1.0))
        # erf's kernel is smooth in Σ12 (no cusp at ρ = ±1): plain differences are accurate
        post = _Cov(q11, q22, q12, m, xp.clip(m - q12, min=0.0), xp.clip(m + q12, min=0.0))
        # (1 + 2Σ11)(1 + 2Σ22) - 4Σ12², with Σ11Σ22 - Σ12² = gap·cogap
        det = 1.0 + 2.0 * (cov.s11 + cov.s22) + 4.0 * cov.gap * cov.cogap
        return post, (4.0 / math.pi) / xp.sqrt(det)
    # tan(θ/2) = √(gap/cogap): θ and π - θ both accurate, also near 0 and π where arccos of
    # the correlation is not, from one arctangent on [0, π/4]
    root_gap, root_cogap = xp.sqrt(cov.gap), xp.sqrt(cov.cogap)
    half = 2.0 * xp.atan2(xp.minimum(root_gap, root_cogap), xp.maximum(root_gap, root_cogap))
    acute = cov.gap <= cov.cogap
    theta = xp.where(acute, half, math.pi - half)
    theta_c = xp.where(acute, math.pi - half, half)  # π - θ
    if activation == "relu":
        # gap + cogap = 2P: sin θ = √(gap·cogap)/P, cos θ = Σ12/P, sin²(θ/2) = gap/(2P)
        r = _reciprocal(xp, cov.gap + cov.cogap)
        sin, cos = 2.0 * root_gap * root_cogap * r, (cov.cogap - cov.gap) * r
        q12 = cov.p * (sin + theta_c * cos) / (2.0 * math.pi)
        # P/2 - q12 = P(π - sin θ - (π - θ) cos θ)/(2π), rewritten so that its leading θ²
        # terms do not cancel: π(1 - cos θ) = 2π sin²(θ/2)
        residual = 2.0 * math.pi * cov.gap * r - (sin - theta * cos)
        gap = cov.p * xp.clip(residual, min=0.0) / (2.0 * math.pi)  # >= 0 up to rounding
        return _Cov(q11, q22, q12, m, gap, m + q12), theta_c / (2.0 * math.pi)
    # sign: κ = m(1 - 2θ/π), so m ∓ κ = 2mθ/π and 2m(π - θ)/π (m = 1 unless an input's
    # variance is 0, where sign is 0)
    post = _Cov(
        q11,
        q22,
        m * (1.0 - theta * (2.0 / math.pi)),
        m,
        m * theta * (2.0 / math.pi),
        m * theta_c * (2.0 / math.pi),
    )
    if not smoothed:
        return post, xp.zeros_like(theta)
    # the distributional κ' = 2/(π√(Σ̃11Σ̃22 - Σ12²)), with Σ̃11Σ̃22 - Σ12² = gap·cogap
    return post, (2.0 / math.pi) / xp.sqrt(cov.gap * cov.cogap)


def _dense(xp: Namespace, post: _Cov, sw2: float, sb2: float) -> _Cov:
    """The next pre-activation covariance σ_w² post + σ_b², gaps without cancellation.

    With q = post and P' = √(Σ11'Σ22'): P'² - (σ_w² √(q11 q22) + σ_b²)² = σ_w²σ_b²(√q11 - √q22)²
    and P'² - σ_w⁴ q11 q22 = σ_w²σ_b²(q11 + q22) + σ_b⁴, so P' ∓ Σ12' are sums of
    non-negative terms.
    """
    s11, s22 = sw2 * post.s11 + sb2, sw2 * post.s22 + sb2
    p = xp.sqrt(s11 * s22)
    gap, cogap = sw2 * post.gap, sw2 * post.cogap
    if sb2 > 0:  # (without bias these terms are 0, and so may be their denominators)
        roots = (xp.sqrt(post.s11) - xp.sqrt(post.s22)) ** 2
        gap = gap + sw2 * sb2 * roots / (p + sw2 * post.p + sb2)
        bias = (sw2 * sb2 * (post.s11 + post.s22) + sb2 * sb2) / (p + sw2 * post.p)
        cogap = cogap + bias + sb2
    return _Cov(s11, s22, sw2 * post.s12 + sb2, p, gap, cogap)


def _dual_diag(xp: Namespace, activation: str, s: Array) -> Array:
    """κ_φ(Σ) on the diagonal (x = x')."""
    if activation == "relu":
        return s / 2.0
    if activation == "erf":
        return (2.0 / math.pi) * xp.asin(2.0 * s / (1.0 + 2.0 * s))
    return xp.astype(s > 0, s.dtype)  # sign(u)² = 1 unless u = 0
