"""nntk_array.interop.sklearn: the kernels equal nk.ntk / nk.nntk, and scikit-learn's
GaussianProcessRegressor, KernelRidge and SVR use them as their closed forms say."""

from __future__ import annotations

import numpy as np
import pytest

import nntk_array as nk
from nntk_array.interop import _kernel

pytest.importorskip("sklearn")
from sklearn.base import clone
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import ConstantKernel, WhiteKernel
from sklearn.kernel_ridge import KernelRidge
from sklearn.svm import SVR

from nntk_array.interop.sklearn import NNTKKernel, NTKKernel

pytestmark = pytest.mark.backend("numpy")

RNG = np.random.default_rng(0)
X = RNG.uniform(-1.0, 1.0, (30, 2))
X_TEST = RNG.uniform(-1.0, 1.0, (12, 2))
Y = np.sign(X[:, 0]) + 0.5 * X[:, 1]
OPTS = {"sigma": 0.3, "samples": 64, "seed": 3}


def sign_net(dtype: type = np.float64) -> tuple[nk.MLP, np.ndarray]:
    model = nk.MLP(2, (32,), activation="sign")
    return model, model.init(0, xp=np, dtype=dtype)


def posterior_mean(k_train: np.ndarray, k_test: np.ndarray, noise: float) -> np.ndarray:
    """K*ᵀ (K + noise I)⁻¹ y."""
    return k_test @ np.linalg.solve(k_train + noise * np.eye(len(k_train)), Y)


def solve_rtol(k_train: np.ndarray, noise: float) -> float:
    """A backward-stable solve's relative accuracy: cond(K + noise I) N eps."""
    return np.linalg.cond(k_train + noise * np.eye(len(k_train))) * len(k_train) * 1e-16


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ntk_kernel_is_nk_ntk(dtype):
    model = nk.MLP(2, (32,))
    theta = model.init(0, xp=np, dtype=dtype)
    kernel = NTKKernel(model, theta)
    k = kernel(X)
    assert k.dtype == np.float64 and k.shape == (30, 30)
    x, x_test = X.astype(dtype), X_TEST.astype(dtype)
    np.testing.assert_array_equal(k, nk.ntk(model, theta, x))
    np.testing.assert_array_equal(kernel(X_TEST, X), nk.ntk(model, theta, x_test, x))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("estimator", ["unbiased", "sketch", nk.Estimator("plugin", "antithetic")])
def test_nntk_kernel_is_nk_nntk_with_the_same_seed(dtype, estimator):
    model, theta = sign_net(dtype)
    kernel = NNTKKernel(model, theta, estimator=estimator, **OPTS)
    x, x_test = X.astype(dtype), X_TEST.astype(dtype)
    want = nk.nntk(model, theta, x, estimator=estimator, **OPTS)
    np.testing.assert_array_equal(kernel(X), want)
    # The cross block of a separate call is the block of one estimate on all the inputs:
    # the same seed draws the same perturbations (equal up to the contraction's rounding).
    both = nk.nntk(model, theta, np.concatenate([x_test, x]), estimator=estimator, **OPTS)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    scale = np.abs(both).max()
    np.testing.assert_allclose(kernel(X_TEST, X), both[:12, 12:], rtol=rtol, atol=rtol * scale)
    np.testing.assert_allclose(kernel(X), both[12:, 12:], rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize("make", ["ntk", "nntk"])
def test_diag_in_blocks_is_the_diagonal(make, monkeypatch):
    monkeypatch.setattr(_kernel, "DIAG_ROWS", 7)  # five blocks, the last one short
    model, theta = sign_net()
    kernel = NTKKernel(model, theta) if make == "ntk" else NNTKKernel(model, theta, **OPTS)
    d = kernel.diag(X)
    assert d.shape == (30,) and d.dtype == np.float64
    np.testing.assert_allclose(d, np.diag(kernel(X)), rtol=1e-12)


def test_no_hyperparameters_and_an_empty_gradient():
    model, theta = sign_net()
    kernel = NNTKKernel(model, theta, **OPTS)
    assert kernel.n_dims == 0 and kernel.hyperparameters == []
    assert not kernel.is_stationary() and kernel.requires_vector_input
    k, grad = kernel(X, eval_gradient=True)
    np.testing.assert_array_equal(k, kernel(X))
    assert grad.shape == (30, 30, 0)
    with pytest.raises(ValueError, match="Y is None"):
        kernel(X, X_TEST, eval_gradient=True)


def test_clone_and_get_params_round_trip():
    model, theta = sign_net()
    kernel = NNTKKernel(model, theta, estimator="sketch", **OPTS)
    params = kernel.get_params()
    assert set(params) == {
        "model",
        "params",
        "sigma",
        "samples",
        "seed",
        "estimator",
        "smoothing",
        "resources",
    }
    copy = clone(kernel)
    assert copy is not kernel and copy.get_params()["seed"] == 3
    np.testing.assert_array_equal(copy(X), kernel(X))
    other = clone(kernel).set_params(seed=4)
    assert not np.array_equal(other(X), kernel(X))
    assert repr(kernel).startswith("NNTKKernel(model=MLP, params=<float64 array>, sigma=0.3")


def test_gaussian_process_mean_is_the_closed_form():
    model, theta = sign_net()
    kernel = NNTKKernel(model, theta, estimator="sketch", **OPTS)
    noise = 1e-2
    gp = GaussianProcessRegressor(kernel, alpha=noise).fit(X, Y)
    want = posterior_mean(kernel(X), kernel(X_TEST, X), noise)
    rtol = solve_rtol(kernel(X), noise)
    np.testing.assert_allclose(gp.predict(X_TEST), want, rtol=rtol, atol=rtol * np.abs(want).max())


def test_gaussian_process_fits_the_kernels_around_it():
    # The optimizer fits the amplitude and the white noise; the network kernel is fixed.
    model = nk.MLP(2, (32,))
    kernel = ConstantKernel(1.0, (1e-2, 1e2)) * NTKKernel(model, model.init(0, xp=np))
    kernel = kernel + WhiteKernel(1e-2, (1e-5, 1.0))
    gp = GaussianProcessRegressor(kernel, random_state=0).fit(X, Y)
    fitted = gp.kernel_
    amplitude, noise = fitted.k1.k1.constant_value, fitted.k2.noise_level
    k_train = amplitude * fitted.k1.k2(X)
    noise_total = noise + gp.alpha
    want = posterior_mean(k_train, amplitude * fitted.k1.k2(X_TEST, X), noise_total)
    rtol = solve_rtol(k_train, noise_total)
    np.testing.assert_allclose(gp.predict(X_TEST), want, rtol=rtol, atol=rtol * np.abs(want).max())


def test_kernel_ridge_is_the_closed_form():
    model = nk.MLP(2, (32,))
    kernel = NTKKernel(model, model.init(0, xp=np))
    ridge = KernelRidge(alpha=1e-3, kernel=kernel).fit(X, Y)
    want = posterior_mean(kernel(X), kernel(X_TEST, X), 1e-3)
    rtol = solve_rtol(kernel(X), 1e-3)
    np.testing.assert_allclose(
        ridge.predict(X_TEST), want, rtol=rtol, atol=rtol * np.abs(want).max()
    )


def test_svr_equals_svr_on_the_precomputed_kernel():
    model, theta = sign_net()
    kernel = NNTKKernel(model, theta, estimator="sketch", **OPTS)
    svr = SVR(kernel=kernel).fit(X, Y)
    pre = SVR(kernel="precomputed").fit(kernel(X), Y)
    np.testing.assert_allclose(svr.predict(X_TEST), pre.predict(kernel(X_TEST, X)), rtol=1e-12)


@pytest.mark.backend("torch")
def test_torch_model_in_a_gaussian_process():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    model = nk.from_torch(net)
    kernel = NTKKernel(model, model.theta0)  # float32: inputs are cast to it
    want = nk.ntk(model, model.theta0, torch.asarray(X, dtype=torch.float32))
    np.testing.assert_array_equal(kernel(X), want.numpy())
    gp = GaussianProcessRegressor(kernel, alpha=1e-2).fit(X, Y)  # clones (deep-copies) the net
    expected = posterior_mean(kernel(X), kernel(X_TEST, X), 1e-2)
    np.testing.assert_allclose(gp.predict(X_TEST), expected, rtol=1e-8, atol=1e-8)


def test_bad_arguments_are_named():
    model, theta = sign_net()
    with pytest.raises(TypeError, match="`model`"):
        NTKKernel("mlp", theta)
    with pytest.raises(TypeError, match="`params`"):
        NTKKernel(model, list(theta))
    with pytest.raises(ValueError, match="`params`"):
        NTKKernel(model, theta[None, :])
    with pytest.raises(ValueError, match="`params`"):
        NTKKernel(model, theta[:-1])
    with pytest.raises(TypeError, match="`seed`"):
        NNTKKernel(model, theta, sigma=0.3, samples=8, seed=None)
    with pytest.raises(TypeError, match="`seed`"):
        NNTKKernel(model, theta, sigma=0.3, samples=8, seed=np.random.default_rng(0))
    with pytest.raises(ValueError, match="`seed`"):
        NNTKKernel(model, theta, sigma=0.3, samples=8, seed=-1)
    with pytest.raises(TypeError, match="`sigma`"):
        NNTKKernel(model, theta, samples=8)
    with pytest.raises(ValueError, match="`sigma`"):
        NNTKKernel(model, theta, sigma=-1.0, samples=8)
    with pytest.raises(ValueError, match="`samples`"):
        NNTKKernel(model, theta, sigma=0.3, samples=0)
    with pytest.raises(ValueError, match="`estimator`"):
        NNTKKernel(model, theta, sigma=0.3, samples=8, estimator="exact")
    kernel = NTKKernel(model, theta)
    with pytest.raises(ValueError, match="`X`"):
        kernel(X[:, 0])
    with pytest.raises(TypeError, match="`X`"):
        kernel(X.astype(np.complex128))
    with pytest.raises(ValueError, match="`Y`"):
        kernel(X, X_TEST[:, 0])
    with pytest.raises(ValueError, match="`x2`"):  # the model names what it checks
        kernel(X, np.ones((3, 5)))
