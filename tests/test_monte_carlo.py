from __future__ import annotations

import numpy as np
import pytest

import nntk_array as nk


def test_mean_and_standard_error_match_numpy():
    draws = [np.random.default_rng(s).standard_normal((3, 3)) for s in range(25)]
    mean, se = nk.monte_carlo_kernel(lambda s: draws[s], 25)
    np.testing.assert_allclose(mean, np.mean(draws, axis=0), rtol=1e-12)
    np.testing.assert_allclose(se, np.std(draws, axis=0, ddof=1) / 5, rtol=1e-10)


def test_iterable_seeds_and_errors():
    mean, _ = nk.monte_carlo_kernel(lambda s: np.full(2, float(s)), [3, 5])
    np.testing.assert_allclose(mean, 4.0)
    with pytest.raises(ValueError, match="seeds"):
        nk.monte_carlo_kernel(lambda s: np.zeros(2), 1)
    with pytest.raises(ValueError, match="shape"):
        nk.monte_carlo_kernel(lambda s: np.zeros(s + 1), 3)
