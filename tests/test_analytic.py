from __future__ import annotations

import numpy as np
import pytest
from array_api_compat import array_namespace

import nntk_array as nk
from nntk_array.testing import to_numpy, tol

from ._reference import smoothed_one_hidden_ntk

GRID = np.array([[-1.0], [-1 / 3], [1 / 3], [1.0]])


class TestClosedForms:
    def test_smoothed_sign_numbers_of_the_mathematics_page(self, make, dtype):
        k = nk.analytic.ntk(make(GRID), activation="sign", sigma=0.5)
        assert array_namespace(k) is array_namespace(make(GRID)) and k.dtype == dtype
        # docs: Mathematics, 'Infinite width' (without the output bias, which adds 1): row 0
        # and the diagonal
        np.testing.assert_allclose(to_numpy(k)[0] - 1, [1.4392, 1.1597, 0.4768, 0.0], atol=1e-4)
        np.testing.assert_allclose(np.diag(to_numpy(k)) - 1, 0.5903 + 0.8488, atol=1e-4)

    @pytest.mark.parametrize("activation", ["relu", "erf", "sign"])
    def test_wide_finite_network_converges_at_rate_one_over_sqrt_width(self, activation):
        x = np.linspace(-1, 1, 4)[:, None]
        exact = nk.analytic.ntk(x, activation=activation, sigma=0.3)
        errs = []
        for width in (64, 1024):
            model = nk.MLP(1, (width,), activation=activation)
            mean, _ = nk.monte_carlo_kernel(
                lambda s, model=model: (
                    smoothed_one_hidden_ntk(model, model.init(s, xp=np), x, x, 0.3) - exact
                ),
                40,
            )
            spread = [
                np.abs(
                    smoothed_one_hidden_ntk(model, model.init(s, xp=np), x, x, 0.3) - exact
                ).max()
                for s in range(40)
            ]
            errs.append(np.sqrt(np.mean(np.square(spread))))
            assert np.abs(mean).max() < 4 * errs[-1] / np.sqrt(40) + 2.0 / width
        assert 0.15 < errs[1] / errs[0] < 0.4  # 1/sqrt(16) = 0.25

    @pytest.mark.parametrize(("activation", "depth"), [("relu", 1), ("relu", 2), ("erf", 2)])
    def test_local_ntk_of_wide_networks(self, activation, depth):
        x = np.random.default_rng(0).standard_normal((3, 2))
        exact = nk.analytic.ntk(x, activation=activation, depth=depth)
        model = nk.MLP(2, (2048,) * depth, activation=activation)
        mean, se = nk.monte_carlo_kernel(lambda s: nk.ntk(model, model.init(s, xp=np), x), 6)
        assert np.all(np.abs(mean - exact) < 5 * se + 0.02 * np.abs(exact))

    def test_nngp_and_shapes(self, make, dtype):
        x1, x2 = make(GRID), make(GRID[:2])
        k = to_numpy(nk.analytic.nngp(x1, x2, activation="erf", depth=2))
        assert k.shape == (4, 2)
        full = to_numpy(nk.analytic.nngp(x1, activation="erf", depth=2))
        np.testing.assert_allclose(k, full[:, :2], rtol=tol(dtype, "elementwise") * 10)

    def test_errors(self, make):
        with pytest.raises(ValueError, match="activation"):
            nk.analytic.ntk(make(GRID), activation="tanh")
        with pytest.raises(ValueError, match="depth"):
            nk.analytic.ntk(make(GRID), depth=0)
        with pytest.raises(ValueError, match="one hidden layer"):
            nk.analytic.ntk(make(GRID), depth=2, sigma=0.1)
        with pytest.raises(ValueError, match="`sigma` must be >= 0"):
            nk.analytic.ntk(make(GRID), sigma=-1.0)
        with pytest.raises(ValueError, match="weight_std"):
            nk.analytic.ntk(make(GRID), weight_std=0.0)
        with pytest.raises(ValueError, match="x2"):
            nk.analytic.ntk(make(GRID), make(np.zeros((2, 3))))
