from __future__ import annotations

import sys

import numpy as np
import pytest
from array_api_compat import (
    array_namespace,
    is_array_api_strict_namespace,
    is_jax_namespace,
    is_numpy_namespace,
)
from array_api_compat import device as array_device

import nntk_array as nk
from nntk_array.backends.linalg import solve_triangular
from nntk_array.testing import eps, to_numpy, tol


def _kernel(n: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.sort(rng.uniform(-1, 1, n + 5))
    k = np.exp(-np.abs(x[:, None] - x[None, :]) / 0.5) + 0.1  # Laplace: well conditioned
    y = np.sign(x[:n]) + 0.1 * x[:n]
    return k[:n, :n], y, k[n:, :n], x


class TestKernelRegression:
    def test_ridgeless_interpolates_and_is_scale_invariant(self, make, dtype):
        k, y, ks, _ = _kernel()
        f, ft = nk.kernel_regression(make(k), make(y), make(ks))
        _, ft2 = nk.kernel_regression(make(7.0 * k), make(y), make(7.0 * ks))
        assert array_namespace(f) is array_namespace(make(y)) and f.dtype == dtype
        np.testing.assert_allclose(to_numpy(f), y, atol=tol(dtype, "contraction") * 1e3)
        np.testing.assert_allclose(
            to_numpy(ft), to_numpy(ft2), rtol=1e-3 if "32" in str(dtype) else 1e-8, atol=1e-3
        )

    def test_cholesky_and_eigh_agree(self, make, dtype):
        k, y, ks, _ = _kernel()
        a = nk.kernel_regression(make(k), make(y), make(ks), ridge=1e-2, solver="cholesky")
        b = nk.kernel_regression(make(k), make(y), make(ks), ridge=1e-2, solver="eigh")
        for u, v in zip(a, b, strict=True):
            np.testing.assert_allclose(
                to_numpy(u),
                to_numpy(v),
                rtol=tol(dtype, "contraction"),
                atol=tol(dtype, "contraction"),
            )
        ref = ks @ np.linalg.solve(k + 1e-2 * np.trace(k) / 8 * np.eye(8), y)
        np.testing.assert_allclose(
            to_numpy(a[1]), ref, rtol=tol(dtype, "contraction"), atol=tol(dtype, "contraction")
        )

    def test_cholesky_matches_eigh_within_conditioning(self, make, dtype):
        # A smooth (Gaussian) kernel with a small ridge: cond(K + λI) ≈ 1.6e4, so the two solvers
        # may differ by cond · N · eps (backward-stable solvers), and not by more.
        rng = np.random.default_rng(1)
        x = np.sort(rng.uniform(-1, 1, 30))
        k = np.exp(-((x[:, None] - x[None, :]) ** 2) / 0.5)
        y = np.stack([np.sin(3 * x[:24]), np.cos(2 * x[:24])], axis=1)
        n, ridge = 24, 1e-3
        shifted = k[:n, :n] + ridge * np.trace(k[:n, :n]) / n * np.eye(n)
        bound = np.linalg.cond(shifted) * n * eps(dtype) * np.abs(y).max()
        a = nk.kernel_regression(
            make(k[:n, :n]), make(y), make(k[n:, :n]), ridge=ridge, solver="cholesky"
        )
        b = nk.kernel_regression(
            make(k[:n, :n]), make(y), make(k[n:, :n]), ridge=ridge, solver="eigh"
        )
        for u, v in zip(a, b, strict=True):
            assert u.dtype == dtype and u.shape == v.shape
            np.testing.assert_allclose(to_numpy(u), to_numpy(v), rtol=0, atol=bound)

    def test_cholesky_uses_triangular_solves(self, xp, make, monkeypatch):
        # Regression: the Cholesky path solved with its triangular factors through the general
        # (LU) solver. Libraries with a triangular solver must not reach xp.linalg.solve.
        if is_array_api_strict_namespace(xp):
            pytest.skip("array-api-strict has no triangular solver: the general solve is its path")
        if is_numpy_namespace(xp):
            pytest.importorskip("scipy.linalg")

        def general_solve(*args: object, **kwargs: object) -> None:
            raise AssertionError("the Cholesky path called the general xp.linalg.solve")

        k, y, ks, _ = _kernel()
        expected = nk.kernel_regression(make(k), make(y), make(ks), ridge=1e-2, solver="eigh")
        monkeypatch.setattr(xp.linalg, "solve", general_solve)
        got = nk.kernel_regression(make(k), make(y), make(ks), ridge=1e-2, solver="cholesky")
        for u, v in zip(got, expected, strict=True):
            np.testing.assert_allclose(to_numpy(u), to_numpy(v), rtol=1e-3, atol=1e-3)

    def test_psd_clipping_and_multiple_outputs(self, make, dtype):
        k, y, _, _ = _kernel()
        vals, vecs = np.linalg.eigh(k)
        bad = vecs @ np.diag(np.r_[-0.5, vals[1:]]) @ vecs.T  # one negative eigenvalue
        with pytest.raises(ValueError, match="positive definite"):
            nk.kernel_regression(make(bad), make(y), ridge=1e-6, solver="cholesky")
        f, _ = nk.kernel_regression(make(bad), make(np.stack([y, -y], 1)), psd=True, ridge=1e-3)
        assert f.shape == (8, 2) and np.all(np.isfinite(to_numpy(f)))
        np.testing.assert_allclose(to_numpy(f)[:, 0], -to_numpy(f)[:, 1], atol=1e-6)

    def test_errors(self, make, xp):
        k, y, ks, _ = _kernel()
        with pytest.raises(ValueError, match="ridge"):
            nk.kernel_regression(make(k), make(y), ridge=-1.0)
        with pytest.raises(ValueError, match="solver"):
            nk.kernel_regression(make(k), make(y), solver="lu")
        with pytest.raises(ValueError, match="k_train"):
            nk.kernel_regression(make(k[:, :3]), make(y))
        with pytest.raises(ValueError, match="y_train"):
            nk.kernel_regression(make(k), make(y[:3]))
        with pytest.raises(ValueError, match="k_test"):
            nk.kernel_regression(make(k), make(y), make(ks[:, :3]))
        with pytest.raises(ValueError, match="psd"):
            nk.kernel_regression(make(k), make(y), psd=True, solver="cholesky")
        with pytest.raises(ValueError, match="NaN"):
            nk.kernel_regression(make(np.full((8, 8), np.nan)), make(y))


class TestGradientFlow:
    def test_limits(self, make, dtype):
        k, y, ks, _ = _kernel()
        times = make(np.array([0.0, 1e9]))
        f0 = np.linspace(-0.3, 0.3, 8)
        f, ft = nk.gradient_flow(make(k), make(y), make(ks), t=times, f0_train=make(f0))
        f, ft = to_numpy(f), to_numpy(ft)
        assert f.shape == (2, 8) and ft.shape == (2, 5)
        np.testing.assert_allclose(f[0], f0, atol=1e-6)  # f at t = 0 is f0
        np.testing.assert_allclose(f[1], y, atol=tol(dtype, "contraction") * 1e3)  # K > 0
        ridgeless = ks @ np.linalg.solve(k, y - f0)
        np.testing.assert_allclose(
            ft[1],
            ridgeless,
            rtol=1e-2 if "32" in str(dtype) else 1e-6,
            atol=1e-2 if "32" in str(dtype) else 1e-6,
        )

    def test_matches_small_step_gradient_descent(self, make, dtype):
        # Linearized model: f_{k+1}(X) = f_k(X) - η K (f_k(X) - y), f(X*) likewise with K*.
        k, y, ks, _ = _kernel()
        eta, steps = 1e-3, 2000
        f, ft = np.zeros(8), np.zeros(5)
        for _ in range(steps):
            r = f - y
            f, ft = f - eta * k @ r, ft - eta * ks @ r
        g, gt = nk.gradient_flow(make(k), make(y), make(ks), t=steps * eta)
        np.testing.assert_allclose(to_numpy(g), f, atol=5e-3)
        np.testing.assert_allclose(to_numpy(gt), ft, atol=5e-3)

    def test_jax_jit_with_array_times(self, xp, make, dtype):
        # Regression: the check t >= 0 read the values of a traced `t` (bool() on a tracer).
        if not is_jax_namespace(xp):
            pytest.skip("jax.jit needs JAX arrays")
        import jax

        k, y, ks, _ = _kernel()
        args = make(k), make(y), make(ks), make(np.array([0.0, 0.3, 2.0]))

        def flow(k, y, ks, t):
            return nk.gradient_flow(k, y, ks, t=t, learning_rate=0.5)

        eager, jitted = flow(*args), jax.jit(flow)(*args)
        for u, v in zip(jitted, eager, strict=True):
            assert u.shape == v.shape == (3, *v.shape[1:]) and u.dtype == dtype
            np.testing.assert_allclose(
                to_numpy(u),
                to_numpy(v),
                rtol=tol(dtype, "contraction"),
                atol=tol(dtype, "contraction"),
            )

    def test_zero_eigenvalues_are_stable(self, make):
        v = np.array([1.0, 1.0]) / np.sqrt(2)
        k = np.outer(v, v)  # eigenvalues 0 and 1
        f, ft = nk.gradient_flow(make(k), make(np.array([1.0, -1.0])), make(k), t=2.0)
        assert np.all(np.isfinite(to_numpy(f))) and np.all(np.isfinite(to_numpy(ft)))
        # y ⊥ range(K): nothing is learned, f stays at f0 = 0
        np.testing.assert_allclose(to_numpy(f), [0.0, 0.0], atol=1e-6)

    def test_errors(self, make):
        k, y, _, _ = _kernel()
        for bad in (-1.0, np.inf, True):
            with pytest.raises(ValueError, match="`t`"):
                nk.gradient_flow(make(k), make(y), t=bad)
        for bad in ([0.0, -1.0], [1.0, np.nan]):
            with pytest.raises(ValueError, match="`t`"):
                nk.gradient_flow(make(k), make(y), t=make(np.array(bad)))
        with pytest.raises(ValueError, match="learning_rate"):
            nk.gradient_flow(make(k), make(y), t=1.0, learning_rate=0.0)
        with pytest.raises(ValueError, match="f0_train"):
            nk.gradient_flow(make(k), make(y), t=1.0, f0_train=make(np.zeros(3)))


class TestSolveTriangular:
    @staticmethod
    def _system(lower: bool, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(2)
        a = np.tril(rng.standard_normal((6, 6))) + 4 * np.eye(6)
        return (a if lower else a.T), rng.standard_normal(shape)

    @pytest.mark.parametrize("lower", [True, False])
    @pytest.mark.parametrize("shape", [(6,), (6, 3)])
    def test_matches_dense_solve(self, xp, make, dtype, device, lower, shape):
        a, b = self._system(lower, shape)
        out = solve_triangular(xp, make(a), make(b), lower=lower)
        assert array_namespace(out) is xp and out.dtype == dtype and out.shape == shape
        if device is not None:
            assert array_device(out) == device
        np.testing.assert_allclose(
            to_numpy(out), np.linalg.solve(a, b), rtol=tol(dtype, "contraction"), atol=1e-5
        )

    @pytest.mark.parametrize("lower", [True, False])
    def test_reads_only_its_triangle(self, xp, make, dtype, lower):
        # Every path, the general-solve fallback included, ignores the other triangle.
        a, b = self._system(lower, (6, 2))
        junk = np.triu(np.full((6, 6), 7.0), 1)
        a_junk = a + (junk if lower else junk.T)
        np.testing.assert_allclose(
            to_numpy(solve_triangular(xp, make(a_junk), make(b), lower=lower)),
            np.linalg.solve(a, b),
            rtol=tol(dtype, "contraction"),
            atol=1e-5,
        )

    def test_numpy_without_scipy(self, monkeypatch):
        # SciPy is optional: without it NumPy falls back to the general solve.
        monkeypatch.setitem(sys.modules, "scipy.linalg", None)  # makes the import fail
        xp = array_namespace(np.empty(0))
        for lower in (True, False):
            a, b = self._system(lower, (6, 2))
            out = solve_triangular(xp, a, b, lower=lower)
            np.testing.assert_allclose(out, np.linalg.solve(a, b), rtol=1e-12)

    def test_errors(self, xp, make):
        a, b = self._system(True, (6,))
        with pytest.raises(ValueError, match="`a`"):
            solve_triangular(xp, make(a[:, :5]), make(b), lower=True)
        with pytest.raises(ValueError, match="`b`"):
            solve_triangular(xp, make(a), make(b[:5]), lower=True)
