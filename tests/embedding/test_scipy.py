"""Use an NNTK with SciPy's linear algebra: Cholesky solves, eigendecompositions, expm.

``nk.nntk`` on NumPy inputs returns a NumPy array, so every ``scipy.linalg`` routine applies
directly. The examples solve kernel ridge regression with ``cho_factor``/``cho_solve``, look
at the spectrum of the default (``"unbiased"``) estimate, which is not positive semidefinite,
with ``eigh``, and integrate linearized gradient flow with ``expm``; each is checked against
the library's own ``nk.kernel_regression`` and ``nk.gradient_flow``.
"""

from __future__ import annotations

import numpy as np
import pytest

import nntk_array as nk

pytest.importorskip("scipy")
from scipy import linalg

pytestmark = pytest.mark.backend("numpy")

X = np.linspace(-1.0, 1.0, 48)[:, None]  # the first N points train, the rest test
N = 32
EPS = np.finfo(np.float64).eps


@pytest.fixture(scope="module")
def model_and_theta() -> tuple[nk.MLP, np.ndarray]:
    model = nk.MLP(1, (256,), 1, activation="sign")
    return model, model.init(0, xp=np, dtype=np.float64)


def test_cholesky_solve_equals_kernel_regression(model_and_theta):
    model, theta = model_and_theta
    k = nk.nntk(model, theta, X, sigma=0.3, samples=1024, seed=0, estimator="sketch")  # PSD
    k_train, k_test = k[:N, :N], k[N:, :N]
    y = np.sign(X[:N, 0])
    ridge = 1e-3
    lam = ridge * np.trace(k_train) / N  # nk's ridge is relative to the kernel's scale

    factor = linalg.cho_factor(k_train + lam * np.eye(N))
    prediction = k_test @ linalg.cho_solve(factor, y)

    _, expected = nk.kernel_regression(k_train, y, k_test, ridge=ridge)
    # two backward-stable solves differ by at most about cond(K + lam I) N eps
    rtol = np.linalg.cond(k_train + lam * np.eye(N)) * N * EPS
    np.testing.assert_allclose(prediction, expected, rtol=rtol, atol=rtol * np.abs(expected).max())


def test_unbiased_estimate_spectrum_and_clipping(model_and_theta):
    model, theta = model_and_theta
    k, stderr = nk.nntk(model, theta, X, sigma=0.3, samples=1024, seed=0, return_stderr=True)
    k_train, k_test = k[:N, :N], k[N:, :N]
    values, vectors = linalg.eigh(k_train)

    # The U-statistic is unbiased for a PSD kernel but not PSD itself. By Weyl's inequality
    # its smallest eigenvalue is at least -|error|_2 >= -|error|_F, and the jackknife standard
    # errors estimate |error|_F: negative eigenvalues are Monte Carlo noise, no larger.
    assert values[0] >= -np.linalg.norm(stderr[:N, :N])
    assert values[-1] > 0

    # Clipping the negative eigenvalues before solving is what psd=True does.
    y = np.sign(X[:N, 0])
    ridge = 1e-2
    lam = ridge * np.trace(k_train) / N
    clipped = np.maximum(values, 0.0)
    alpha = vectors @ ((vectors.T @ y) / (clipped + lam))
    _, expected = nk.kernel_regression(k_train, y, k_test, ridge=ridge, psd=True)
    rtol = (clipped[-1] + lam) / lam * N * EPS  # condition number of the clipped K + lam I
    np.testing.assert_allclose(
        k_test @ alpha, expected, rtol=rtol, atol=rtol * np.abs(expected).max()
    )


def test_gradient_flow_with_expm(model_and_theta):
    model, theta = model_and_theta
    k = nk.nntk(model, theta, X[:N], sigma=0.3, samples=1024, seed=0, estimator="sketch")
    y = np.sign(X[:N, 0])
    scale = np.trace(k) / N
    times = np.array([0.1, 1.0, 10.0]) / scale  # in units of the kernel's scale

    # Linearized gradient flow on ½|f - y|² from f = 0: f(t) = (I - exp(-t K)) y.
    by_expm = np.stack([y - linalg.expm(-t * k) @ y for t in times])
    by_eigh, _ = nk.gradient_flow(k, y, t=times)

    residual = np.linalg.norm(y - by_expm, axis=1)  # |exp(-tK) y| shrinks as t grows
    assert residual[0] > residual[1] > residual[2]
    # Both are backward stable in K; exp(-tK) moves by at most t |dK| for PSD K.
    atol = N * EPS * np.linalg.norm(k, 2) * times[:, None] * np.abs(y).max()
    assert np.all(np.abs(by_expm - by_eigh) <= atol)
