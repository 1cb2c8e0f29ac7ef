"""The compiled loop bodies on JAX (nntk_array.backends.compile): same numbers as eager
execution, compiled once per model and shapes (not per seed or call), transformations of
the public functions still work, and bad inputs still fail eagerly."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")

import nntk_array as nk  # noqa: E402
from nntk_array.backends import compile as programs  # noqa: E402


@pytest.fixture(autouse=True)
def _x64():
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)


def _setup(n=12, width=16):
    model = nk.MLP(2, (width,), 1, activation="relu")
    theta = model.init(0, xp=jnp)
    x = jnp.asarray(np.random.default_rng(1).normal(size=(n, 2)))
    return model, theta, x


def _compiled_versions(owner) -> int:
    """Compiled executables held for ``owner`` (summed over its programs; for a model with a
    ``jax_program_key``, over the programs shared by its key)."""
    key = getattr(owner, "jax_program_key", None)
    if key is None:
        held = list(programs._PROGRAMS.get(owner, {}).values())
    else:
        held = [p for k, p in programs._SHARED.items() if k[0] == key]
    return sum(p._cache_size() for p in held)


def _pure_callable():
    def f(thetas, x):
        return jnp.tanh(x @ thetas[:, :2].T + thetas[:, 2]).T

    f.jax_compilable = True  # pure: the engine may compile it
    return f, jnp.asarray([0.3, -0.2, 0.1]), jnp.linspace(-1.0, 1.0, 10).reshape(5, 2)


@pytest.mark.parametrize("reduction", ["auto", "none"])
def test_same_numbers_as_eager(reduction):
    model, theta, x = _setup()
    kw = {"sigma": 0.3, "samples": 96, "seed": 3, "variance_reduction": reduction}
    compiled = nk.nntk(model, theta, x, **kw)
    with jax.disable_jit():  # every program runs op by op: the eager route
        eager = nk.nntk(model, theta, x, **kw)
    np.testing.assert_allclose(np.asarray(compiled), np.asarray(eager), rtol=1e-9, atol=1e-12)


def test_stderr_same_numbers_as_eager():
    model, theta, x = _setup()
    kw = {"sigma": 0.3, "samples": 80, "seed": 2, "return_stderr": True}
    k, se = nk.nntk(model, theta, x, **kw)
    with jax.disable_jit():
        k0, se0 = nk.nntk(model, theta, x, **kw)
    np.testing.assert_allclose(np.asarray(k), np.asarray(k0), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(np.asarray(se), np.asarray(se0), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("reduction", ["auto", "none"])
def test_new_seed_reuses_programs_new_shape_compiles_once(reduction):
    model, theta, x = _setup(width=13)  # an architecture of its own: programs are shared
    kw = {"sigma": 0.3, "samples": 64, "variance_reduction": reduction}
    nk.nntk(model, theta, x, seed=0, **kw)
    first = _compiled_versions(model)
    assert first >= 1
    nk.nntk(model, theta, x, seed=1, **kw)
    nk.nntk(model, theta * 1.1, x, seed=2, **kw)
    assert _compiled_versions(model) == first
    more = jnp.concatenate([x, x[:3]], axis=0)
    nk.nntk(model, theta, more, seed=0, **kw)
    grown = _compiled_versions(model)
    assert grown > first
    nk.nntk(model, theta, more, seed=5, **kw)
    assert _compiled_versions(model) == grown


def test_plain_callable_traced_once():
    traced = []

    def f(thetas, x):
        if isinstance(thetas, jax.core.Tracer):
            traced.append(thetas.shape)
        return jnp.tanh(x @ thetas[:, :2].T + thetas[:, 2]).T

    f.jax_compilable = True  # pure: the engine may compile it
    theta = jnp.asarray([0.3, -0.2, 0.1])
    x = jnp.linspace(-1.0, 1.0, 10).reshape(5, 2)
    k1 = nk.nntk(f, theta, x, sigma=0.3, samples=64, seed=0)
    count = len(traced)
    assert count >= 1
    k2 = nk.nntk(f, theta, x, sigma=0.3, samples=64, seed=1)
    assert len(traced) == count  # a new seed is an argument, not a new program
    assert not np.allclose(np.asarray(k1), np.asarray(k2))


def test_undeclared_callables_stay_eager():
    calls = []

    def f(thetas, x):  # may keep state between calls: never compiled
        calls.append(isinstance(thetas, jax.core.Tracer))
        return jnp.tanh(x @ thetas[:, :2].T).T

    nk.nntk(f, jnp.asarray([0.3, -0.2]), jnp.ones((4, 2)), sigma=0.3, samples=32, seed=0)
    assert calls and not any(calls)
    assert f not in programs._PROGRAMS


def test_programs_do_not_keep_the_model_alive():
    f, theta, x = _pure_callable()
    nk.nntk(f, theta, x, sigma=0.3, samples=32, seed=0)
    assert f in programs._PROGRAMS
    ref = weakref.ref(f)
    del f
    gc.collect()
    assert ref() is None


def test_cache_is_bounded_per_model():
    f, theta, x = _pure_callable()
    for i in range(programs.PROGRAMS_PER_OWNER + 3):  # a new σ is a new program
        nk.nntk(f, theta, x, sigma=0.1 + 0.01 * i, samples=32, seed=0)
    assert len(programs._PROGRAMS[f]) <= programs.PROGRAMS_PER_OWNER


def test_networks_of_one_architecture_share_programs():
    model, theta, x = _setup(width=11)
    nk.nntk(model, theta, x, sigma=0.3, samples=32, seed=0)
    compiled = _compiled_versions(model)
    assert compiled >= 1 and model not in programs._PROGRAMS
    again, theta2, _ = _setup(width=11)  # rebuilt: same architecture, same programs
    k = nk.nntk(again, theta2 * 0.5, x, sigma=0.3, samples=32, seed=1)
    assert _compiled_versions(again) == compiled
    with jax.disable_jit():
        eager = nk.nntk(again, theta2 * 0.5, x, sigma=0.3, samples=32, seed=1)
    np.testing.assert_allclose(np.asarray(k), np.asarray(eager), rtol=1e-9, atol=1e-12)
    other, theta3, _ = _setup(width=12)
    nk.nntk(other, theta3, x, sigma=0.3, samples=32, seed=0)
    assert _compiled_versions(other) >= 1
    assert len(programs._SHARED) <= programs.SHARED_PROGRAMS


@pytest.mark.parametrize("reduction", ["auto", "none"])
def test_jit_of_the_public_function_still_works(reduction):
    model, theta, x = _setup()
    kw = {"sigma": 0.3, "samples": 64, "seed": 0, "variance_reduction": reduction}
    jitted = jax.jit(lambda th: nk.nntk(model, th, x, **kw))(theta)
    np.testing.assert_allclose(
        np.asarray(jitted), np.asarray(nk.nntk(model, theta, x, **kw)), rtol=1e-9, atol=1e-12
    )


def test_grad_through_nntk_still_works():
    model, theta, x = _setup()

    def loss(th):
        return jnp.sum(nk.nntk(model, th, x, sigma=0.3, samples=64, seed=0))

    g = jax.grad(loss)(theta)
    assert g.shape == theta.shape and bool(jnp.all(jnp.isfinite(g)))
    eps = 1e-6
    v = jnp.asarray(np.random.default_rng(0).normal(size=theta.shape))
    fd = (loss(theta + eps * v) - loss(theta - eps * v)) / (2 * eps)
    np.testing.assert_allclose(float(g @ v), float(fd), rtol=1e-4, atol=1e-8)


def test_nonlocal_grad_unchanged():
    # nonlocal_grad takes f(thetas), usually a fresh closure per call: it stays eager
    model, theta, x = _setup()

    def f(thetas):
        return model.apply(thetas, x)

    g = nk.nonlocal_grad(f, theta, sigma=0.3, samples=64, seed=0)
    with jax.disable_jit():
        g0 = nk.nonlocal_grad(f, theta, sigma=0.3, samples=64, seed=0)
    np.testing.assert_allclose(np.asarray(g), np.asarray(g0), rtol=1e-9, atol=1e-12)


def test_bad_inputs_fail_eagerly():
    model, theta, x = _setup()
    with pytest.raises(ValueError, match="NaN"):
        nk.nntk(model, theta, x.at[0, 0].set(jnp.nan), sigma=0.3, samples=32, seed=0)
    with pytest.raises(ValueError, match="NaN"):
        nk.nntk(model, theta.at[0].set(jnp.inf), x, sigma=0.3, samples=32, seed=0)
    with pytest.raises(ValueError, match="theta"):
        nk.nntk(model, theta[:-1], x, sigma=0.3, samples=32, seed=0)
    with pytest.raises(ValueError, match="x1"):
        nk.nntk(model, theta, x[:, :1], sigma=0.3, samples=32, seed=0)
    with pytest.raises(ValueError, match="seed"):
        nk.nntk(model, theta, x, sigma=0.3, samples=32, seed=-1)


def test_no_programs_outside_jax():
    model = nk.MLP(2, (8,), 1)
    theta = model.init(0, xp=np)
    x = np.ones((3, 2))
    nk.nntk(model, theta, x, sigma=0.3, samples=32, seed=0)
    assert model not in programs._PROGRAMS
    assert programs.program(("anything",), lambda owner: lambda a: a) is None
