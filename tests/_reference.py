"""Independent references for tests: autodiff Jacobian contraction in float64."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest


def autodiff_ntk(
    apply: Callable[..., object], theta: np.ndarray, x1: np.ndarray, x2: np.ndarray
) -> np.ndarray:
    """Θ[n, m, o, p] = Σ_k J1[n, o, k] J2[m, p, k] from torch.func (or JAX) in float64.

    ``apply(theta, x)`` maps (P,) and (N, d) to (N, O) in the library of its arguments.
    """
    try:
        import torch
        from torch.func import jacrev

        def jac(x: np.ndarray) -> np.ndarray:
            t = torch.from_numpy(np.asarray(theta, dtype=np.float64))
            xx = torch.from_numpy(np.asarray(x, dtype=np.float64))
            return jacrev(lambda p: apply(p, xx))(t).numpy()

    except ImportError:
        jax = pytest.importorskip("jax", reason="an autodiff library is needed for the oracle")
        jax.config.update("jax_enable_x64", True)
        import jax.numpy as jnp

        def jac(x: np.ndarray) -> np.ndarray:
            t = jnp.asarray(theta, dtype=jnp.float64)
            return np.asarray(jax.jacrev(lambda p: apply(p, jnp.asarray(x, dtype=jnp.float64)))(t))

    j1, j2 = jac(x1), jac(x2)
    return np.tensordot(j1, j2, axes=([2], [2])).transpose(0, 2, 1, 3)


_ERF = np.vectorize(math.erf)


def _phi_tilde(activation: str, mu: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """E φ(μ + s g) and its derivative in μ, g ~ N(0, 1).

    (docs: Mathematics, 'One hidden layer, finite width'.)
    """
    if activation == "sign":
        return _ERF(mu / (s * math.sqrt(2.0))), math.sqrt(2.0 / math.pi) / s * np.exp(
            -(mu**2) / (2.0 * s**2)
        )
    if activation == "relu":
        cdf = 0.5 * (1.0 + _ERF(mu / (s * math.sqrt(2.0))))
        pdf = np.exp(-((mu / s) ** 2) / 2.0) / math.sqrt(2.0 * math.pi)
        return mu * cdf + s * pdf, cdf
    if activation == "erf":
        r = np.sqrt(1.0 + 2.0 * s**2)
        return _ERF(mu / r), (2.0 / math.sqrt(math.pi)) * np.exp(-(mu**2) / r**2) / r
    raise ValueError(activation)


def smoothed_one_hidden_ntk(
    model: object,
    theta: np.ndarray,
    x1: np.ndarray,
    x2: np.ndarray,
    sigma: float,
    *,
    paper: bool = False,
    first_layer_only: bool = False,
) -> np.ndarray:
    """Exact Gaussian-smoothed NTK ∇f_σ(x1)·∇f_σ(x2) of a one-hidden-layer nk.MLP.

    (docs: Mathematics, 'One hidden layer, finite width'.)

    NTK parameterization with unit standard deviations, biases in both layers (the output
    bias adds 1). Every parameter is perturbed by σ·N(0, 1), so each pre-activation gets
    independent noise of scale s(x) = σ sqrt(|x|²/d + 1). ``paper=True`` smooths with the
    paper form's density instead (radius factor U^{1/P}, averaged by Gauss–Legendre).
    ``first_layer_only`` keeps only the hidden layer's (W, b) term.
    """
    d, m = model.in_features, model.hidden[0]
    theta = np.asarray(theta, dtype=np.float64)
    w = theta[: d * m].reshape(d, m)
    b = theta[d * m : d * m + m]
    v = theta[d * m + m : d * m + 2 * m]
    p = theta.shape[0]

    def parts(x: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        z = x @ w / math.sqrt(d) + b
        s = radius * sigma * np.sqrt(np.sum(x * x, axis=1) / d + 1.0)[:, None]
        return (*_phi_tilde(model.activation, z, s), z)

    if paper:
        nodes, weights = np.polynomial.legendre.leggauss(200)
        radii, wts = ((nodes + 1.0) / 2.0) ** (1.0 / p), weights / 2.0
    else:
        radii, wts = np.array([1.0]), np.array([1.0])
    f1 = sum(wt * parts(x1, r)[0] for r, wt in zip(radii, wts, strict=True))
    g1 = sum(wt * parts(x1, r)[1] for r, wt in zip(radii, wts, strict=True))
    f2 = sum(wt * parts(x2, r)[0] for r, wt in zip(radii, wts, strict=True))
    g2 = sum(wt * parts(x2, r)[1] for r, wt in zip(radii, wts, strict=True))
    sig = x1 @ x2.T / d + 1.0
    first = ((g1 * v**2) @ g2.T) * sig / m
    return first if first_layer_only else first + f1 @ f2.T / m + 1.0
