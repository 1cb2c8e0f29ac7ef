"""nk.from_jax: a JAX pytree model ``apply_fn(params, x)`` as a model for the kernels."""

from __future__ import annotations

import numpy as np
import pytest

import nntk_array as nk
from nntk_array.testing import tol

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")

pytestmark = pytest.mark.backend("jax")

N_IN, HIDDEN, N_OUT = 2, 16, 2


@pytest.fixture(autouse=True, scope="module")
def _x64():
    """float64 as in the backend fixture (tests/conftest.py), restored afterwards."""
    old = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", old)


def mlp_apply(p, x):
    """A two-layer tanh network on a dict pytree, two outputs."""
    h = jnp.tanh(x @ p["w1"] / np.sqrt(N_IN) + p["b1"])
    return h @ p["w2"] / np.sqrt(HIDDEN) + p["b2"]


def mlp_params(dtype, seed=0):
    k1, k2, k3, k4 = jax.random.split(jax.random.key(seed), 4)
    return {
        "w1": jax.random.normal(k1, (N_IN, HIDDEN), dtype),
        "b1": jax.random.normal(k2, (HIDDEN,), dtype),
        "w2": jax.random.normal(k3, (HIDDEN, N_OUT), dtype),
        "b2": jax.random.normal(k4, (N_OUT,), dtype),
    }


def inputs(dtype, n=6):
    return jnp.linspace(-1.0, 1.0, n * N_IN, dtype=dtype).reshape(n, N_IN)


def assert_close(actual, expected, dtype):
    actual, expected = np.asarray(actual), np.asarray(expected)
    rtol = tol(dtype, "contraction")
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * np.abs(expected).max())


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_ntk_equals_a_jacrev_reference(dtype):
    dtype = getattr(jnp, dtype)
    params, x = mlp_params(dtype), inputs(dtype)
    model = nk.from_jax(mlp_apply, params)
    theta0 = model.theta0
    assert theta0.dtype == dtype and model.num_params == theta0.shape[0] == 2 * 16 + 16 + 32 + 2
    assert isinstance(model, nk.Model)

    k = nk.ntk(model, theta0, x, outputs="full")

    jac = jax.jacrev(lambda t: mlp_apply(model.unravel(t), x))(theta0)  # (N, O, P)
    expected = jnp.einsum("nap,mbp->nmab", jac, jac)
    assert k.shape == (6, 6, N_OUT, N_OUT) and k.dtype == dtype
    assert_close(k, expected, dtype)


def test_unravel_inverts_theta0_and_follows_thetas_dtype():
    params = mlp_params(jnp.float32)
    model = nk.from_jax(mlp_apply, params)
    back = model.unravel(model.theta0)
    for name in params:
        np.testing.assert_array_equal(np.asarray(back[name]), np.asarray(params[name]))
    assert model.unravel(model.theta0.astype(jnp.float64))["w1"].dtype == jnp.float64


def test_ntk_equals_the_builtin_mlp_with_matching_layout():
    # A tuple pytree ((W1, b1), (W2, b2)) ravels in the MLP's order: W1, b1, W2, b2.
    mlp = nk.MLP(N_IN, (HIDDEN,), N_OUT, activation="tanh")
    theta = mlp.init(0, xp=jnp, dtype=jnp.float64)
    shapes = (
        (jnp.zeros((N_IN, HIDDEN)), jnp.zeros(HIDDEN)),
        (jnp.zeros((HIDDEN, N_OUT)), jnp.zeros(N_OUT)),
    )
    params = nk.from_jax(lambda p, x: x, shapes).unravel(theta)

    def apply(p, x):
        (w1, b1), (w2, b2) = p
        return jnp.tanh(x @ w1 / np.sqrt(N_IN) + b1) @ w2 / np.sqrt(HIDDEN) + b2

    model = nk.from_jax(apply, params)
    x = inputs(jnp.float64)
    np.testing.assert_array_equal(np.asarray(model.theta0), np.asarray(theta))
    assert_close(model.apply(theta, x), mlp.apply(theta[None, :], x)[0], jnp.float64)
    assert_close(
        nk.ntk(model, theta, x, outputs="full"),
        nk.ntk(mlp, theta, x, outputs="full"),
        jnp.float64,
    )


def test_nntk_equals_a_plain_callable_with_the_same_seed():
    params, x = mlp_params(jnp.float64), inputs(jnp.float64)
    model = nk.from_jax(mlp_apply, params)
    _, unravel = jax.flatten_util.ravel_pytree(params)

    def plain(thetas, x):
        return jnp.stack([mlp_apply(unravel(t), x) for t in thetas])

    opts = {"sigma": 0.2, "samples": 64, "seed": 3, "outputs": "full"}
    assert_close(
        nk.nntk(model, model.theta0, x, **opts),
        nk.nntk(plain, model.theta0, x, **opts),
        jnp.float64,
    )


def test_nntk_under_the_users_jit_equals_eager():
    params, x = mlp_params(jnp.float32), inputs(jnp.float32)
    model = nk.from_jax(mlp_apply, params)
    kernel = jax.jit(lambda t, x: nk.nntk(model, t, x, sigma=0.3, samples=128, seed=0))
    eager = nk.nntk(model, model.theta0, x, sigma=0.3, samples=128, seed=0)
    assert_close(kernel(model.theta0, x), eager, jnp.float32)
    # and under the user's vmap: the NTKs of an ensemble
    thetas = jnp.stack([model.theta0, 2 * model.theta0])
    ensemble = jax.jit(jax.vmap(lambda t: nk.ntk(model, t, x)))(thetas)
    for t, k in zip(thetas, ensemble, strict=True):
        assert_close(k, nk.ntk(model, t, x), jnp.float32)


def test_jvp_equals_jacobian_times_tangent():
    params, x = mlp_params(jnp.float64), inputs(jnp.float64)
    model = nk.from_jax(mlp_apply, params)
    tangents = jax.random.normal(jax.random.key(1), (3, model.num_params), jnp.float64)
    jvps = model.jvp(model.theta0, x, tangents)
    jac = jax.jacrev(lambda t: mlp_apply(model.unravel(t), x))(model.theta0)
    assert jvps.shape == (3, 6, N_OUT)
    assert_close(jvps, jnp.einsum("nap,kp->kna", jac, tangents), jnp.float64)


def test_one_trace_per_shape():
    traces = []

    def apply(p, x):
        traces.append(1)  # runs only while JAX traces
        return mlp_apply(p, x)

    model = nk.from_jax(apply, mlp_params(jnp.float32))
    x, thetas = inputs(jnp.float32), jnp.stack([model.theta0] * 4)
    outs = [model.apply(thetas * (1 + i), x) for i in range(3)]
    assert len(traces) == 1
    assert outs[0].shape == (4, 6, N_OUT)
    np.testing.assert_allclose(
        np.asarray(outs[0][1]), np.asarray(mlp_apply(mlp_params(jnp.float32), x)), rtol=1e-6
    )
    model.apply(thetas, inputs(jnp.float32, n=3))  # a new shape traces again
    assert len(traces) == 2


def test_batch_axis_zero_vmaps_a_per_input_function():
    params, x = mlp_params(jnp.float64), inputs(jnp.float64)
    one = nk.from_jax(lambda p, xi: mlp_apply(p, xi[None, :])[0], params, batch_axis=0)
    batched = nk.from_jax(mlp_apply, params)
    np.testing.assert_allclose(
        np.asarray(one.apply(one.theta0, x)), np.asarray(batched.apply(batched.theta0, x))
    )


def test_scalar_outputs_become_one_output():
    model = nk.from_jax(lambda p, x: x @ p["w"], {"w": jnp.ones(3)})
    assert model.apply(jnp.ones((2, 3)), jnp.ones((5, 3))).shape == (2, 5, 1)
    assert nk.ntk(model, model.theta0, jnp.ones((5, 3))).shape == (5, 5)


def test_sign_network_nntk_sees_the_first_layer_the_ntk_does_not():
    width = 64
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    first = {
        "w1": jax.random.normal(k1, (1, width), jnp.float64),
        "b1": jax.random.normal(k2, (width,), jnp.float64),
    }
    w2 = jax.random.normal(k3, (width,), jnp.float64)

    def apply(p, x):  # the readout is a constant: θ is the first layer only
        return jnp.sign(x @ p["w1"] + p["b1"]) @ w2 / np.sqrt(width)

    def apply_full(p, x):
        return jnp.sign(x @ p["w1"] + p["b1"]) @ p["w2"] / np.sqrt(width)

    x = jnp.linspace(-1.0, 1.0, 8, dtype=jnp.float64)[:, None]
    first_layer = nk.from_jax(apply, first)
    full = nk.from_jax(apply_full, {**first, "w2": w2})

    # local NTK: the sign's derivative is zero, so only the readout contributes
    np.testing.assert_array_equal(np.asarray(nk.ntk(first_layer, first_layer.theta0, x)), 0.0)
    feats = np.asarray(jnp.sign(x @ first["w1"] + first["b1"])) / np.sqrt(width)
    np.testing.assert_allclose(np.asarray(nk.ntk(full, full.theta0, x)), feats @ feats.T)

    # NNTK: the smoothed first layer carries a large share of the kernel's diagonal
    opts = {"sigma": 0.3, "samples": 512, "seed": 0}
    k_first = np.diag(np.asarray(nk.nntk(first_layer, first_layer.theta0, x, **opts)))
    k_full = np.diag(np.asarray(nk.nntk(full, full.theta0, x, **opts)))
    assert np.all(k_first > 0.1 * k_full)


def test_inputs_mixed_by_batch_statistics_are_differentiated_as_a_block():
    """A model that centres its hidden layer over the batch: with independent_inputs=False
    the NTK of one block is the jacrev of the whole batch output; taken one input at a time
    (the default) it would be a different kernel."""

    def centred(p, x):
        z = x @ p["w1"] / np.sqrt(N_IN) + p["b1"]
        h = jnp.tanh(z - jnp.mean(z, axis=0))
        return h @ p["w2"] / np.sqrt(HIDDEN) + p["b2"]

    params, x = mlp_params(jnp.float64), inputs(jnp.float64)
    model = nk.from_jax(centred, params, independent_inputs=False)
    theta = model.theta0
    jac = jax.jacrev(lambda t: centred(model.unravel(t), x))(theta)  # (N, O, P)
    want = jnp.einsum("aop,bop->ab", jac, jac) / N_OUT
    assert_close(nk.ntk(model, theta, x, batch_size=x.shape[0]), want, jnp.float64)
    per_input = nk.ntk(nk.from_jax(centred, params), theta, x)
    assert not np.allclose(np.asarray(per_input), np.asarray(want))


def test_bad_arguments_raise_clear_errors():
    params = mlp_params(jnp.float32)
    model = nk.from_jax(mlp_apply, params)
    x, p = inputs(jnp.float32), model.num_params
    with pytest.raises(TypeError, match="`thetas` must be a JAX array"):
        model.apply(np.zeros((1, p), np.float32), x)
    with pytest.raises(TypeError, match="`x` must be a JAX array"):
        model.apply(model.theta0, np.asarray(x))
    with pytest.raises(ValueError, match=rf"`thetas` must have shape \(B, {p}\)"):
        model.apply(jnp.zeros((1, p + 1)), x)
    with pytest.raises(TypeError, match="`thetas` must have a real floating dtype"):
        model.apply(jnp.zeros((1, p), jnp.int32), x)
    with pytest.raises(ValueError, match=rf"`theta` must have shape \({p},\)"):
        nk.ntk(model, jnp.zeros(p + 1), x)
    with pytest.raises(TypeError, match=r"`x1` is numpy\.ndarray"):
        nk.ntk(model, model.theta0, np.asarray(x))
    with pytest.raises(TypeError, match="`x1` must be a JAX array"):  # NumPy throughout
        nk.ntk(model, np.asarray(model.theta0), np.asarray(x))
    with pytest.raises(ValueError, match=rf"`tangents` must have shape \(K, {p}\)"):
        model.jvp(model.theta0, x, jnp.zeros(p))
    with pytest.raises(TypeError, match=r"leaf at \['step'\] has dtype int32"):
        nk.from_jax(mlp_apply, {**params, "step": jnp.zeros((), jnp.int32)})
    with pytest.raises(ValueError, match="`params` must hold at least one array"):
        nk.from_jax(mlp_apply, {})
    with pytest.raises(TypeError, match="`apply_fn` must be a callable"):
        nk.from_jax(None, params)
    with pytest.raises(ValueError, match="`batch_axis` must be None"):
        nk.from_jax(mlp_apply, params, batch_axis=1)
    with pytest.raises(TypeError, match="`independent_inputs` must be a bool"):
        nk.from_jax(mlp_apply, params, independent_inputs=1)
    with pytest.raises(ValueError, match="contradicts `batch_axis=0`"):
        nk.from_jax(mlp_apply, params, batch_axis=0, independent_inputs=False)
    bad = nk.from_jax(lambda p, x: mlp_apply(p, x)[:1], params)
    with pytest.raises(ValueError, match="first axis holds the 6 inputs"):
        bad.apply(bad.theta0, x)
