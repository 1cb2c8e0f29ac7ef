from __future__ import annotations

import itertools

import numpy as np
import pytest
from array_api_compat import device as array_device
from array_api_compat import is_writeable_array

from nntk_array._mc.directions import COL_TILE, ROW_TILE, make_directions
from nntk_array.testing import to_numpy
from nntk_array.testing import tol as _tol


def tol(dtype):
    return _tol(dtype, "contraction")


def _dirs(xp, device, dtype, sampling, m, p, group_size=1, cache=0):
    return make_directions(
        xp,
        m,
        sampling,
        5,
        num_params=p,
        dtype=dtype,
        device=device,
        group_size=group_size,
        cache_bytes=cache,
    )


class TestTiledGaussian:
    @pytest.mark.parametrize("cache", [0, 2**30])
    def test_rows_and_columns_are_one_matrix(self, xp, device, dtype, cache):
        m, p = 2 * ROW_TILE + 3, COL_TILE + 5
        d = _dirs(xp, device, dtype, "iid", m, p, cache=cache)
        full = to_numpy(d.rows(0, m))
        assert full.shape == (m, p) and d.rows(0, m).dtype == dtype
        if device is not None:
            assert array_device(d.rows(0, 3)) == device
        np.testing.assert_array_equal(to_numpy(d.rows(5, 21)), full[5:21])
        np.testing.assert_array_equal(to_numpy(d.columns(0, p)), full)
        np.testing.assert_array_equal(
            to_numpy(d.columns(COL_TILE - 2, COL_TILE + 3)), full[:, COL_TILE - 2 : COL_TILE + 3]
        )
        again = _dirs(xp, device, dtype, "iid", m, p)
        np.testing.assert_array_equal(to_numpy(again.rows(0, m)), full)
        assert abs(full.mean()) < 0.01 and abs(full.var() - 1) < 0.02

    def test_radii_are_uniform(self, xp, device, dtype):
        d = _dirs(xp, device, dtype, "iid", 4000, 3)
        r = to_numpy(d.radial_uniforms(0, 4000)).astype(float)
        assert r.shape == (4000,) and r.min() >= 0 and r.max() < 1
        assert abs(r.mean() - 0.5) < 5 * 0.0046
        np.testing.assert_array_equal(to_numpy(d.radial_uniforms(17, 40)), r[17:40])


class TestStructured:
    def test_orthogonal_rows_within_groups(self, xp, device, dtype):
        if not hasattr(xp, "linalg"):
            pytest.skip("no linalg extension")
        d = _dirs(xp, device, dtype, "orthogonal", 12, 8, group_size=6)
        u = to_numpy(d.rows(0, 12)).astype(float)
        g = u @ u.T
        for s in (0, 6):
            block = g[s : s + 6, s : s + 6]
            np.testing.assert_allclose(block - np.diag(np.diag(block)), 0, atol=1e-4)
        # Rows of different groups are independent N(0, I) vectors of R^8: their cosines are
        # never 0 or ±1 (a probability-0 event; an orthogonal block leaking across the group
        # boundary or a repeated group gives them), and their squares have the Beta(1/2, 7/2)
        # distribution, mean 1/8, variance 0.022: the 36 of them sum to 4.5 ± 0.9.
        cos = (g / np.sqrt(np.outer(np.diag(g), np.diag(g))))[:6, 6:]
        assert np.abs(cos).min() > 1e-5 and np.abs(cos).max() < 0.999, cos
        assert 0.5 < np.sum(cos**2) < 4.5 + 10 * 0.9, np.sum(cos**2)
        np.testing.assert_array_equal(to_numpy(d.rows(3, 9)), u[3:9].astype(u.dtype))

    def test_orthogonal_rows_are_marginally_standard_normal(self):
        xp = np
        d = _dirs(xp, None, np.float64, "orthogonal", 4000, 4, group_size=4)
        u = d.rows(0, 4000)
        np.testing.assert_allclose(u.mean(0), 0, atol=5 * 0.016)
        np.testing.assert_allclose(np.cov(u.T), np.eye(4), atol=0.08)

    def test_lattice_rows_are_standard_normal_and_regenerable(self, xp, device, dtype):
        d = _dirs(xp, device, dtype, "qmc", 2000, 5, group_size=1000)
        u = to_numpy(d.rows(0, 2000)).astype(float)
        assert np.all(np.isfinite(u))
        np.testing.assert_allclose(u.mean(0), 0, atol=0.05)
        np.testing.assert_allclose(u.var(0), 1, atol=0.05)
        np.testing.assert_allclose(to_numpy(d.columns(1, 3)).astype(float), u[:, 1:3])
        # a lattice stratifies each coordinate: 1000 distinct levels out of q = 1009, so the
        # empirical CDF is off by at most the 9 skipped levels (iid: standard deviation 16)
        counts = np.searchsorted(np.sort(u[:1000, 0]), np.linspace(-2, 2, 9))
        expected = 1000 * np.array(
            [0.02275, 0.0668, 0.1587, 0.3085, 0.5, 0.6915, 0.8413, 0.9332, 0.97725]
        )
        assert np.all(np.abs(counts - expected) <= 10)


class TestSweep:
    """A column sweep gives U's columns in consecutive blocks, draws each tile once and sums
    the Gram of what it gave."""

    @pytest.mark.parametrize("cache", [0, 2**30])
    def test_blocks_are_the_columns_and_the_gram_is_u_ut(self, xp, device, dtype, cache):
        m, p = ROW_TILE + 5, 2 * COL_TILE + 700
        d = _dirs(xp, device, dtype, "iid", m, p, cache=cache)
        full = to_numpy(_dirs(xp, device, dtype, "iid", m, p).rows(0, m)).astype(np.float64)
        sweep = d.sweep(dtype)
        # blocks inside one tile, across a tile boundary, across two, and to the end
        edges = [0, 300, COL_TILE - 1, COL_TILE + 2, 2 * COL_TILE + 50, p]
        for a, b in itertools.pairwise(edges):
            assert not sweep.done
            np.testing.assert_array_equal(to_numpy(sweep(a, b)), full[:, a:b])
        assert sweep.done
        assert sweep.gram is not None and sweep.gram.dtype == dtype
        gram = full @ full.T
        np.testing.assert_allclose(to_numpy(sweep.gram), gram, rtol=0, atol=tol(dtype) * p)

    def test_each_tile_is_drawn_once(self, monkeypatch):
        m, p = 2 * ROW_TILE, 3 * COL_TILE + 11
        d = _dirs(np, None, np.float64, "iid", m, p)
        drawn: list[tuple[int, int]] = []
        draw = d._draw

        def counted(i, j, out=None):
            drawn.append((i, j))
            return draw(i, j, out)

        monkeypatch.setattr(d, "_draw", counted)
        sweep = d.sweep(np.float64)
        for a, b in [
            (0, 5),
            (5, COL_TILE + 3),
            (COL_TILE + 3, 3 * COL_TILE + 1),
            (3 * COL_TILE + 1, p),
        ]:
            sweep(a, b)
        assert sorted(drawn) == [(i, j) for i in range(2) for j in range(4)]

    @pytest.mark.parametrize(("start", "stop"), [(3, 10), (0, 0), (0, COL_TILE + 1)])
    def test_blocks_out_of_order_are_refused(self, start, stop):
        sweep = _dirs(np, None, np.float64, "iid", 4, COL_TILE).sweep(np.float64)
        with pytest.raises(ValueError, match="consecutive blocks from 0 to P"):
            sweep(start, stop)

    def test_columns_fill_a_view(self, xp, device, dtype):
        m, p = ROW_TILE, 2 * COL_TILE
        d = _dirs(xp, device, dtype, "iid", m, p)
        full = to_numpy(d.rows(0, m))
        buffer = xp.zeros((m, p + 4), dtype=dtype, device=device)
        if not is_writeable_array(buffer):
            pytest.skip("the library's arrays cannot be written in place")
        assert d.columns(COL_TILE, p, out=buffer[:, 4 : COL_TILE + 4]) is not None
        d.columns(5, 9, out=buffer[:, 0:4])
        np.testing.assert_array_equal(to_numpy(buffer[:, 4 : COL_TILE + 4]), full[:, COL_TILE:])
        np.testing.assert_array_equal(to_numpy(buffer[:, :4]), full[:, 5:9])
