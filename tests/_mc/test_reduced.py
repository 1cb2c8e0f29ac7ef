"""The variance-reduced NNTK estimators against the closed-form Gaussian NNTK.

(docs: Mathematics, 'Variance reduction'.)

Each reduction keeps the estimand, so every option is compared with the exact smoothed
kernel of a one-hidden-layer network, entry by entry within ``Z`` of its own jackknife
standard errors (their calibration: the slow coverage test below), on every backend and
both dtypes; deeper nets are compared with the plain estimator, which is unbiased too.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import nntk_array as nk
from nntk_array.testing import to_numpy, tol

from .._reference import smoothed_one_hidden_ntk

Z = 5.0  # standard errors allowed per entry
SIGMA = 0.3
REDUCTIONS = [("readout",), ("readout", "units"), ("jvp",), ("jvp", "readout", "units")]
ALL_ON_NUMPY = pytest.mark.slow_unless(backend="numpy")


def _np(a: object) -> np.ndarray:
    return to_numpy(a).astype(np.float64)


def _net(activation: str, width: int = 32, seed: int = 0) -> tuple[nk.MLP, np.ndarray]:
    model = nk.MLP(1, (width,), 1, activation=activation)
    return model, model.init(seed, xp=np)


def _grid(n: int = 8) -> np.ndarray:
    return np.linspace(-1.0, 1.0, n)[:, None]


def _within(k: object, se: object, truth: np.ndarray, dtype: object) -> None:
    err = np.abs(_np(k) - truth)
    bound = Z * _np(se) + tol(dtype, "contraction") * np.abs(truth).max()
    assert np.all(err <= bound), f"max err/bound {np.max(err / bound):.2f}"


@pytest.mark.parametrize("activation", ["relu", "sign", "erf"])
def test_auto_matches_the_closed_form(xp, dtype, make, activation):
    model, theta = _net(activation)
    x = _grid()
    truth = smoothed_one_hidden_ntk(model, theta, x, x, SIGMA)
    k, se = nk.nntk(
        model, make(theta), make(x), sigma=SIGMA, samples=1024, seed=1, return_stderr=True
    )
    _within(k, se, truth, dtype)


@ALL_ON_NUMPY
@pytest.mark.parametrize("reduction", REDUCTIONS, ids="+".join)
@pytest.mark.parametrize("sampling", ["iid", "antithetic"])
@pytest.mark.parametrize("activation", ["relu", "sign", "erf"])
def test_every_reduction_matches_the_closed_form(xp, make, activation, sampling, reduction):
    model, theta = _net(activation)
    x1, x2 = _grid(6), np.linspace(-0.9, 0.7, 5)[:, None]
    truth = smoothed_one_hidden_ntk(model, theta, x1, x2, SIGMA)
    dtype = make(theta).dtype
    k, se = nk.nntk(
        model,
        make(theta),
        make(x1),
        make(x2),
        sigma=SIGMA,
        samples=512,
        seed=2,
        sampling=sampling,
        variance_reduction=reduction,
        return_stderr=True,
    )
    _within(k, se, truth, dtype)


def test_reductions_lower_the_error_where_the_docs_say():
    """The reductions lower the centred mean squared error by large factors, here at a size
    the test suite affords (N = 16, width 64, M = 512, six seeds; measured 68x for readout
    and units and 174x with the control variate on ReLU, 21x on the sign net); the bounds
    are a third of that, the seeds fixed."""
    x = _grid(16)
    c = np.eye(16) - 1.0 / 16

    def centred_mse(model, theta, reduction) -> float:
        truth = smoothed_one_hidden_ntk(model, theta, x, x, SIGMA)
        errs = [
            nk.nntk(model, theta, x, sigma=SIGMA, samples=512, seed=s, variance_reduction=reduction)
            - truth
            for s in range(6)
        ]
        return float(np.mean([np.linalg.norm(c @ e @ c) ** 2 for e in errs]))

    relu, theta = _net("relu", width=64)
    plain = centred_mse(relu, theta, "none")
    assert plain / centred_mse(relu, theta, ("readout", "units")) > 20
    assert plain / centred_mse(relu, theta, "auto") > 55
    sign, theta = _net("sign", width=64)
    assert centred_mse(sign, theta, "none") / centred_mse(sign, theta, "auto") > 7


@ALL_ON_NUMPY
@pytest.mark.parametrize("activation", ["relu", "sign"])
def test_deep_networks_agree_with_the_plain_estimator(xp, make, activation):
    """No closed form at depth 2: both estimators are unbiased, so their difference is
    within Z combined standard errors."""
    model = nk.MLP(2, (12, 10), 2, activation=activation)
    theta = model.init(3, xp=np)
    x = np.random.default_rng(0).uniform(-1.0, 1.0, (6, 2))
    args = (model, make(theta), make(x))
    kw = {"sigma": SIGMA, "seed": 4, "return_stderr": True}
    ka, sa = nk.nntk(*args, samples=1024, **kw)
    kn, sn = nk.nntk(*args, samples=8192, variance_reduction="none", **kw)
    bound = Z * np.sqrt(_np(sa) ** 2 + _np(sn) ** 2) + 1e-4 * np.abs(_np(kn)).max()
    assert np.all(np.abs(_np(ka) - _np(kn)) <= bound)


@pytest.mark.parametrize("sampling", ["iid", "antithetic"])
@pytest.mark.parametrize(("activation", "bias"), [("relu", True), ("sign", False)])
def test_sums_by_breakpoints_equal_the_layer_pass(
    xp, make, dtype, monkeypatch, activation, bias, sampling
):
    # from 32 inputs a first hidden layer of one input sums its units by their breakpoints
    from nntk_array.models import piecewise

    def kernel():  # a fresh model: JAX compiles its programs once per model
        model = nk.MLP(1, (16,), 1, activation=activation, bias=bias)
        theta = make(model.init(0, xp=np))
        x = make(np.linspace(-1.0, 1.0, 40)[:, None])
        return _np(nk.nntk(model, theta, x, sigma=SIGMA, samples=256, seed=2, sampling=sampling))

    by_breakpoints = kernel()
    monkeypatch.setattr(piecewise, "MIN_INPUTS", 10**9)
    layers = kernel()
    scale = np.abs(layers).max()
    atol = tol(dtype, "contraction") * scale
    np.testing.assert_allclose(by_breakpoints, layers, rtol=0, atol=atol)


def test_a_hidden_pass_of_its_own_is_not_summed_by_breakpoints(monkeypatch):
    # the study's noisy network adds noise to its pre-activations in its hidden pass: the
    # breakpoints of the noiseless units would estimate the noiseless network's kernel
    from nntk_array.models import piecewise
    from nntk_array.study import NoisyMLP

    def refused(*args, **kwargs):
        raise AssertionError("summed by breakpoints")

    monkeypatch.setattr(piecewise, "line_sums", refused)
    model = NoisyMLP(1, 16, seed=0)
    x = np.linspace(-1.0, 1.0, 40)[:, None]
    k = nk.nntk(model, model.init(0, xp=np), x, sigma=SIGMA, samples=64, seed=2)
    assert k.shape == (40, 40)


def test_the_value_does_not_depend_on_stderr_or_chunking():
    model, theta = _net("relu")
    x = _grid()
    k = nk.nntk(model, theta, x, sigma=SIGMA, samples=300, seed=5)
    k2, _ = nk.nntk(
        model, theta, x, sigma=SIGMA, samples=300, seed=5, return_stderr=True, samples_per_call=7
    )
    np.testing.assert_allclose(k2, k, rtol=1e-12, atol=1e-12)


def test_explicit_samples_give_the_same_kernel_on_every_backend(xp, make):
    model, theta = _net("relu", width=8)
    x = _grid(4)
    u = np.random.default_rng(6).standard_normal((64, model.num_params))
    ref = nk.nntk(model, theta, x, sigma=SIGMA, samples=u)
    k = nk.nntk(model, make(theta), make(x), sigma=SIGMA, samples=make(u))
    np.testing.assert_allclose(_np(k), ref, rtol=tol(make(theta).dtype, "contraction") * 10)


def test_outputs_and_the_full_block():
    model = nk.MLP(1, (16,), 3)
    theta = model.init(0, xp=np)
    x = _grid(5)
    one = nk.MLP(1, (16,), 1)
    k1 = nk.nntk(one, one.init(0, xp=np), x, sigma=SIGMA, samples=64, seed=0, outputs="full")
    assert k1.shape == (5, 5, 1, 1)
    full = nk.nntk(model, theta, x, sigma=SIGMA, samples=64, seed=0, outputs="full")
    plain = nk.nntk(
        model, theta, x, sigma=SIGMA, samples=64, seed=0, outputs="full", variance_reduction="none"
    )
    np.testing.assert_array_equal(full, plain)  # several outputs in full: no reduction


def test_torch_models_use_the_autodiff_control_variate():
    """A PyTorch module's control variate (torch.func JVPs and Jacobians) equals the
    structured one of the same network as an nk.MLP, for the same explicit directions
    (for one input and one output both flatten θ in the same order)."""
    torch = pytest.importorskip("torch")
    model = nk.MLP(1, (16,), 1, parameterization="standard")
    theta = model.init(0, xp=np)
    net = torch.nn.Sequential(torch.nn.Linear(1, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    net = net.double()
    torch.nn.utils.vector_to_parameters(torch.from_numpy(theta), net.parameters())
    f = nk.from_torch(net)
    x = _grid(6)
    u = np.random.default_rng(7).standard_normal((256, model.num_params))
    kw = {"sigma": SIGMA, "variance_reduction": "jvp"}
    kt = nk.nntk(f, f.theta0, torch.from_numpy(x), samples=torch.from_numpy(u), **kw)
    km = nk.nntk(model, theta, x, samples=u, **kw)
    np.testing.assert_allclose(kt.numpy(), km, rtol=1e-10, atol=1e-12)
    auto = nk.nntk(f, f.theta0, torch.from_numpy(x), sigma=SIGMA, samples=torch.from_numpy(u))
    np.testing.assert_array_equal(auto.numpy(), kt.numpy())


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"variance_reduction": "fast"}, ValueError, "variance_reduction"),
        ({"variance_reduction": 3}, TypeError, "variance_reduction"),
        ({"variance_reduction": ("units",)}, ValueError, "needs 'readout'"),
        ({"variance_reduction": "jvp", "estimator": "plugin"}, ValueError, "estimator='unbiased'"),
        ({"variance_reduction": "readout", "sampling": "orthogonal"}, ValueError, "sampling"),
        ({"variance_reduction": "readout", "form": "paper"}, ValueError, "form='gaussian'"),
        (
            {"variance_reduction": "readout", "attention": nk.Attention(temperature=1.0)},
            ValueError,
            "attention",
        ),
        ({"variance_reduction": "readout", "memory_budget": 2**12}, ValueError, "memory_budget"),
    ],
)
def test_bad_reductions_are_refused(kwargs, error, match):
    model, theta = _net("relu")
    with pytest.raises(error, match=match):
        nk.nntk(model, theta, _grid(), sigma=SIGMA, samples=64, seed=0, **kwargs)


def test_models_without_the_structure_are_refused():
    def f(thetas, x):
        return thetas[:, :1] * x[:, 0][None, :]

    theta, x = np.ones(3), _grid(4)
    with pytest.raises(ValueError, match="last hidden layer"):
        nk.nntk(f, theta, x, sigma=0.1, samples=8, variance_reduction="readout")
    with pytest.raises(ValueError, match="Jacobian-vector products"):
        nk.nntk(f, theta, x, sigma=0.1, samples=8, variance_reduction="jvp")
    # "auto" applies nothing to a plain callable on NumPy: the plain estimator
    np.testing.assert_array_equal(
        nk.nntk(f, theta, x, sigma=0.1, samples=8, seed=0),
        nk.nntk(f, theta, x, sigma=0.1, samples=8, seed=0, variance_reduction="none"),
    )


def test_auto_falls_back_when_the_sums_do_not_fit():
    model, theta = _net("relu")
    x = _grid()
    small = {"sigma": SIGMA, "samples": 64, "seed": 0, "memory_budget": 2**14}
    np.testing.assert_array_equal(
        nk.nntk(model, theta, x, **small),
        nk.nntk(model, theta, x, variance_reduction="none", **small),
    )


@pytest.mark.slow
@pytest.mark.parametrize("reduction", [*REDUCTIONS, ()], ids=lambda r: "+".join(r) or "none")
@pytest.mark.parametrize("activation", ["relu", "sign", "erf"])
def test_standard_errors_cover_the_closed_form(activation, reduction):
    """Over 100 seeds the truth lies within ±t·se (t the 95% quantile of Student's t with
    19 degrees of freedom, the jackknife's) for 95% of the entries, within binomial error
    (3 standard deviations of the coverage of 100·36 correlated entries, taken as 100)."""
    model, theta = _net(activation, width=16)
    x = _grid(6)
    truth = smoothed_one_hidden_ntk(model, theta, x, x, SIGMA)
    t = 2.093
    inside = []
    for seed in range(100):
        k, se = nk.nntk(
            model,
            theta,
            x,
            sigma=SIGMA,
            samples=400,
            seed=seed,
            variance_reduction=reduction or "none",
            return_stderr=True,
        )
        inside.append(np.abs(k - truth) <= t * se)
    coverage = float(np.mean(inside))
    assert abs(coverage - 0.95) <= 3 * math.sqrt(0.95 * 0.05 / 100)
