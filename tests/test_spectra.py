"""Kernel spectra, spectral energy, effective dimension and per-mode learning curves.

Oracles: NumPy's ``eigh`` in float64 of the same (rounded) input; for the iterative methods
a tolerance from rounding (a backward-stable symmetric eigensolver is within p(N)·eps·‖K‖,
taken here with p(N) = N) plus the method's own convergence bound at the kernel's spectral
gap; ``nk.gradient_flow`` for the learning curves.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from array_api_compat import is_numpy_namespace

import nntk_array as nk
from nntk_array.testing import to_numpy
from nntk_array.testing import tol as tol_of

N = 64  # the RBF test kernel: eigenvalues fall by about 2x per index, then geometrically
K_TOP = 5


def _rbf(n: int = N, lengthscale: float = 0.3) -> np.ndarray:
    x = np.linspace(-1.0, 1.0, n)
    return np.exp(-((x[:, None] - x[None, :]) ** 2) / (2 * lengthscale**2))


def _eps(dtype: object) -> float:
    return float(np.finfo(np.float32 if "32" in str(dtype) else np.float64).eps)


def _reference(kernel: object) -> tuple[np.ndarray, np.ndarray]:
    """Descending float64 eigenpairs of the kernel as the library holds it (after rounding)."""
    vals, vecs = np.linalg.eigh(to_numpy(kernel).astype(np.float64))
    return vals[::-1], vecs[:, ::-1]


def _gaps(vals: np.ndarray, k: int) -> np.ndarray:
    """Distance of each of the top k eigenvalues to the rest of the spectrum."""
    return np.array([np.min(np.abs(np.delete(vals, i) - vals[i])) for i in range(k)])


def _check_vectors(got: object, want: np.ndarray, tol: np.ndarray) -> None:
    """Sign-invariant: ‖v̂ ∓ v‖ <= tol per column (sin θ <= residual / gap, Davis–Kahan)."""
    got = to_numpy(got).astype(np.float64)
    signs = np.sign(np.sum(got * want, axis=0))
    err = np.linalg.norm(got - signs * want, axis=0)
    assert np.all(err <= tol), f"eigenvector errors {err} > {tol}"


def _convergence(vals: np.ndarray, k: int, method: str, subspace: int, power: int) -> float:
    """The method's error bound for the top k eigenvalues at this spectrum's gaps.

    Randomized subspace iteration with l columns and q powers: λ_i − λ̂_i <= λ_1 C (λ_{l+1}/
    λ_i)^{2q+1} (Halko, Martinsson & Tropp 2011 §9, Saibaba 2019), with C <= N for Gaussian
    test matrices. Lanczos after m steps (Kaniel–Paige–Saad): λ_i − θ_i <= (λ_1 − λ_N)
    (tan θ_0 / T_{m−i}(1 + 2γ_i))², γ_i = (λ_i − λ_{i+1})/(λ_{i+1} − λ_N), with tan θ_0 <= N for
    a Gaussian start vector (probability ≈ 1 − 1/N)."""
    if method == "randomized":
        return float(N * vals[0] * (max(vals[subspace], 0.0) / vals[k - 1]) ** (2 * power + 1))
    spread = vals[0] - vals[-1]
    bound = 0.0
    for i in range(k):
        gamma = (vals[i] - vals[i + 1]) / (vals[i + 1] - vals[-1])
        cheb = math.cosh((subspace - i - 1) * math.acosh(1 + 2 * gamma))
        bound = max(bound, spread * (N / cheb) ** 2)
    return bound


class DenseOperator:
    """A matrix-free kernel as another module would give one: shape, dtype, device, matmul."""

    def __init__(self, kernel: object, xp: object, *, namespace: bool = True) -> None:
        self._kernel, self._xp = kernel, xp
        self.shape, self.dtype, self.device = kernel.shape, kernel.dtype, _device(kernel)
        self.products = 0
        if namespace:
            self.xp = xp

    def matmul(self, v: object) -> object:
        self.products += v.shape[1]
        return self._xp.matmul(self._kernel, v)


def _device(a: object) -> object:
    from array_api_compat import device

    return device(a)


class TestKernelSpectrum:
    def test_exact_matches_numpy_eigh(self, make, xp, dtype):
        # distinct eigenvalues 1..12: every eigenvector is defined
        q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((12, 12)))
        k = make(q @ np.diag(np.arange(1.0, 13.0)) @ q.T)
        want_vals, want_vecs = _reference(k)
        tol = 12 * _eps(dtype) * want_vals[0]
        values, vectors = nk.kernel_spectrum(k)
        assert values.dtype == dtype and vectors.dtype == dtype
        assert _device(values) == _device(k) and vectors.shape == (12, 12)
        np.testing.assert_allclose(to_numpy(values), want_vals, rtol=0, atol=tol)
        _check_vectors(vectors, want_vecs, np.full(12, math.sqrt(2) * tol))
        top = nk.kernel_spectrum(k, k=3, method="exact")
        np.testing.assert_allclose(to_numpy(top.values), want_vals[:3], rtol=0, atol=tol)
        auto = nk.kernel_spectrum(k, k=3)  # small N: "auto" is exact
        np.testing.assert_array_equal(to_numpy(auto.values), to_numpy(top.values))

    @pytest.mark.parametrize("method", ["lanczos", "randomized"])
    def test_top_k_matches_exact(self, make, dtype, method):
        k = make(_rbf())
        vals, vecs = _reference(k)
        subspace = 2 * K_TOP + 20 if method == "lanczos" else K_TOP + 10  # the defaults
        rounding = N * _eps(dtype) * vals[0]
        convergence = _convergence(vals, K_TOP, method, subspace, power=4)
        assert convergence < rounding  # the gap makes the method converge to rounding
        values, vectors = nk.kernel_spectrum(k, k=K_TOP, method=method, seed=0)
        assert values.shape == (K_TOP,) and vectors.shape == (N, K_TOP)
        np.testing.assert_allclose(to_numpy(values), vals[:K_TOP], rtol=0, atol=rounding)
        _check_vectors(vectors, vecs[:, :K_TOP], math.sqrt(2) * rounding / _gaps(vals, K_TOP))
        gram = to_numpy(vectors).astype(np.float64)
        np.testing.assert_allclose(gram.T @ gram, np.eye(K_TOP), atol=N * _eps(dtype))

    @pytest.mark.parametrize("method", ["exact", "lanczos", "randomized"])
    def test_operator_gives_the_dense_result(self, make, xp, dtype, method):
        k = make(_rbf(32))
        op = DenseOperator(k, xp)
        dense = nk.kernel_spectrum(k, k=4, method=method, seed=3)
        matrix_free = nk.kernel_spectrum(op, k=4, method=method, seed=3)
        tol = 32 * _eps(dtype)
        np.testing.assert_allclose(
            to_numpy(matrix_free.values), to_numpy(dense.values), rtol=0, atol=tol
        )
        assert op.products == {"exact": 32, "lanczos": 28, "randomized": 14 * 6}[method]
        # an operator that does not name its library takes xp=
        no_ns = DenseOperator(k, xp, namespace=False)
        again = nk.kernel_spectrum(no_ns, k=4, method=method, seed=3, xp=xp)
        np.testing.assert_array_equal(to_numpy(again.values), to_numpy(matrix_free.values))

    def test_the_librarys_operators_give_the_dense_spectrum(self, make, dtype):
        """Top-k of the MLP's NTK operator and of an NNTK root factor: the dense kernels'."""
        model = nk.MLP(2, (32,), activation="relu")
        theta = make(model.init(0, xp=np, dtype=np.float64))
        x = make(np.random.default_rng(0).uniform(-1.0, 1.0, (48, 2)))
        root = nk.nntk_features(model, theta, x, sigma=0.3, samples=64, seed=0)
        cases = [
            (nk.ntk_operator(model, theta, x), nk.ntk(model, theta, x)),
            (nk.LowRankOperator(root), root @ root.T),
        ]
        for op, dense in cases:
            want, _ = _reference(dense)
            got = nk.kernel_spectrum(op, k=4, method="lanczos", seed=0)
            tol = tol_of(dtype, "contraction") * want[0]  # products vs the dense matmul
            np.testing.assert_allclose(to_numpy(got.values), want[:4], rtol=0, atol=tol)

    def test_same_seed_same_result(self, make):
        k = make(_rbf(32))
        for method in ("lanczos", "randomized"):
            a = nk.kernel_spectrum(k, k=3, method=method, seed=7)
            b = nk.kernel_spectrum(k, k=3, method=method, seed=7)
            np.testing.assert_array_equal(to_numpy(a.vectors), to_numpy(b.vectors))

    def test_lanczos_restarts_on_a_low_rank_kernel(self, make, dtype):
        # rank 3: the Krylov space is invariant after 3 steps; later steps restart from
        # random vectors orthogonal to it, and the zero eigenvalues come out as zeros
        a = np.random.default_rng(1).standard_normal((40, 3))
        k = make(a @ np.diag([9.0, 4.0, 1.0]) @ a.T / 40)
        vals, _ = _reference(k)
        values, vectors = nk.kernel_spectrum(k, k=5, method="lanczos", seed=0, subspace=12)
        tol = 40 * _eps(dtype) * vals[0]
        np.testing.assert_allclose(to_numpy(values), vals[:5], rtol=0, atol=tol)
        gram = to_numpy(vectors).astype(np.float64)
        np.testing.assert_allclose(gram.T @ gram, np.eye(5), atol=40 * _eps(dtype))

    def test_bad_input(self, make, xp):
        k = make(_rbf(8))
        for kwargs, err, name in [
            ({"k": 9}, ValueError, "`k`"),
            ({"k": 0}, ValueError, "`k`"),
            ({"k": 2.0}, TypeError, "`k`"),
            ({"method": "arnoldi"}, ValueError, "`method`"),
            ({"k": 3, "subspace": 2}, ValueError, "`subspace`"),
            ({"k": 3, "subspace": 9}, ValueError, "`subspace`"),
            ({"power_iterations": -1}, ValueError, "`power_iterations`"),
            ({"seed": 1.5}, TypeError, "`seed`"),
        ]:
            with pytest.raises(err, match=name):
                nk.kernel_spectrum(k, **kwargs)
        with pytest.raises(ValueError, match="`kernel` must be square"):
            nk.kernel_spectrum(make(np.ones((3, 4))))
        with pytest.raises(ValueError, match="`kernel` must have shape"):
            nk.kernel_spectrum(make(np.ones(3)))
        with pytest.raises(ValueError, match="`kernel` contains NaN"):
            nk.kernel_spectrum(make(np.full((3, 3), np.nan)))
        with pytest.raises(TypeError, match="`kernel` must be an"):
            nk.kernel_spectrum([[1.0]])
        with pytest.raises(TypeError, match="xp="):
            nk.kernel_spectrum(DenseOperator(k, xp, namespace=False), k=2, method="lanczos")

    def test_operator_of_another_library(self, make, xp):
        if is_numpy_namespace(xp):
            pytest.skip("needs a library other than NumPy")

        class NumpyProducts(DenseOperator):
            def matmul(self, v: object) -> object:
                return np.ones(tuple(v.shape))

        op = NumpyProducts(make(_rbf(8)), xp)
        with pytest.raises(TypeError, match=r"kernel\.matmul"):
            nk.kernel_spectrum(op, k=2, method="randomized", seed=0)


class TestSpectralEnergy:
    def test_fractions(self, make, dtype):
        k = make(_rbf(16))
        y = np.sin(3 * np.linspace(-1, 1, 16))
        _, vecs = _reference(k)
        want = np.cumsum((vecs.T @ y) ** 2) / (y @ y)
        tol = 16 * _eps(dtype)
        full = to_numpy(nk.spectral_energy(k, make(y)))
        np.testing.assert_allclose(full, want, rtol=0, atol=tol)
        assert full[-1] == pytest.approx(1.0, abs=tol)  # all N directions hold all the energy
        spectrum = nk.kernel_spectrum(k, k=4)
        np.testing.assert_allclose(
            to_numpy(nk.spectral_energy(spectrum, make(y))), want[:4], rtol=0, atol=tol
        )
        two = to_numpy(nk.spectral_energy(spectrum, make(y), 2))
        np.testing.assert_allclose(two, want[:2], rtol=0, atol=tol)
        # several outputs add up; a zero target has no energy anywhere
        both = to_numpy(nk.spectral_energy(k, make(np.stack([y, y], axis=1))))
        np.testing.assert_allclose(both, want, rtol=0, atol=tol)
        assert np.all(to_numpy(nk.spectral_energy(k, make(np.zeros(16)))) == 0)

    def test_bad_input(self, make):
        k = make(_rbf(6))
        with pytest.raises(ValueError, match="`y`"):
            nk.spectral_energy(k, make(np.ones(5)))
        with pytest.raises(ValueError, match="`k`"):
            nk.spectral_energy(nk.kernel_spectrum(k, k=2), make(np.ones(6)), 3)
        with pytest.raises(ValueError, match="`y` contains NaN"):
            nk.spectral_energy(k, make(np.full(6, np.nan)))

    def test_mixed_libraries(self, make, xp):
        if is_numpy_namespace(xp):
            pytest.skip("needs a library other than NumPy")
        with pytest.raises(TypeError, match="one array library"):
            nk.spectral_energy(nk.kernel_spectrum(_rbf(6)), make(np.ones(6)))


class TestEffectiveDimension:
    def test_is_the_ridge_smoother_trace(self, make, dtype):
        k = _rbf(16)
        lam = 1e-2
        want = np.trace(k @ np.linalg.inv(k + lam * np.eye(16)))
        values = nk.kernel_spectrum(make(k)).values
        got = float(to_numpy(nk.effective_dimension(values, lam)))
        assert got == pytest.approx(want, abs=100 * _eps(dtype) * 16)
        # negative eigenvalues (of a Monte Carlo kernel) count as zero
        assert float(to_numpy(nk.effective_dimension(make([1.0, -0.5]), 1.0))) == 0.5

    def test_bad_input(self, make):
        for ridge, err in [(0.0, ValueError), (math.inf, ValueError), ("1", TypeError)]:
            with pytest.raises(err, match="`ridge`"):
                nk.effective_dimension(make([1.0, 2.0]), ridge)
        with pytest.raises(ValueError, match="`eigenvalues`"):
            nk.effective_dimension(make(np.ones((2, 2))), 1.0)


class TestModeLearningCurves:
    def test_equal_the_projected_gradient_flow_residual(self, make, dtype):
        k = make(_rbf(16))
        y = make(np.sign(np.linspace(-1, 1, 16)) + 0.1)
        times = np.array([0.0, 0.5, 3.0, 40.0])
        f, _ = nk.gradient_flow(k, y, t=make(times), learning_rate=0.5)
        values, vectors = nk.kernel_spectrum(k)
        residual = (to_numpy(f) - to_numpy(y)) @ to_numpy(vectors).astype(np.float64)
        curves = nk.mode_learning_curves(values, vectors, y, make(times), learning_rate=0.5)
        assert curves.shape == (4, 16)
        tol = 100 * 16 * _eps(dtype) * float(np.sum(to_numpy(y) ** 2))
        np.testing.assert_allclose(to_numpy(curves), residual**2, rtol=0, atol=tol)
        one = nk.mode_learning_curves(values, vectors, y, 0.5, learning_rate=0.5)
        np.testing.assert_allclose(to_numpy(one), to_numpy(curves)[1], rtol=0, atol=tol)

    def test_bad_input(self, make):
        values, vectors = nk.kernel_spectrum(make(_rbf(4)))
        y = make(np.ones(4))
        with pytest.raises(ValueError, match="`t`"):
            nk.mode_learning_curves(values, vectors, y, -1.0)
        with pytest.raises(ValueError, match="`t`"):
            nk.mode_learning_curves(values, vectors, y, make([0.0, -1.0]))
        with pytest.raises(ValueError, match="`learning_rate`"):
            nk.mode_learning_curves(values, vectors, y, 1.0, learning_rate=0)
        with pytest.raises(ValueError, match="`eigenvectors`"):
            nk.mode_learning_curves(values, vectors[:, :2], y, 1.0)
        with pytest.raises(ValueError, match="`y`"):
            nk.mode_learning_curves(values, vectors, make(np.ones(3)), 1.0)
