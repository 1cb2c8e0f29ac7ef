"""Kernel tracking along checkpoints, with common random numbers for the NNTK.

The common-random-numbers test compares the variance of the estimated change K(θ₁) − K(θ₀)
between two nearby checkpoints with one seed per pair (what ``track_kernel`` does) and with
independent seeds. Its reference ratio was measured over 400 seeds (NumPy, float64, the
configuration below): 7.5e-5. With S seeds per run the estimated ratio of two variances has
at least S − 1 degrees of freedom in numerator and denominator (more, since the N² entries
are pooled), so it lies within the F(S − 1, S − 1) quantiles around the reference: the margin
is that distribution's, not a picked factor.
"""

from __future__ import annotations

import numpy as np
import pytest
from array_api_compat import is_numpy_namespace
from scipy import stats

import nntk_array as nk
from nntk_array.testing import to_numpy

SIGMA, SAMPLES = 0.3, 64


def _setup(make, xp, device, dtype, activation: str = "sign"):
    model = nk.MLP(1, (16,), activation=activation)
    theta = model.init(0, xp=xp, dtype=dtype, device=device)
    step = make(np.random.default_rng(1).standard_normal(model.num_params))
    x = make(np.linspace(-1.0, 1.0, 6)[:, None])
    return model, theta, step, x


class TestTrackKernel:
    def test_identical_checkpoints_do_not_change(self, make, xp, device, dtype):
        model, theta, _, x = _setup(make, xp, device, dtype)
        for kind, extra in (("ntk", {}), ("nntk", {"sigma": SIGMA, "samples": SAMPLES})):
            track = nk.track_kernel(model, [theta, theta, theta], x, kind=kind, seed=None, **extra)
            np.testing.assert_array_equal(to_numpy(track.relative_change), np.zeros(3))

    def test_matches_direct_computation(self, make, xp, device, dtype):
        model, theta, step, x = _setup(make, xp, device, dtype)
        thetas = [theta, theta + 0.05 * step, theta + 0.2 * step]
        y = make(np.sign(np.linspace(-1.0, 1.0, 6)))
        track = nk.track_kernel(
            model, thetas, x, kind="nntk", y=y, sigma=SIGMA, samples=SAMPLES, seed=5
        )
        direct = [nk.nntk(model, t, x, sigma=SIGMA, samples=SAMPLES, seed=5) for t in thetas]
        k0 = to_numpy(direct[0]).astype(np.float64)
        tol = 100 * float(np.finfo(np.float32 if dtype == xp.float32 else np.float64).eps)
        for got, want in zip(track.kernels, direct, strict=True):
            np.testing.assert_array_equal(to_numpy(got), to_numpy(want))
        change = [
            np.linalg.norm(to_numpy(k).astype(np.float64) - k0) / np.linalg.norm(k0) for k in direct
        ]
        np.testing.assert_allclose(to_numpy(track.relative_change), change, rtol=tol, atol=tol)
        assert to_numpy(track.relative_change)[2] > to_numpy(track.relative_change)[1] > 0
        align = [float(to_numpy(nk.kernel_alignment(k, y))) for k in direct]
        np.testing.assert_allclose(to_numpy(track.alignment), align, rtol=tol, atol=tol)
        assert track.seed == 5
        ntk_track = nk.track_kernel(model, thetas, x, keep_kernels=False)
        assert ntk_track.kernels is None and ntk_track.alignment is None and ntk_track.seed is None
        local = [to_numpy(nk.ntk(model, t, x)).astype(np.float64) for t in thetas]
        want = [np.linalg.norm(k - local[0]) / np.linalg.norm(local[0]) for k in local]
        np.testing.assert_allclose(to_numpy(ntk_track.relative_change), want, rtol=tol, atol=tol)

    def test_drawn_seed_is_reported_and_stacked_checkpoints_work(self, make, xp, device, dtype):
        model, theta, step, x = _setup(make, xp, device, dtype)
        stacked = xp.stack([theta, theta + 0.1 * step])
        track = nk.track_kernel(model, stacked, x, kind="nntk", sigma=SIGMA, samples=SAMPLES)
        again = nk.nntk(model, stacked[1, :], x, sigma=SIGMA, samples=SAMPLES, seed=track.seed)
        np.testing.assert_array_equal(to_numpy(track.kernels[1]), to_numpy(again))

    def test_bad_input(self, make, xp, device, dtype):
        model, theta, _, x = _setup(make, xp, device, dtype)
        nntk_args = {"kind": "nntk", "sigma": SIGMA, "samples": SAMPLES}
        for args, kwargs, err, name in [
            (([],), {}, ValueError, "`thetas`"),
            (([theta, theta[:3]],), {}, ValueError, r"`thetas\[1\]`"),
            ((theta,), {}, ValueError, "`thetas`"),
            ((7,), {}, TypeError, "`thetas`"),
            (([theta],), {"kind": "jacobian"}, ValueError, "`kind`"),
            (([theta],), {"sigma": 0.1}, ValueError, "`sigma`"),
            (([theta],), {"seed": 0}, ValueError, "`seed`"),
            (([theta],), {"kind": "nntk", "samples": 8}, ValueError, "`sigma`"),
            (([theta],), {"kind": "nntk", "sigma": 0.1}, ValueError, "`samples`"),
            (([theta],), {**nntk_args, "seed": 1.0}, TypeError, "`seed`"),
            (([theta],), {**nntk_args, "seed": -1}, ValueError, "`seed`"),
            (([theta],), {**nntk_args, "return_stderr": True}, ValueError, "`return_stderr`"),
            (([theta],), {"keep_kernels": 1}, TypeError, "`keep_kernels`"),
            (([theta],), {"y": make(np.ones(5))}, ValueError, "`y`"),
        ]:
            with pytest.raises(err, match=name):
                nk.track_kernel(model, *args, x, **kwargs)

    def test_mixed_libraries(self, make, xp, device, dtype):
        model, theta, _, x = _setup(make, xp, device, dtype)
        if is_numpy_namespace(xp):
            pytest.skip("needs a library other than NumPy")
        with pytest.raises(TypeError, match="one array library"):
            nk.track_kernel(model, [theta, np.zeros(model.num_params)], x)


REFERENCE_RATIO = 7.5e-5  # 400 seeds, ReLU MLP 1-16-1, ε = 0.01, σ = 0.3, M = 64 (module doc)
SEEDS = 16


def test_common_random_numbers_reduce_the_variance_of_the_change():
    model = nk.MLP(1, (16,), activation="relu")
    theta0 = model.init(0, xp=np)
    theta1 = theta0 + 0.01 * np.random.default_rng(1).standard_normal(model.num_params)
    x = np.linspace(-1.0, 1.0, 8)[:, None]
    common, independent = [], []
    for s in range(SEEDS):
        track = nk.track_kernel(
            model, [theta0, theta1], x, kind="nntk", sigma=SIGMA, samples=SAMPLES, seed=s
        )
        k0, k1 = track.kernels
        other = nk.nntk(model, theta0, x, sigma=SIGMA, samples=SAMPLES, seed=SEEDS + s)
        common.append(k1 - k0)
        independent.append(k1 - other)

    def variance(changes: list[np.ndarray]) -> float:
        d = np.stack(changes)
        return float(np.sum((d - d.mean(axis=0)) ** 2))

    ratio = variance(common) / variance(independent)
    spread = stats.f.ppf(0.9995, SEEDS - 1, SEEDS - 1)  # two-sided 0.1 % of the F(15, 15) law
    assert REFERENCE_RATIO / spread <= ratio <= REFERENCE_RATIO * spread, ratio
    assert ratio * spread < 1  # and CRN helps: the ratio's upper confidence bound is below 1
