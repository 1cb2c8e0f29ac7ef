"""Option specs, the Estimate result, renamed keywords and shared keyword meanings."""

from __future__ import annotations

import numpy as np
import pytest

import nntk_array as nk
from nntk_array.testing import to_numpy, tol

MODEL = nk.MLP(1, (8,), activation="tanh")


def _args(make):
    return make(MODEL.init(0, xp=np)), make(np.linspace(-1.0, 1.0, 5)[:, None])


def test_specs_give_the_keyword_results(make):
    theta, x = _args(make)
    loose = nk.nntk(
        MODEL,
        theta,
        x,
        sigma=0.2,
        form="paper",
        radial="ball",
        samples=64,
        seed=1,
        estimator="plugin",
        sampling="qmc",
        memory_budget=2**20,
        route="gram",
    )
    grouped = nk.nntk(
        MODEL,
        theta,
        x,
        samples=64,
        seed=1,
        smoothing=nk.Smoothing(0.2, form="paper", radial="ball"),
        estimator=nk.Estimator("plugin", sampling="qmc"),
        resources=nk.Resources(memory_budget=2**20, route="gram"),
    )
    np.testing.assert_array_equal(to_numpy(loose), to_numpy(grouped))


def test_estimate_unpacks_like_the_old_tuple(make):
    theta, x = _args(make)
    est = nk.nntk(MODEL, theta, x, sigma=0.2, samples=64, seed=1, return_stderr=True)
    assert isinstance(est, nk.Estimate) and est.samples == 64 and len(est) == 2
    k, se = est
    assert k is est.value and se is est.stderr and est[0] is k and est[1] is se
    # the value is the one without error bars (the contraction route may differ: rounding)
    rtol = tol(k.dtype, "contraction")
    np.testing.assert_allclose(
        to_numpy(k), to_numpy(nk.nntk(MODEL, theta, x, sigma=0.2, samples=64, seed=1)), rtol=rtol
    )
    g = nk.nonlocal_grad(
        lambda t: t[:, :3], theta, sigma=0.2, samples=40, seed=0, return_stderr=True
    )
    assert isinstance(g, nk.Estimate) and g.samples == 40 and g.value.shape == g.stderr.shape


def _native(xp, device):
    """A fresh native generator of the backend, in the same state each time."""
    if "torch" in xp.__name__:
        import torch

        return torch.Generator(device=device).manual_seed(3)
    if "jax" in xp.__name__:
        import jax

        return jax.random.key(3)
    return np.random.default_rng(3)


@pytest.mark.parametrize("function", ["nntk", "nonlocal_grad"])
@pytest.mark.parametrize("rename", ["rng", "batch_size", "fun"])
def test_renamed_keywords_warn_and_agree(make, xp, device, function, rename):
    theta, x = _args(make)

    def fun(t):
        return MODEL.apply(t, x)[..., 0]

    if function == "nntk" and rename == "fun":
        pytest.skip("nntk's model argument was always `f`")

    def call(**kw):
        if function == "nntk":
            return nk.nntk(MODEL, theta, x, sigma=0.2, samples=32, **kw)
        if "fun" not in kw:
            kw.setdefault("f", fun)
        return nk.nonlocal_grad(theta=theta, sigma=0.2, samples=32, **kw)

    old, new = {
        "rng": ({"rng": _native(xp, device)}, {"seed": _native(xp, device)}),
        "batch_size": ({"batch_size": 8, "seed": 0}, {"samples_per_call": 8, "seed": 0}),
        "fun": ({"fun": fun, "seed": 0}, {"f": fun, "seed": 0}),
    }[rename]
    with pytest.warns(DeprecationWarning, match=f"`{rename}` is deprecated"):
        before = call(**old)
    np.testing.assert_array_equal(to_numpy(before), to_numpy(call(**new)))


def test_analytic_smoothing_is_now_sigma():
    x = np.linspace(-1.0, 1.0, 4)[:, None]
    with pytest.warns(DeprecationWarning, match="`smoothing` is deprecated"):
        old = nk.analytic.ntk(x, activation="sign", smoothing=0.5)
    np.testing.assert_array_equal(old, nk.analytic.ntk(x, activation="sign", sigma=0.5))


def test_seed_takes_a_native_generator_as_in_mlp_init():
    theta, x = MODEL.init(0, xp=np), np.zeros((3, 1))
    a = nk.nntk(MODEL, theta, x, sigma=0.2, samples=16, seed=np.random.default_rng(7))
    b = nk.nntk(MODEL, theta, x, sigma=0.2, samples=16, seed=np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        (lambda: nk.Smoothing(0.1, scale="literal"), ValueError, "form='paper' only"),
        (lambda: nk.Smoothing(0.1, radial="ball"), ValueError, "form='paper' only"),
        (lambda: nk.Smoothing(-1.0), ValueError, "sigma"),
        (lambda: nk.Smoothing("0.1"), TypeError, "sigma"),
        (lambda: nk.Estimator("exact"), ValueError, "estimator"),
        (lambda: nk.Estimator(quadrature=1), ValueError, "quadrature"),
        (lambda: nk.Estimator(quadrature=2.0), TypeError, "quadrature"),
        (lambda: nk.Resources(memory_budget=0), ValueError, "memory_budget"),
        (lambda: nk.Resources(samples_per_call=1.5), TypeError, "samples_per_call"),
        (lambda: nk.Resources(route="fast"), ValueError, "route"),
    ],
)
def test_specs_validate_themselves(build, error, match):
    with pytest.raises(error, match=match):
        build()


def test_integer_checks_raise_type_errors_like_float_checks():
    with pytest.raises(TypeError, match="`in_features` must be a positive integer"):
        nk.MLP(1.0, (4,))
    with pytest.raises(TypeError, match="`weight_std` must be a real number"):
        nk.MLP(1, (4,), weight_std="1")
    with pytest.raises(ValueError, match="`in_features` must be a positive integer"):
        nk.MLP(0, (4,))
