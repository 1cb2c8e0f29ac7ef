from __future__ import annotations

import math

import numpy as np
from array_api_compat import device as array_device

from nntk_array._special import erf as portable_erf
from nntk_array.backends.special import erf
from nntk_array.testing import eps, to_numpy

POINTS = np.concatenate([np.linspace(-7.0, 7.0, 2801), [0.0, 2.999999, 3.0, 3.000001, 40.0, -1e30]])
REF = np.array([math.erf(v) for v in POINTS])


def test_portable_erf_is_float64_exact(xp, make, dtype):
    got = portable_erf(xp, make(POINTS))
    assert got.dtype == dtype and array_device(got) == array_device(make(POINTS))
    bound = 4 * eps(dtype)
    assert np.max(np.abs(to_numpy(got).astype(np.float64) - REF)) <= bound


def test_backend_erf(xp, make, dtype):
    got = erf(xp, make(POINTS))
    assert got.dtype == dtype
    bound = 4 * eps(dtype)
    assert np.max(np.abs(to_numpy(got).astype(np.float64) - REF)) <= bound
