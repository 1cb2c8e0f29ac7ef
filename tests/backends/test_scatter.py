from __future__ import annotations

import numpy as np

from nntk_array.backends.scatter import segment_sum
from nntk_array.testing import to_numpy, tol


def test_segment_sum_adds_repeats_and_leaves_empty_segments_zero(xp, make, dtype):
    rng = np.random.default_rng(0)
    segments = rng.integers(0, 30, size=200)
    segments[:5] = 7  # repeats; some of the 40 segments get nothing
    values = rng.standard_normal(200)
    want = np.bincount(segments, weights=values, minlength=40)
    got = segment_sum(xp, make(values), make(segments, dtype=xp.int64), 40)
    assert got.shape == (40,) and got.dtype == dtype
    np.testing.assert_allclose(to_numpy(got), want, rtol=0, atol=tol(dtype, "contraction"))
    assert np.all(to_numpy(got)[30:] == 0)
