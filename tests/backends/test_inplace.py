from __future__ import annotations

import numpy as np
import pytest

from nntk_array.backends.inplace import clamp_min_into, matmul_into, writeable
from nntk_array.testing import to_numpy, tol


def test_writeable_is_the_libraries_answer(xp, dtype, device):
    a = xp.zeros((2,), dtype=dtype, device=device)
    assert writeable(xp, device) == ("jax" not in xp.__name__)
    if writeable(xp, device):
        a[...] = 1.0  # and it is true of the library's arrays
        assert bool(xp.all(a == 1.0))


def _buffer(xp, dtype, device, shape):
    if not writeable(xp, device):
        pytest.skip("the library's arrays cannot be written")
    return xp.zeros((3, *shape), dtype=dtype, device=device)


def test_matmul_into_fills_a_view_of_a_larger_buffer(xp, make, dtype, device):
    g = np.random.default_rng(0)
    a, b = g.normal(size=(2, 3, 4)), g.normal(size=(4, 5))
    buf = _buffer(xp, dtype, device, (2, 3, 5))
    out = buf[1, ...]
    assert matmul_into(xp, make(a), make(b), out) is out
    got = to_numpy(buf)
    np.testing.assert_allclose(got[1], a @ b, rtol=tol(dtype, "contraction"), atol=1e-6)
    assert not got[0].any() and not got[2].any()  # nothing written beside the view


def test_clamp_min_into_writes_its_argument(xp, make, dtype, device):
    buf = _buffer(xp, dtype, device, (4,))
    buf[1, ...] = make([-1.5, -0.0, 0.25, 2.0])
    z = buf[1, ...]
    assert clamp_min_into(xp, z, 0.0) is z
    np.testing.assert_array_equal(to_numpy(buf)[1], [0.0, 0.0, 0.25, 2.0])
