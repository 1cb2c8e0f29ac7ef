"""The jackknife without re-running the kernel equals the delete-a-batch jackknife that
re-runs it with each batch masked out (the oracle below), on every estimator and route."""

from __future__ import annotations

import numpy as np
import pytest

from nntk_array._mc.estimators import Estimator, estimator, quad, ratio
from nntk_array._mc.kernel import Contraction, contract
from nntk_array._mc.moments import RunningMoments
from nntk_array._mc.plan import JACKKNIFE_BATCHES

Groups = list[tuple[int, int]]


def _masked_jackknife(
    est: Estimator,
    a1: np.ndarray,
    al1: np.ndarray,
    a2: np.ndarray,
    al2: np.ndarray,
    w: np.ndarray,
    groups: Groups,
    full: bool,
) -> np.ndarray:
    """The definition: drop each batch of whole groups from both forms, recompute the ratio."""
    n_batches = min(len(groups), JACKKNIFE_BATCHES)
    bounds = [groups[(len(groups) * b) // n_batches][0] for b in range(n_batches)]
    bounds.append(groups[-1][1])
    col = np.arange(a1.shape[-1])
    moments = RunningMoments()
    for b in range(n_batches):
        keep = ((col < bounds[b]) | (col >= bounds[b + 1])).astype(a1.dtype)
        num = quad(np, a1 * keep, w, a2 * keep, full)
        den = est.denominator(np, al1 * keep, al2 * keep, groups)
        moments.add(np, ratio(np, num, den, full))
    return np.sqrt(moments.m2 * ((n_batches - 1) / n_batches))


@pytest.mark.parametrize("name", ["unbiased", "plugin", "sketch", "directional"])
@pytest.mark.parametrize(("m", "group_size"), [(45, 1), (100, 4), (30, 7)])
@pytest.mark.parametrize("full", [False, True])
@pytest.mark.parametrize("symmetric", [False, True])
def test_sliced_jackknife_equals_the_masked_one(name, m, group_size, full, symmetric):
    rng = np.random.default_rng(m + group_size)
    n1, n2, o, p = 4, 3, 2, 6
    groups = [(s, min(s + group_size, m)) for s in range(0, m, group_size)]
    est = estimator(name, paper=False)
    if est.diagonal:
        w = rng.uniform(0.5, 2.0, m)
    else:
        u = rng.standard_normal((m, p))
        w = u @ u.T
        if name == "unbiased":
            gid = np.arange(m) // group_size
            w = np.where(gid[:, None] != gid[None, :], w, 0.0)
    al1 = rng.uniform(0.1, 1.0, (n1, m))  # attention-like weights: the ratio matters
    a1 = rng.standard_normal((n1, o, m)) * al1[:, None, :]
    if symmetric:
        al2, a2 = al1, a1
    else:
        al2 = rng.uniform(0.1, 1.0, (n2, m))
        a2 = rng.standard_normal((n2, o, m)) * al2[:, None, :]
    c = Contraction(est, groups, full, True, np.float64)
    kernel, se = contract(c, a1, al1, a2, al2, w)
    num = quad(np, a1, w, a2, full)
    np.testing.assert_allclose(
        kernel, ratio(np, num, est.denominator(np, al1, al2, groups), full), rtol=1e-12
    )
    expected = _masked_jackknife(est, a1, al1, a2, al2, w, groups, full)
    np.testing.assert_allclose(se, expected, rtol=1e-9, atol=1e-12 * np.abs(expected).max())
