"""nk.from_jax on models of JAX's frameworks: flax linen, flax NNX and equinox.

The same small convnet (a 3 x 3 convolution, ReLU, 2 x 2 average pooling, a linear readout)
is written in each framework and wrapped as its documentation suggests: linen's
``module.apply`` on its variables; NNX's ``nnx.split`` into the parameters and the rest (here
a batch norm's running statistics, which stay constants) and ``nnx.merge`` in ``apply_fn``;
equinox's ``eqx.partition(model, eqx.is_inexact_array)`` and ``eqx.combine``, one input per
call (``batch_axis=0``). The oracles are the frameworks' own functions differentiated by JAX
(``jax.jacrev``, ``jax.jvp``) and unflattened by ``ravel_pytree``, not by the adapter.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import pytest

import nntk_array as nk
from nntk_array.testing import tol

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")

pytestmark = pytest.mark.backend("jax")

N, SIDE, CHANNELS, N_OUT = 5, 4, 3, 2  # five 4 x 4 images, 3 channels, 2 outputs
FEATURES = CHANNELS * (SIDE // 2) ** 2  # after the pooling


@pytest.fixture(autouse=True, scope="module")
def _x64():
    """float64 as in the backend fixture (tests/conftest.py), restored afterwards."""
    old = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", old)


class Case(NamedTuple):
    model: Any  # nk.from_jax(...)
    native: Any  # the framework's own batched function: (params, x) -> (N, N_OUT)
    params: Any  # the pytree θ stands for
    x: Any


def images(dtype):
    return jnp.sin(jnp.arange(N * SIDE * SIDE, dtype=dtype)).reshape(N, SIDE, SIDE)


def linen_case(dtype):
    nn = pytest.importorskip("flax.linen")

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):  # (N, H, W, 1)
            x = nn.relu(nn.Conv(CHANNELS, (3, 3), padding=1, param_dtype=dtype)(x))
            x = nn.avg_pool(x, (2, 2), strides=(2, 2))
            return nn.Dense(N_OUT, param_dtype=dtype)(x.reshape(x.shape[0], -1))

    net, x = Net(), images(dtype)[..., None]
    variables = net.init(jax.random.key(0), x)  # {"params": {...}}: all of them are θ
    return Case(nk.from_jax(net.apply, variables), net.apply, variables, x)


def nnx_case(dtype):
    nnx = pytest.importorskip("flax.nnx")

    class Net(nnx.Module):
        def __init__(self, rngs):
            kw = {"param_dtype": dtype, "rngs": rngs}
            self.conv = nnx.Conv(1, CHANNELS, (3, 3), padding=1, **kw)
            self.norm = nnx.BatchNorm(CHANNELS, use_running_average=True, **kw)
            self.out = nnx.Linear(FEATURES, N_OUT, **kw)

        def __call__(self, x):  # (N, H, W, 1)
            x = self.norm(nnx.relu(self.conv(x)))
            x = nnx.avg_pool(x, (2, 2), strides=(2, 2))
            return self.out(x.reshape(x.shape[0], -1))

    net = Net(nnx.Rngs(0))
    stats = net.norm.mean.dtype  # float32 whatever param_dtype is: flax's choice
    net.norm.mean[...] = jnp.linspace(-0.5, 0.5, CHANNELS, dtype=stats)  # not the identity
    net.norm.var[...] = jnp.linspace(0.5, 2.0, CHANNELS, dtype=stats)
    graphdef, params, rest = nnx.split(net, nnx.Param, ...)  # θ: the Params only

    def native(p, x):
        return nnx.merge(graphdef, p, rest)(x)

    return Case(nk.from_jax(native, params), native, params, images(dtype)[..., None])


def equinox_case(dtype):
    eqx = pytest.importorskip("equinox")
    k1, k2 = jax.random.split(jax.random.key(0))
    net = eqx.nn.Sequential(
        [
            eqx.nn.Conv2d(1, CHANNELS, 3, padding=1, dtype=dtype, key=k1),
            eqx.nn.Lambda(jax.nn.relu),
            eqx.nn.AvgPool2d(2, stride=2),
            eqx.nn.Lambda(jnp.ravel),
            eqx.nn.Linear(FEATURES, N_OUT, dtype=dtype, key=k2),
        ]
    )
    params, static = eqx.partition(net, eqx.is_inexact_array)

    def one(p, image):  # (1, H, W) -> (N_OUT,)
        return eqx.combine(p, static)(image)

    def native(p, x):
        return jax.vmap(lambda image: one(p, image))(x)

    model = nk.from_jax(one, params, batch_axis=0)
    return Case(model, native, params, images(dtype)[:, None])


FRAMEWORKS = {"linen": linen_case, "nnx": nnx_case, "equinox": equinox_case}
P = {"linen": 9 * CHANNELS + CHANNELS + FEATURES * N_OUT + N_OUT}
P["equinox"] = P["linen"]
P["nnx"] = P["linen"] + 2 * CHANNELS  # the batch norm's scale and bias


@pytest.fixture(
    scope="module",
    params=[(f, d) for f in FRAMEWORKS for d in ("float32", "float64")],
    ids=lambda p: f"{p[0]}-{p[1]}",
)
def case(request, _x64):
    """One model per framework and dtype for the whole module: its programs compile once."""
    framework, dtype = request.param
    return FRAMEWORKS[framework](getattr(jnp, dtype)), framework, getattr(jnp, dtype)


def assert_close(actual, expected, dtype):
    actual, expected = np.asarray(actual), np.asarray(expected)
    rtol = tol(dtype, "contraction")
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * np.abs(expected).max())


def perturbed(theta, count, seed=1):
    noise = jax.random.normal(jax.random.key(seed), (count, theta.shape[0]), theta.dtype)
    return theta + 0.1 * noise


def test_theta0_is_the_raveled_params(case):
    (model, _, params, _), framework, dtype = case
    theta0, _ = jax.flatten_util.ravel_pytree(params)
    assert model.num_params == P[framework] == theta0.shape[0]
    assert model.theta0.dtype == dtype
    np.testing.assert_array_equal(np.asarray(model.theta0), np.asarray(theta0))


def test_ntk_equals_a_jacrev_contraction(case):
    (model, native, params, x), _, dtype = case
    jac = jax.jacrev(native)(params, x)  # the params' pytree, leaves (N, N_OUT, *shape)
    j = jnp.concatenate([leaf.reshape(N, N_OUT, -1) for leaf in jax.tree.leaves(jac)], axis=2)
    expected = jnp.einsum("nap,mbp->nmab", j, j)

    k_full = nk.ntk(model, model.theta0, x, outputs="full")
    k = nk.ntk(model, model.theta0, x)
    assert k_full.shape == (N, N, N_OUT, N_OUT) and k.shape == (N, N)
    assert k_full.dtype == k.dtype == dtype
    assert_close(k_full, expected, dtype)
    assert_close(k, jnp.einsum("nmaa->nm", expected) / N_OUT, dtype)


def test_apply_over_a_batch_equals_a_loop(case):
    (model, native, params, x), _, dtype = case
    _, unravel = jax.flatten_util.ravel_pytree(params)
    thetas = perturbed(model.theta0, 3)
    out = model.apply(thetas, x)
    assert out.shape == (3, N, N_OUT) and out.dtype == dtype
    for theta, row in zip(thetas, out, strict=True):
        assert_close(row, native(unravel(theta), x), dtype)
    assert_close(model.apply(model.theta0, x), native(params, x), dtype)


def test_nntk_equals_a_plain_callable_with_the_same_seed(case):
    (model, native, params, x), _, dtype = case
    _, unravel = jax.flatten_util.ravel_pytree(params)

    def plain(thetas, x):
        return jax.vmap(lambda t: native(unravel(t), x))(thetas)

    # the plain estimator: the adapter's own JVPs would give it the control variate
    opts = {"sigma": 0.1, "samples": 64, "seed": 0, "variance_reduction": "none"}
    k, se = nk.nntk(model, model.theta0, x, return_stderr=True, **opts)
    assert k.shape == se.shape == (N, N) and k.dtype == se.dtype == dtype
    assert np.all(np.isfinite(np.asarray(k))) and np.all(np.asarray(se) > 0)
    assert_close(k, nk.nntk(plain, model.theta0, x, **opts), dtype)


def test_jvp_equals_jax_jvp(case):
    (model, native, params, x), _, dtype = case
    _, unravel = jax.flatten_util.ravel_pytree(params)
    theta0 = model.theta0
    tangents = perturbed(jnp.zeros_like(theta0), 3) * 10
    jvps = model.jvp(theta0, x, tangents)
    assert jvps.shape == (3, N, N_OUT) and jvps.dtype == dtype
    for tangent, jv in zip(tangents, jvps, strict=True):
        _, expected = jax.jvp(lambda t: native(unravel(t), x), (theta0,), (tangent,))
        assert_close(jv, expected, dtype)


def test_nnx_integer_state_must_be_split_off():
    nnx = pytest.importorskip("flax.nnx")

    class Counted(nnx.Module):
        def __init__(self, rngs):
            self.linear = nnx.Linear(2, 1, rngs=rngs)
            self.calls = nnx.Variable(jnp.zeros((), jnp.int32))

        def __call__(self, x):
            return self.linear(x)

    net = Counted(nnx.Rngs(0))
    graphdef, state = nnx.split(net)
    with pytest.raises(TypeError, match=r"the leaf at \['calls'\].* has dtype int32"):
        nk.from_jax(lambda p, x: nnx.merge(graphdef, p)(x), state)
    graphdef, params, rest = nnx.split(net, nnx.Param, ...)
    model = nk.from_jax(lambda p, x: nnx.merge(graphdef, p, rest)(x), params)
    assert model.num_params == 3
