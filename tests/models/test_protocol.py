"""The model protocol: a plain model, a plain callable and the MLP's capabilities."""

from __future__ import annotations

import numpy as np
import pytest

import nntk_array as nk
from nntk_array.backends.autodiff import has_autodiff
from nntk_array.testing import to_numpy, tol

MLP = nk.MLP(2, (8, 6), 2, activation="tanh")
X = np.linspace(-1.0, 1.0, 10).reshape(5, 2)


class Wrapped:
    """A user's model with only the required members: no structured capabilities."""

    def __init__(self, inner: nk.MLP) -> None:
        self.inner = inner

    @property
    def num_params(self) -> int:
        return self.inner.num_params

    def apply(self, thetas, x):
        return self.inner.apply(thetas, x)


def test_minimal_models_satisfy_the_protocol():
    assert isinstance(MLP, nk.Model) and isinstance(Wrapped(MLP), nk.Model)
    assert not isinstance(lambda t, x: t, nk.Model)


def test_a_minimal_model_gets_the_same_nntk(make):
    theta, x = make(MLP.init(0, xp=np)), make(X)
    opts = {"sigma": 0.2, "samples": 64, "seed": 4, "outputs": "full"}
    np.testing.assert_array_equal(
        to_numpy(nk.nntk(Wrapped(MLP), theta, x, **opts)), to_numpy(nk.nntk(MLP, theta, x, **opts))
    )


def test_a_minimal_model_gets_the_autodiff_ntk(make, xp, dtype):
    theta, x = make(MLP.init(0, xp=np)), make(X)
    if not has_autodiff(xp):
        with pytest.raises(TypeError, match="automatic differentiation"):
            nk.ntk(Wrapped(MLP), theta, x)
        return
    structured = to_numpy(nk.ntk(MLP, theta, x, outputs="full"))
    autodiff = to_numpy(nk.ntk(Wrapped(MLP), theta, x, outputs="full", batch_size=2))
    scale = np.abs(structured).max()
    np.testing.assert_allclose(autodiff, structured, atol=tol(dtype, "contraction") * scale)


def test_a_model_of_the_wrong_size_is_refused(make):
    with pytest.raises(ValueError, match=rf"`theta` must have shape \({MLP.num_params},\)"):
        nk.nntk(Wrapped(MLP), make(np.zeros(3)), make(X), sigma=0.1, samples=8)


def test_mlp_jvp_is_the_jacobian_vector_product(make, xp, dtype):
    theta, x = make(MLP.init(0, xp=np)), make(X)
    tangents = make(np.random.default_rng(1).standard_normal((3, MLP.num_params)))
    jv = to_numpy(MLP.jvp(theta, x, tangents))
    assert jv.shape == (3, 5, 2)
    if has_autodiff(xp):
        from nntk_array.backends.autodiff import jvp

        for k in range(3):
            _, ref = jvp(MLP.apply_unchecked, theta, x, tangents[k, :], xp=xp)
            np.testing.assert_allclose(jv[k], to_numpy(ref), atol=tol(dtype, "contraction"))
        return
    # Central differences in float64 on the host: error O(h²) plus rounding.
    t64, x64 = to_numpy(theta).astype(np.float64), X
    v64 = to_numpy(tangents).astype(np.float64)
    h = 1e-5
    for k in range(3):
        fd = (MLP.apply(t64 + h * v64[k], x64) - MLP.apply(t64 - h * v64[k], x64)) / (2 * h)
        np.testing.assert_allclose(jv[k], fd, atol=max(1e-6, tol(dtype, "contraction")))


def test_mlp_jvp_gives_the_structured_ntk(make, dtype):
    """Σ_p (J e_p)(J e_p)ᵀ over the unit tangents is the local NTK."""
    model = nk.MLP(1, (4,), 1, activation="relu")
    theta, x = make(model.init(2, xp=np)), make(np.linspace(-1.0, 1.0, 3)[:, None])
    jac = to_numpy(model.jvp(theta, x, make(np.eye(model.num_params))))[..., 0]  # (P, N)
    np.testing.assert_allclose(
        jac.T @ jac, to_numpy(nk.ntk(model, theta, x)), rtol=tol(dtype, "contraction")
    )


def test_linear_blocks_enter_linearly(make, dtype):
    theta = MLP.init(0, xp=np)
    ((start, stop),) = MLP.linear_blocks
    v = np.zeros_like(theta)
    v[start:stop] = np.random.default_rng(0).standard_normal(stop - start)
    f = [to_numpy(MLP.apply(make(theta + s * v), make(X))).astype(np.float64) for s in (-1, 0, 1)]
    np.testing.assert_allclose(f[0] + f[2] - 2 * f[1], 0.0, atol=10 * tol(dtype, "contraction"))
    # and nothing before the block does: the hidden layers are not linear in their weights
    w = np.zeros_like(theta)
    w[:start] = 0.5
    g = [to_numpy(MLP.apply(make(theta + s * w), make(X))).astype(np.float64) for s in (-1, 0, 1)]
    assert np.abs(g[0] + g[2] - 2 * g[1]).max() > 1e-2


def test_a_plain_callable_still_works(make):
    theta, x = make(MLP.init(0, xp=np)), make(X)
    k = nk.nntk(MLP.apply, theta, x, sigma=0.2, samples=64, seed=4)
    # the plain estimator: a callable offers none of the MLP's structure for variance reduction
    plain = nk.nntk(MLP, theta, x, sigma=0.2, samples=64, seed=4, variance_reduction="none")
    np.testing.assert_array_equal(to_numpy(k), to_numpy(plain))
