"""Independent references for tests: autodiff Jacobian contraction in float64."""

from __future__ import annotations

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
