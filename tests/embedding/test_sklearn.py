"""Use an NNTK in scikit-learn: KernelRidge, SVR and GaussianProcessRegressor.

scikit-learn's kernel methods accept a precomputed Gram matrix: fit on K(train, train) and
predict from K(test, train). Compute both blocks in *one* call of ``nk.nntk`` on the train
and test points together, so that every entry shares the same random parameter
perturbations, then slice.

The network here has sign activations, whose derivative is zero: its local NTK sees only the
output layer, while the nonlocal NTK also sees the first layer through parameter
perturbations. scikit-learn's solvers assume a positive semidefinite kernel, so the NNTK uses
``estimator="sketch"``, which is PSD by construction (the default ``"unbiased"`` estimator is
not). Kernels are divided by their mean train diagonal tr(K)/N, so the same hyperparameters
mean the same for both kernels.

GaussianProcessRegressor takes a ``Kernel`` object rather than a matrix; ``PrecomputedKernel``
below wraps a Gram matrix and lets the "inputs" be row indices into it.
"""

from __future__ import annotations

import numpy as np
import pytest

import nntk_array as nk

pytest.importorskip("sklearn")
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import ConstantKernel, Kernel
from sklearn.kernel_ridge import KernelRidge
from sklearn.svm import SVR

pytestmark = pytest.mark.backend("numpy")

X_TRAIN = np.linspace(-1.0, 1.0, 40)[:, None]
X_TEST = np.linspace(-1.0, 1.0, 201)[:, None]
N = len(X_TRAIN)


def sawtooth(x: np.ndarray) -> np.ndarray:
    """Period 1/2, amplitude 1: jumps at ±0.25 and ±0.75 in [-1, 1]."""
    return 2.0 * (2.0 * x - np.floor(2.0 * x + 0.5))


@pytest.fixture(scope="module")
def kernels() -> dict[str, np.ndarray]:
    """Local NTK and NNTK of one sign network on the train points followed by the test points."""
    model = nk.MLP(1, (256,), 1, activation="sign")
    theta = model.init(0, xp=np, dtype=np.float64)
    x = np.concatenate([X_TRAIN, X_TEST])
    local = nk.ntk(model, theta, x)
    nonlocal_ = nk.nntk(model, theta, x, sigma=0.3, samples=1024, seed=0, estimator="sketch")
    return {
        name: k / (np.trace(k[:N, :N]) / N) for name, k in [("local", local), ("NNTK", nonlocal_)]
    }


def solve_tolerance(k_train: np.ndarray, alpha: float) -> float:
    """Relative accuracy of a backward-stable solve with K + alpha I: cond(K + alpha I) N eps."""
    return np.linalg.cond(k_train + alpha * np.eye(N)) * N * np.finfo(np.float64).eps


def test_kernel_ridge_equals_kernel_regression(kernels):
    k = kernels["NNTK"]
    k_train, k_test = k[:N, :N], k[N:, :N]
    y_train = np.sign(X_TRAIN[:, 0])
    ridge = 1e-3  # nk.kernel_regression's ridge is relative to tr(K)/N; sklearn's alpha is not
    alpha = ridge * np.trace(k_train) / N

    model = KernelRidge(alpha=alpha, kernel="precomputed").fit(k_train, y_train)

    _, expected = nk.kernel_regression(k_train, y_train, k_test, ridge=ridge)
    rtol = solve_tolerance(k_train, alpha)
    np.testing.assert_allclose(
        model.predict(k_test), expected, rtol=rtol, atol=rtol * np.max(np.abs(expected))
    )


@pytest.mark.parametrize("target", [np.sign, sawtooth])
def test_svr_with_nntk_beats_local_ntk_of_a_sign_network(kernels, target):
    y_train, y_test = target(X_TRAIN[:, 0]), target(X_TEST[:, 0])
    test_mse = {}
    for name, k in kernels.items():
        # scikit-learn's defaults C=1, epsilon=0.1: the same for both unit-scale kernels
        svr = SVR(kernel="precomputed")
        svr.fit(k[:N, :N], y_train)
        test_mse[name] = np.mean((svr.predict(k[N:, :N]) - y_test) ** 2)
    assert test_mse["NNTK"] < test_mse["local"], test_mse


class PrecomputedKernel(Kernel):
    """A fixed Gram matrix as a scikit-learn kernel; inputs are row indices, shape (n, 1)."""

    def __init__(self, gram: np.ndarray):
        self.gram = gram

    def __call__(self, X, Y=None, eval_gradient=False):
        rows = X[:, 0].astype(int)
        cols = rows if Y is None else Y[:, 0].astype(int)
        k = self.gram[np.ix_(rows, cols)]
        if eval_gradient:  # no hyperparameters of its own: an empty gradient
            return k, np.empty((*k.shape, 0))
        return k

    def diag(self, X):
        rows = X[:, 0].astype(int)
        return self.gram[rows, rows]

    def is_stationary(self):
        return False


def test_gaussian_process_regression_with_an_nntk(kernels):
    k = kernels["NNTK"]
    index = np.arange(len(k), dtype=np.float64)[:, None]  # "input" i is row i of k
    noise = 0.1  # known noise level of the targets
    rng = np.random.default_rng(1)
    y_train = np.sign(X_TRAIN[:, 0]) + noise * rng.standard_normal(N)
    y_test = np.sign(X_TEST[:, 0]) + noise * rng.standard_normal(len(X_TEST))

    # The amplitude is fitted by maximum marginal likelihood; the noise variance is `alpha`.
    kernel = ConstantKernel(1.0, (1e-2, 1e2)) * PrecomputedKernel(k)
    gp = GaussianProcessRegressor(kernel, alpha=noise**2).fit(index[:N], y_train)
    mean, std = gp.predict(index[N:], return_std=True)

    # The posterior mean is kernel ridge regression with the fitted kernel, ridge = noise².
    fitted = gp.kernel_.k1.constant_value * k
    k_train, k_test = fitted[:N, :N], fitted[N:, :N]
    ridge = noise**2 / (np.trace(k_train) / N)
    _, expected = nk.kernel_regression(k_train, y_train, k_test, ridge=ridge)
    rtol = solve_tolerance(k_train, noise**2)
    np.testing.assert_allclose(mean, expected, rtol=rtol, atol=rtol * np.max(np.abs(expected)))

    # Calibrated predictive intervals: if they were exact, the number of new noisy targets
    # within two predictive standard deviations would be Binomial(201, 0.954); allow three
    # standard deviations of that fraction below its mean.
    inside = np.abs(y_test - mean) <= 2.0 * np.sqrt(std**2 + noise**2)
    nominal = 0.954
    assert inside.mean() >= nominal - 3.0 * np.sqrt(nominal * (1 - nominal) / len(y_test))
