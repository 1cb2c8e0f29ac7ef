"""Low-rank perturbations (``perturbation="lowrank"``): the estimate against its exact target.

(docs: Mathematics, 'Low-rank perturbations'.)

The one-hidden-layer target K_r has a closed form (``finite_width_nntk(..., rank=r)``), so the
estimate is compared with it entry by entry within ``Z`` of its own jackknife standard errors,
on every backend and both dtypes; for affine, quadratic and deep linear f the estimate is
unbiased for the local NTK at every σ. The Gram from factors and the MLP's factor forward are
compared with the dense perturbations they stand for.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from array_api_compat import array_namespace

import nntk_array as nk
from nntk_array._mc import lowrank
from nntk_array.testing import to_numpy, tol

Z = 5.0  # standard errors allowed per entry
# JAX compiles every primitive per shape and dtype in eager mode: its cases of the pieces
# below, and its float64 case of the closed-form test, run in the slow step
EAGER = ("numpy", "array_api_strict", "array_api_strict_no_float64", "torch")
NOT_ON_JAX = pytest.mark.slow_unless(backend=EAGER)


def _np(a: object) -> np.ndarray:
    return to_numpy(a).astype(np.float64)


def _within(k: object, se: object, truth: np.ndarray, dtype: object, z: float = Z) -> None:
    err = np.abs(_np(k) - truth)
    bound = z * _np(se) + tol(dtype, "contraction") * np.abs(truth).max()
    assert np.all(err <= bound), f"max err/bound {np.max(err / bound):.2f}"


def _inputs(n: int = 6, d: int = 4, seed: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1.0, 1.0, (n, d))


# --- the estimate against the closed form K_r -------------------------------------------


@NOT_ON_JAX
@pytest.mark.slow_unless(backend="jax", dtype="float32")
@pytest.mark.parametrize("rank", [1, pytest.param(4, marks=pytest.mark.slow)])
def test_matches_the_low_rank_closed_form(xp, dtype, make, rank):
    # a sign net without biases: the low-rank weights carry all pre-activation noise, so
    # K_r is far (~20 % at r = 1) from the Gaussian kernel and the test tells them apart
    model = nk.MLP(4, (32,), activation="sign", bias=False)
    theta, x = model.init(0, xp=np), _inputs()
    truth = nk.analytic.finite_width_nntk(model, theta, x, sigma=0.3, rank=rank)
    k, se = nk.nntk(
        model,
        make(theta),
        make(x),
        sigma=0.3,
        samples=1024,
        seed=3,
        perturbation="lowrank",
        rank=rank,
        return_stderr=True,
    )
    assert array_namespace(k) is array_namespace(make(x)) and k.dtype == dtype
    _within(k, se, truth, dtype)


def test_tells_the_low_rank_target_from_the_gaussian():
    model = nk.MLP(4, (32,), activation="sign", bias=False)
    theta, x = model.init(0, xp=np), _inputs()
    own = nk.analytic.finite_width_nntk(model, theta, x, sigma=0.1, rank=1)
    gauss = nk.analytic.finite_width_nntk(model, theta, x, sigma=0.1)  # 30 % away
    k, se = nk.nntk(
        model, theta, x, sigma=0.1, samples=4096, seed=1, perturbation="lowrank", rank=1,
        return_stderr=True,
    )  # fmt: skip
    upper = np.triu_indices(x.shape[0])

    def chi2(truth: np.ndarray) -> float:  # mean squared z-score over the distinct entries
        return float(np.mean(((k - truth) / se)[upper] ** 2))

    assert chi2(own) < 2.0 and chi2(gauss) > 4.0


@pytest.mark.parametrize("activation", ["relu", "erf"])
def test_other_activations_with_biases(activation):
    model = nk.MLP(4, (32,), 2, activation=activation)
    theta, x = model.init(1, xp=np), _inputs()
    truth = nk.analytic.finite_width_nntk(model, theta, x, sigma=0.3, rank=2)
    k, se = nk.nntk(
        model, theta, x, sigma=0.3, samples=1024, seed=4, perturbation="lowrank", rank=2,
        return_stderr=True,
    )  # fmt: skip
    _within(k, se, truth, np.float64)


@pytest.mark.parametrize(
    ("estimator", "sampling"), [("unbiased", "antithetic"), ("plugin", "iid"), ("sketch", "iid")]
)
def test_estimators_and_antithetic_pairs_on_an_affine_model(estimator, sampling):
    # affine f: every estimator's mean is known in closed form from the exact NTK
    model = nk.MLP(4, (), 1)
    theta, x = model.init(0, xp=np), _inputs()
    exact = nk.ntk(model, theta, x)
    k = nk.nntk(
        model, theta, x, sigma=0.5, samples=64, seed=0, perturbation="lowrank", rank=2,
        estimator=estimator, sampling=sampling,
    )  # fmt: skip
    if sampling == "antithetic" or estimator == "sketch":
        # mirrored pairs of an affine f give D = 2σ ∇f·u: the sketch's and the U-statistic's
        # errors are then those of the directions' second moments only
        assert np.allclose(np.diag(k), np.diag(exact), rtol=0.5)
    else:  # plug-in: mean (1 + (P + 1)/M)·Θ for iid Gaussian rows; finite, symmetric, PSD
        assert np.allclose(k, k.T) and np.linalg.eigvalsh(k).min() > -1e-8


# --- exactness for affine, quadratic and deep linear f -----------------------------------


class _Blocks:
    """A plain model that declares only its weight matrices (no factor forward)."""

    def __init__(self, fan_in: int, fan_out: int, kind: str) -> None:
        self.fan_in, self.fan_out, self.kind = fan_in, fan_out, kind
        self.num_params = fan_in * fan_out + fan_out
        self.matrix_blocks = ((0, fan_in, fan_out),)

    def apply(self, thetas: Any, x: Any) -> Any:
        xp = array_namespace(thetas, x)
        b = thetas.shape[0]
        w = xp.reshape(thetas[:, : self.fan_in * self.fan_out], (b, self.fan_in, self.fan_out))
        bias = thetas[:, None, self.fan_in * self.fan_out :]
        z = xp.matmul(x, w) / math.sqrt(self.fan_in) + bias  # (B, N, fan_out)
        if self.kind == "affine":
            return xp.sum(z, axis=2)
        return xp.sum(z * z, axis=2) / self.fan_out  # quadratic in θ


def _local(f: Any, theta: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The exact local NTK: the MLP's own, the plain model's from its Jacobian by hand."""
    if isinstance(f, nk.MLP):
        return np.asarray(nk.ntk(f, theta, x))
    fi, fo = f.fan_in, f.fan_out
    w, b = theta[: fi * fo].reshape(fi, fo), theta[fi * fo :]
    z = x @ w / math.sqrt(fi) + b  # (N, fan_out)
    dz = np.ones_like(z) if f.kind == "affine" else 2.0 * z / fo  # ∂f/∂z
    jac = np.concatenate(
        [(x[:, :, None] * dz[:, None, :]).reshape(len(x), -1) / math.sqrt(fi), dz], axis=1
    )
    return jac @ jac.T


@pytest.mark.parametrize("sigma", [0.1, 1.0])
@pytest.mark.parametrize("kind", ["affine", "quadratic", "deep-linear"])
def test_unbiased_for_the_local_ntk(kind, sigma):
    x = _inputs(5, 3)
    if kind == "deep-linear":
        f: Any = nk.MLP(3, (8, 8), 1, activation="identity")
        theta = f.init(0, xp=np)
    else:
        f = _Blocks(3, 6, kind)
        theta = np.random.default_rng(0).normal(size=f.num_params)
    exact = _local(f, theta, x)
    k, se = nk.nntk(
        f, theta, x, sigma=sigma, samples=2048, seed=5, perturbation="lowrank", rank=1,
        return_stderr=True,
    )  # fmt: skip
    _within(k, se, exact, np.float64)


# --- the closed form ---------------------------------------------------------------------


@pytest.mark.parametrize(("activation", "bias"), [("sign", False), ("relu", True), ("erf", True)])
def test_closed_form_tends_to_the_gaussian_like_one_over_r(activation, bias):
    model = nk.MLP(4, (64,), activation=activation, bias=bias)
    theta, x = model.init(0, xp=np), _inputs(8)
    gauss = nk.analytic.finite_width_nntk(model, theta, x, sigma=0.1)

    def bias_at(r: int) -> float:
        kr = nk.analytic.finite_width_nntk(model, theta, x, sigma=0.1, rank=r)
        return float(np.linalg.norm(kr - gauss) / np.linalg.norm(gauss))

    b64, b256 = bias_at(64), bias_at(256)
    assert 3.0 < b64 / b256 < 5.0  # ~1/r
    assert b256 < 1.0 / 256


# --- pieces against their dense equivalents ---------------------------------------------


def _factors(xp: Any, model: Any, m: int, rank: int, dtype: Any, device: Any) -> Any:
    blocks = tuple(nk.models.protocol.MatrixBlock(*b) for b in model.matrix_blocks)
    return lowrank.draw(xp, 0, m, blocks, model.num_params, rank, dtype, device)


@NOT_ON_JAX
@pytest.mark.parametrize("rank", [1, 3])
def test_gram_from_factors_is_the_dense_gram(xp, dtype, device, rank):
    xp = array_namespace(xp.empty(0))
    model = nk.MLP(3, (6, 5), 2)
    f = _factors(xp, model, 40, rank, dtype, device)
    u = _np(lowrank.materialize(xp, f.blocks, f.perturbation(0, 40, 1.0), model.num_params))
    dense = u @ u.T
    scale = np.abs(dense).max()
    for budget in (2**30, 256):  # the matrices themselves, then the factor products
        g = _np(lowrank.gram(xp, f, dtype, budget))
        assert np.abs(g - dense).max() <= tol(dtype, "contraction") * scale


@NOT_ON_JAX
@pytest.mark.parametrize(("d", "bias", "out"), [(1, True, 1), (5, False, 2), (5, True, 3)])
@pytest.mark.parametrize("product", [None, 600])
@pytest.mark.parametrize("activation", ["tanh", "relu"])  # assigned / written in place
def test_mlp_factor_forward_is_the_materialized_forward(
    xp, dtype, device, make, monkeypatch, d, bias, out, product, activation
):
    # product: bytes of a layer's outputs per block of sets; 600 makes blocks of 2 or 4 sets
    # (a ragged last one) where arrays can be written
    if product is not None:
        monkeypatch.setattr("nntk_array.models.mlp._SWEEP_PRODUCT", product)
    xp = array_namespace(xp.empty(0))
    model = nk.MLP(d, (7, 6), out, activation=activation, bias=bias)
    theta, x = make(model.init(0, xp=np)), make(_inputs(4, d))
    f = _factors(xp, model, 9, 2, dtype, device)
    h = f.perturbation(0, 9, 0.3)
    fast = _np(model.lowrank_apply(theta, x, h))
    thetas = theta[None, :] + lowrank.materialize(xp, f.blocks, h, model.num_params)
    slow = _np(model.apply(thetas, x))
    assert fast.shape == (9, 4, out)
    assert np.abs(fast - slow).max() <= tol(dtype, "contraction") * np.abs(slow).max()


def test_a_generic_model_gives_the_mlp_numbers():
    model = nk.MLP(3, (8,), 1, activation="relu")

    class Generic:  # the MLP's evaluation and matrices, without its factor forward
        num_params = model.num_params
        matrix_blocks = model.matrix_blocks

        def apply(self, thetas: Any, x: Any) -> Any:
            return model.apply(thetas, x)

    theta, x = model.init(0, xp=np), _inputs(5, 3)
    opts = {"sigma": 0.2, "samples": 50, "seed": 7, "perturbation": "lowrank", "rank": 3}
    k_mlp = nk.nntk(model, theta, x, **opts)
    k_gen = nk.nntk(Generic(), theta, x, samples_per_call=7, **opts)
    assert np.allclose(k_mlp, k_gen, rtol=1e-10, atol=1e-12)


def test_reproducible_and_auto_applies_no_reduction():
    model = nk.MLP(2, (8,), activation="sign")
    theta, x = model.init(0, xp=np), _inputs(4, 2)
    opts = {"sigma": 0.3, "samples": 40, "seed": 1, "perturbation": "lowrank"}
    k = nk.nntk(model, theta, x, **opts)
    assert np.array_equal(k, nk.nntk(model, theta, x, variance_reduction="none", **opts))
    spec = nk.nntk(
        model, theta, x, smoothing=nk.Smoothing(0.3, perturbation="lowrank", rank=4),
        samples=40, seed=1, samples_per_call=3,
    )  # fmt: skip
    assert np.allclose(k, spec, rtol=1e-12)


# --- refusals ----------------------------------------------------------------------------


def _call(**kw: Any) -> Any:
    model = nk.MLP(2, (4,))
    theta, x = model.init(0, xp=np), np.ones((3, 2))
    opts = {"sigma": 0.1, "samples": 8, "seed": 0, "perturbation": "lowrank", **kw}
    f = opts.pop("f", model)
    return nk.nntk(f, theta, x, **opts)


@pytest.mark.parametrize(
    ("kw", "error", "match"),
    [
        ({"perturbation": "sparse"}, ValueError, "perturbation"),
        ({"perturbation": "gaussian", "rank": 2}, ValueError, "rank"),
        ({"rank": 0}, ValueError, "rank"),
        ({"rank": 1.5}, TypeError, "rank"),
        ({"form": "paper"}, ValueError, "lowrank"),
        ({"sampling": "orthogonal"}, ValueError, "sampling"),
        ({"sampling": "qmc"}, ValueError, "sampling"),
        ({"estimator": "directional"}, ValueError, "estimator"),
        ({"variance_reduction": "readout"}, ValueError, "variance_reduction"),
        ({"route": "stream"}, ValueError, "route"),
        ({"attention": nk.Attention()}, ValueError, "attention"),
        ({"samples": np.ones((8, 17)), "seed": None}, ValueError, "samples"),
        ({"f": lambda t, x: x[None, :, 0] * t[:, :1]}, ValueError, "perturbation"),
    ],
)
def test_refusals(kw, error, match):
    with pytest.raises(error, match=match):
        _call(**kw)


def test_other_entry_points_refuse_low_rank():
    model = nk.MLP(2, (4,))
    theta, x = model.init(0, xp=np), np.ones((3, 2))
    with pytest.raises(ValueError, match="perturbation"):
        nk.nntk_features(
            model, theta, x, smoothing=nk.Smoothing(0.1, perturbation="lowrank"), samples=8
        )
    with pytest.raises(ValueError, match="perturbation"):
        nk.nonlocal_grad(
            lambda t: t[:, :1], theta, smoothing=nk.Smoothing(0.1, perturbation="lowrank"),
            samples=8,
        )  # fmt: skip
