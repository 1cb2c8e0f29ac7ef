"""Ranks by buckets against NumPy's binary search, for every spread of the sorted values."""

from __future__ import annotations

import numpy as np
import pytest

from nntk_array.models import ranks as ranks_module
from nntk_array.models.ranks import ranks
from nntk_array.testing import to_numpy

SPREADS = {
    "even": lambda rng: np.linspace(-2.0, 2.0, 64),
    "normal": lambda rng: np.sort(rng.standard_normal(64)),
    "repeats": lambda rng: np.sort(np.repeat(rng.standard_normal(16), 4)),
    "clustered": lambda rng: np.sort(np.r_[np.zeros(30), 1e-9 * rng.standard_normal(30), 5.0]),
    "equal": lambda rng: np.full(20, 0.5),
    "one": lambda rng: np.array([0.25]),
}


def _queries(rng, values):
    q = np.r_[2.5 * rng.standard_normal(500), values, np.inf, -np.inf]
    near = values[values != 0]  # next to 0 are subnormals, which XLA flushes to 0
    return np.r_[q, np.nextafter(near, np.inf), np.nextafter(near, -np.inf)]


@pytest.mark.parametrize("spread", sorted(SPREADS))
@pytest.mark.parametrize("side", ["right", "left"])
def test_equal_numpy_searchsorted(xp, make, dtype, spread, side, monkeypatch):
    # every bucket searched by lifting, however full (the fallback would hide errors)
    monkeypatch.setattr(ranks_module, "MAX_STEPS", 64)
    rng = np.random.default_rng(0)
    values = make(SPREADS[spread](rng))
    queries = make(_queries(rng, SPREADS[spread](rng)))
    host_v, host_q = to_numpy(values), to_numpy(queries)  # compared in the arrays' own dtype
    got = ranks(xp, values, queries, side)
    assert got.shape == queries.shape
    np.testing.assert_array_equal(to_numpy(got), np.searchsorted(host_v, host_q, side=side))


@pytest.mark.parametrize(
    ("values", "dtype"),
    [([-3e38, 0.0, 3e38], np.float32), ([0.0, 1e-320, 2e-320], np.float64)],
    ids=["overflowing", "subnormal"],
)
def test_spans_without_a_finite_scale_take_the_binary_search(values, dtype):
    values = np.array(values, dtype=dtype)
    queries = np.array([-np.inf, -1.0, 0.0, 5e-321, 1.0, np.inf], dtype=dtype)
    for side in ("right", "left"):
        got = ranks(np, values, queries, side)
        np.testing.assert_array_equal(got, np.searchsorted(values, queries, side=side))


def test_clustered_values_take_the_binary_search(monkeypatch):
    calls = []

    class Spy:
        def __getattr__(self, name):
            return getattr(np, name)

        def searchsorted(self, *args, **kwargs):
            calls.append(args[1].shape)
            return np.searchsorted(*args, **kwargs)

    import array_api_compat.numpy as xp

    spy = Spy()
    spy.__array_namespace_info__ = xp.__array_namespace_info__
    values = np.sort(np.r_[np.zeros(30), 5.0])  # 30 values in one bucket: 5 steps
    queries = np.array([-1.0, 0.0, 1.0, 6.0])
    np.testing.assert_array_equal(ranks(spy, values, queries), [0, 30, 30, 31])
    assert calls[-1] == queries.shape  # the queries went through the library's search


def test_traced_jax_arrays_take_searchsorted():
    jax = pytest.importorskip("jax")
    from array_api_compat import array_namespace

    values = jax.numpy.asarray([0.0, 1.0, 1.0, 3.0])
    queries = jax.numpy.asarray([-1.0, 1.0, 2.5, 4.0])
    xp = array_namespace(values)
    jitted = jax.jit(lambda v, q: ranks(xp, v, q))
    np.testing.assert_array_equal(np.asarray(jitted(values, queries)), [0, 3, 3, 4])
