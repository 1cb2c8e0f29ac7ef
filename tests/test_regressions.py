"""Regression tests for the bugs found in the architecture review; each failed before its fix.

(The fixes in predictions and the backend seams have theirs beside their tests:
``tests/test_predict.py`` for ``gradient_flow`` under ``jax.jit`` and the Cholesky path's
triangular solves, ``tests/backends/test_random.py`` for a torch generator on another device,
``tests/backends/test_autodiff.py`` for the JAX Jacobian compiled once per shapes.)
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import nntk_array as nk
from nntk_array.testing import to_numpy, tol

MODEL = nk.MLP(1, (16,), activation="sign")
OPTS = {"sigma": 0.3, "samples": 256, "seed": 0}


def _np(a: object) -> np.ndarray:
    return to_numpy(a).astype(np.float64)


def _setup(make):
    theta = make(MODEL.init(0, xp=np))
    x1 = make(np.linspace(-1.0, 1.0, 6)[:, None])
    x2 = make(np.array([[-0.55], [0.05], [0.8]]))
    return theta, x1, x2


def test_integer_scalars_are_sample_counts(make, xp, device):
    theta, x1, _ = _setup(make)
    ref = _np(nk.nntk(MODEL, theta, x1, **OPTS))
    for count in (np.int64(256), np.int32(256), xp.asarray(256, device=device)):
        k = nk.nntk(MODEL, theta, x1, **{**OPTS, "samples": count})
        np.testing.assert_array_equal(_np(k), ref)
    g = nk.nonlocal_grad(lambda t: t[:, :2], theta, sigma=0.3, samples=np.int64(16), seed=0)
    assert tuple(g.shape) == (2, MODEL.num_params)


@pytest.mark.parametrize("score", ["output", "loss"])
def test_attention_weights_come_from_a_stated_reference_set(make, dtype, score):
    """Train and test kernels in separate calls share one set of weights."""
    theta, x1, x2 = _setup(make)
    targets = make(np.sign(np.linspace(-1.0, 1.0, 6)))
    att = nk.Attention(score=score, reference=x1, targets=targets if score == "loss" else None)
    joint = _np(
        nk.nntk(MODEL, theta, make(np.concatenate([_np(x1), _np(x2)])), attention=att, **OPTS)
    )
    train = _np(nk.nntk(MODEL, theta, x1, attention=att, **OPTS))
    test = _np(nk.nntk(MODEL, theta, x2, x1, attention=att, **OPTS))
    scale = np.abs(joint).max()
    rtol = tol(dtype, "contraction")
    np.testing.assert_allclose(train, joint[:6, :6], rtol=rtol, atol=rtol * scale)
    np.testing.assert_allclose(test, joint[6:, :6], rtol=rtol, atol=rtol * scale)
    # Without `reference` the call's x1 is the reference set: a cross kernel's x1 rows.
    default = nk.Attention(score=score, targets=targets if score == "loss" else None)
    cross = _np(nk.nntk(MODEL, theta, x1, x2, attention=default, **OPTS))
    np.testing.assert_allclose(cross, joint[:6, 6:], rtol=rtol, atol=rtol * scale)


def test_loss_score_refuses_antithetic_sampling(make):
    theta, x1, _ = _setup(make)
    att = nk.Attention(score="loss", targets=make(np.zeros(6)))
    with pytest.raises(ValueError, match="antithetic"):
        nk.nntk(MODEL, theta, x1, attention=att, sampling="antithetic", **OPTS)


def test_zero_inputs_are_a_clear_error(make):
    theta, x1, _ = _setup(make)
    empty = x1[:0, ...]
    with pytest.raises(ValueError, match="`x1` must hold at least one input"):
        nk.nntk(MODEL, theta, empty, **OPTS)
    with pytest.raises(ValueError, match="`x2` must hold at least one input"):
        nk.nntk(MODEL, theta, x1, empty, **OPTS)
    with pytest.raises(ValueError, match="`x1` must hold at least one input"):
        nk.ntk(MODEL, theta, empty)
    with pytest.raises(ValueError, match="`x1` must hold at least one input"):
        nk.nntk(lambda t, x: t[:, :1] * x[:, 0], theta, empty, **OPTS)


def test_huge_widths_are_a_clear_error():
    with pytest.raises(ValueError, match=r"`hidden\[0\]` must be at most 2\*\*31 - 1"):
        nk.MLP(2, (10**12,), 1)


@pytest.mark.backend("numpy")
def test_memory_budget_docstring_says_what_grows_with_m():
    """The Gram route keeps three M × M matrices beyond the budget; the stream route does
    not. The docstring says so, and the measured peaks agree."""
    assert "M²" in nk.nntk.__doc__ and "N·M" in nk.nntk.__doc__
    model = nk.MLP(1, (4,))
    theta, x = model.init(0, xp=np), np.linspace(-1.0, 1.0, 4)[:, None]

    def peak(route: str, m: int) -> int:
        tracemalloc.start()
        nk.nntk(
            model,
            theta,
            x,
            sigma=0.1,
            samples=m,
            seed=0,
            route=route,
            memory_budget=2**20,
            variance_reduction="none",  # the routes of the plain estimator
        )
        size = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return size

    m_small, m_large = 256, 1024
    growth = peak("gram", m_large) - peak("gram", m_small)
    assert growth >= 2 * 8 * (m_large**2 - m_small**2)  # at least two M × M float64 matrices
    assert peak("stream", m_large) < 8 * m_large**2  # less than one M × M matrix
