from __future__ import annotations

import math

import numpy as np
import pytest
from array_api_compat import array_namespace
from array_api_compat import device as array_device

import nntk_array as nk
from nntk_array.testing import to_numpy, tol

Z = 5.0


def _np(a: object) -> np.ndarray:
    return to_numpy(a).astype(np.float64)


def _sign_sum(thetas: object) -> object:
    """f(θ) = sign(θ_0) + sign(θ_1 - 0.3): ∇f_σ = 2 ϕ_σ(θ_0), 2 ϕ_σ(θ_1 - 0.3), 0, ..."""
    xp = array_namespace(thetas)
    return xp.sign(thetas[:, 0]) + xp.sign(thetas[:, 1] - 0.3)


def _gauss(x: float, s: float) -> float:
    return math.exp(-x * x / (2 * s * s)) / (s * math.sqrt(2 * math.pi))


class TestNonlocalGrad:
    @pytest.mark.parametrize("sampling", ["iid", "antithetic", "orthogonal", "qmc"])
    # 6000 samples per case: every sampling on NumPy, the iid case elsewhere (slow step: all)
    @pytest.mark.slow_unless(backend="numpy")
    @pytest.mark.slow_unless(sampling="iid")
    def test_sign_function_smoothed_gradient(self, make, dtype, sampling):
        theta = np.array([0.1, 0.0, 0.5])
        g, se = nk.nonlocal_grad(
            _sign_sum,
            make(theta),
            sigma=0.4,
            samples=6000,
            seed=0,
            sampling=sampling,
            return_stderr=True,
        )
        truth = np.array([2 * _gauss(0.1, 0.4), 2 * _gauss(-0.3, 0.4), 0.0])
        assert g.shape == (3,) and g.dtype == dtype
        assert np.all(np.abs(_np(g) - truth) <= Z * _np(se) + 1e-4)

    @pytest.mark.slow_unless(backend="numpy")  # 2 x 8000 samples: float32 only elsewhere
    @pytest.mark.slow_unless(dtype="float32")
    def test_paper_form_is_the_gradient_of_its_smoothing(self, make, dtype):
        # P·G f = ∇ E f(θ + U^{1/P} σ g) (docs: Mathematics, 'smoothed gradient'): average the
        # Gaussian answer over U.
        theta = np.array([0.1, 0.0, 0.5])
        nodes, weights = np.polynomial.legendre.leggauss(200)
        radii = ((nodes + 1) / 2) ** (1 / 3)
        truth = np.array(
            [
                sum(w / 2 * 2 * _gauss(c, 0.4 * r) for r, w in zip(radii, weights, strict=True))
                for c in (0.1, -0.3)
            ]
            + [0.0]
        )
        g, se = nk.nonlocal_grad(
            _sign_sum,
            make(theta),
            sigma=0.4,
            samples=8000,
            seed=1,
            form="paper",
            return_stderr=True,
        )
        assert np.all(np.abs(_np(g) - truth) <= Z * _np(se) + 1e-4)
        lit = nk.nonlocal_grad(
            _sign_sum, make(theta), sigma=0.4, samples=8000, seed=1, form="paper", scale="literal"
        )
        np.testing.assert_allclose(_np(lit) * 3, _np(g), rtol=tol(dtype, "contraction"))

    def test_vector_output_and_namespace(self, make, dtype, xp):
        a = np.random.default_rng(2).standard_normal((2, 3, 5))

        def linear(thetas: object) -> object:
            xq = array_namespace(thetas)
            return xq.reshape(xq.matmul(thetas, xq.reshape(make(a), (6, 5)).T), (-1, 2, 3))

        g = nk.nonlocal_grad(linear, make(np.zeros(5)), sigma=0.1, samples=make(np.eye(5)) * 1.0)
        assert array_namespace(g) is array_namespace(make(a)) and g.shape == (2, 3, 5)
        assert array_device(g) == array_device(make(a))
        # Explicit samples: ĝ = Σ_m (a·u_m) u_m / M = a/5 for the 5 unit vectors.
        np.testing.assert_allclose(
            _np(g), _np(make(a)) / 5, rtol=tol(dtype, "contraction"), atol=1e-6
        )

    def test_mse_of_iid_and_orthogonal_sampling(self):
        # Linear f: MSE = (P+1)|a|²/M (iid) vs ((P+2)/M − 1)|a|² (orthogonal); docs:
        # Mathematics, 'ES estimators'.
        p, m = 10, 5
        a = np.random.default_rng(3).standard_normal(p)
        out = {}
        for sampling in ("iid", "orthogonal"):
            errs = [
                np.sum(
                    (
                        nk.nonlocal_grad(
                            lambda t: t @ a,
                            np.zeros(p),
                            sigma=1.0,
                            samples=m,
                            seed=s,
                            sampling=sampling,
                        )
                        - a
                    )
                    ** 2
                )
                for s in range(600)
            ]
            out[sampling] = np.mean(errs) / np.sum(a * a)
        assert abs(out["iid"] / ((p + 1) / m) - 1) < 0.15
        assert abs(out["orthogonal"] / ((p + 2) / m - 1) - 1) < 0.15

    def test_stderr_is_calibrated(self):
        a = np.random.default_rng(4).standard_normal(4)
        runs = [
            nk.nonlocal_grad(
                lambda t: np.sign(t @ a),
                np.zeros(4) + 0.1,
                sigma=0.5,
                samples=400,
                seed=s,
                return_stderr=True,
            )
            for s in range(80)
        ]
        g = np.array([r[0] for r in runs])
        se = np.sqrt(np.mean([r[1] ** 2 for r in runs], axis=0))
        assert np.all(np.abs(g.std(axis=0, ddof=1) / se - 1) < 0.25)

    def test_errors(self, make, xp):
        theta = make(np.zeros(3))
        cases = [
            ({"sigma": 0}, ValueError, "sigma"),
            ({"samples": 0}, ValueError, "samples"),
            ({"samples": 1, "return_stderr": True}, ValueError, "samples >= 2"),
            ({"form": "x"}, ValueError, "form"),
            ({"sampling": "x"}, ValueError, "sampling"),
            ({"seed": -1}, ValueError, "seed"),
        ]
        for kw, exc, match in cases:
            with pytest.raises(exc, match=match):
                nk.nonlocal_grad(_sign_sum, theta, **{"sigma": 0.1, "samples": 4, **kw})
        with pytest.raises(TypeError, match="callable"):
            nk.nonlocal_grad(None, theta, sigma=0.1, samples=4)
        with pytest.raises(ValueError, match="theta"):
            nk.nonlocal_grad(_sign_sum, make(np.zeros((2, 3))), sigma=0.1, samples=4)
        with pytest.raises(ValueError, match=r"\(B, \.\.\.\)"):
            nk.nonlocal_grad(lambda t: t[0, 0], theta, sigma=0.1, samples=4)
        with pytest.raises(TypeError, match="floating"):
            nk.nonlocal_grad(_sign_sum, xp.zeros(3, dtype=xp.int32), sigma=0.1, samples=4)
