from __future__ import annotations

import numpy as np
import pytest

import nntk_array as nk
from nntk_array.testing import to_numpy


class TestAlignment:
    def test_values_and_invariance(self, make, dtype):
        y = np.array([1.0, -1.0, 0.5, -0.5])
        k = np.exp(-(np.subtract.outer(y, y) ** 2))
        a = float(to_numpy(nk.kernel_alignment(make(k), make(y))))
        b = float(to_numpy(nk.kernel_alignment(make(3.0 * k), make(y))))
        assert abs(a - b) < 1e-5 and 0 < a < 1
        assert abs(float(to_numpy(nk.kernel_alignment(make(np.outer(y, y)), make(y)))) - 1) < 1e-5
        hc = np.eye(4) - 1 / 4
        ref = (y - y.mean()) @ hc @ k @ hc @ (y - y.mean())
        ref /= np.linalg.norm(hc @ k @ hc) * np.sum((y - y.mean()) ** 2)
        assert abs(a - ref) < 1e-5
        plain = float(to_numpy(nk.kernel_alignment(make(k), make(y), centered=False)))
        assert abs(plain - y @ k @ y / (np.linalg.norm(k) * (y @ y))) < 1e-5

    def test_errors(self, make):
        with pytest.raises(ValueError, match="kernel"):
            nk.kernel_alignment(make(np.eye(3)), make(np.ones(4)))


class TestBandError:
    def test_band(self, make):
        x = make(np.linspace(-1, 1, 9))
        err = make(np.linspace(-1, 1, 9) ** 2)
        out = float(to_numpy(nk.band_error(x, err, make(np.array([0.0, 1.0])), width=0.3)))
        assert out == pytest.approx(1.0)
        out = float(to_numpy(nk.band_error(x, err, make(np.array([0.0])), width=0.3)))
        assert out == pytest.approx(0.0625)
        assert float(to_numpy(nk.band_error(x, err, make(np.array([5.0])), width=0.1))) == 0.0
