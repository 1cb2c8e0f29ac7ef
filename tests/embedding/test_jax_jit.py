"""Call nk.ntk and nk.nntk inside jax.jit (and jax.vmap).

The kernels are written in array-API code with no value-dependent control flow, so JAX can
trace them: a jitted function that computes a kernel compiles once per input shape and
then runs as one XLA program. With a fixed ``seed`` the Monte Carlo perturbations are
regenerated from that seed inside the trace, so the jitted NNTK is the same estimate as the
eager one; pass ``rng=jax.random.key(...)`` as an argument instead to draw fresh ones per call.

float32 (JAX's default) throughout: the eager and the compiled program sum the same float32
terms in different orders, which is the library's "contraction" tolerance tier.
"""

from __future__ import annotations

import numpy as np
import pytest

import nntk_array as nk
from nntk_array.testing import tol

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")

pytestmark = pytest.mark.backend("jax")

RTOL = tol(jnp.float32, "contraction")


def assert_close(actual, expected):
    actual, expected = np.asarray(actual), np.asarray(expected)
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=RTOL * np.abs(expected).max())


@pytest.fixture(scope="module")
def x() -> jax.Array:
    return jnp.linspace(-1.0, 1.0, 16, dtype=jnp.float32)[:, None]


def test_nntk_under_jit_equals_eager_and_compiles_once(x):
    model = nk.MLP(1, (256,), 1, activation="sign")
    traces = []

    @jax.jit
    def kernel(theta, x):
        traces.append(1)  # runs only while JAX traces the function
        return nk.nntk(model, theta, x, sigma=0.3, samples=512, seed=0)

    for seed in range(3):  # new parameters of the same shape reuse the compiled program
        theta = model.init(seed, xp=jnp, dtype=jnp.float32)
        k = kernel(theta, x)
        assert isinstance(k, jax.Array) and k.dtype == jnp.float32 and k.shape == (16, 16)
        assert_close(k, nk.nntk(model, theta, x, sigma=0.3, samples=512, seed=0))
    assert len(traces) == 1


def test_ntk_under_jit_and_vmap(x):
    model = nk.MLP(1, (256,), 1, activation="relu")
    thetas = jnp.stack([model.init(seed, xp=jnp, dtype=jnp.float32) for seed in range(4)])

    # one compiled program for the NTKs of an ensemble of four networks
    ensemble = jax.jit(jax.vmap(lambda theta: nk.ntk(model, theta, x)))(thetas)

    assert ensemble.shape == (4, 16, 16)
    for theta, k in zip(thetas, ensemble, strict=True):
        assert_close(k, nk.ntk(model, theta, x))


def test_jitted_kernel_regression_prediction(x):
    model = nk.MLP(1, (256,), 1, activation="sign")
    theta = model.init(0, xp=jnp, dtype=jnp.float32)
    x_test = jnp.linspace(-0.95, 0.95, 9, dtype=jnp.float32)[:, None]
    y = jnp.sign(x[:, 0])

    def predict(theta, x_train, y_train, x_test):
        """NNTK ridge regression: kernel on train + test points, then a Cholesky solve."""
        x_all = jnp.concatenate([x_train, x_test])
        k = nk.nntk(model, theta, x_all, sigma=0.3, samples=512, seed=0, estimator="sketch")
        n = x_train.shape[0]
        _, f_test = nk.kernel_regression(k[:n, :n], y_train, k[n:, :n], ridge=1e-3)
        return f_test

    eager = predict(theta, x, y, x_test)
    compiled = jax.jit(predict)(theta, x, y, x_test)

    assert compiled.shape == (9,) and compiled.dtype == jnp.float32
    assert_close(compiled, eager)
    # and it predicts the sign target: right sign away from the jump at 0
    f, t = np.asarray(compiled), np.asarray(x_test[:, 0])
    away = np.abs(t) > 0.2
    np.testing.assert_array_equal(np.sign(f[away]), np.sign(t[away]))
