"""Sums of kinked activations by breakpoints against the terms summed one by one."""

from __future__ import annotations

import numpy as np
import pytest

from nntk_array.models.activations import ACTIVATIONS
from nntk_array.models.piecewise import line_sums
from nntk_array.testing import to_numpy, tol

KINKED = sorted(name for name, a in ACTIVATIONS.items() if a.kink is not None)


def _terms_summed(x, slope, shift, weights, activation):
    z = slope[:, None, :] * x[None, :, None] + shift[:, None, :]  # (G, N, S)
    return np.einsum("gns,gsf->gnf", ACTIVATIONS[activation].fn(np, z), weights)


def _case(make):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(40)
    x[5], x[7] = 0.0, x[11]  # an input at the unbiased terms' breakpoint, and a repeat
    slope = rng.standard_normal((3, 20))
    slope[0, 0] = 0.0  # a flat term: its constant value everywhere
    shift = rng.standard_normal((3, 20))
    shift[1, :4] = 0.0  # breakpoints exactly at the input 0
    weights = rng.standard_normal((3, 20, 2))
    arrays = [make(a) for a in (x, slope, shift, weights)]
    return arrays, [to_numpy(a).astype(np.float64) for a in arrays]  # the reference's inputs


def _check(got, want, dtype):
    assert got.shape == (3, 40, 2) and got.dtype == dtype
    scale = np.abs(want).max()
    np.testing.assert_allclose(to_numpy(got), want, rtol=0, atol=tol(dtype, "contraction") * scale)


@pytest.mark.parametrize("activation", KINKED)
def test_equal_the_terms_summed(xp, make, dtype, activation):
    (x, slope, shift, weights), host = _case(make)
    got = line_sums(xp, x, slope, shift, weights, ACTIVATIONS[activation])
    _check(got, _terms_summed(*host, activation), dtype)


@pytest.mark.parametrize("activation", ["sign", "step"])
def test_every_breakpoint_at_an_input_takes_the_value_at_zero(xp, make, dtype, activation):
    # no shift: every breakpoint is 0, an input, where sign and step are 0
    (x, slope, _, weights), (hx, hslope, hshift, hweights) = _case(make)
    got = line_sums(xp, x, slope, None, weights, ACTIVATIONS[activation])
    _check(got, _terms_summed(hx, hslope, 0 * hshift, hweights, activation), dtype)
