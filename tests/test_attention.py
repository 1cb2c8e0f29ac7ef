from __future__ import annotations

import math

import numpy as np
import pytest
from array_api_compat import array_namespace
from array_api_compat import device as array_device

import nntk_array as nk
from nntk_array._mc.attention import temperature_for_ess as _temperature_for_ess
from nntk_array.testing import to_numpy, tol


def _softmax(s: np.ndarray, t: float) -> np.ndarray:
    z = s / t - (s / t).max(axis=-1, keepdims=True)
    return np.exp(z) / np.exp(z).sum(axis=-1, keepdims=True)


class TestAttentionWeights:
    def test_matches_softmax_and_preserves_array_type(self, make, dtype):
        s = np.random.default_rng(0).standard_normal((4, 7)) * 30
        w = nk.attention_weights(make(s), temperature=2.0)
        assert array_namespace(w) is array_namespace(make(s)) and w.dtype == dtype
        assert array_device(w) == array_device(make(s))
        ref = _softmax(to_numpy(make(s)).astype(float), 2.0)
        np.testing.assert_allclose(to_numpy(w), ref, rtol=tol(dtype, "contraction"), atol=1e-7)
        np.testing.assert_allclose(to_numpy(w).sum(-1), 1.0, rtol=tol(dtype, "contraction"))

    def test_shift_invariance_and_huge_scores(self, make, dtype):
        s = np.array([[0.0, 1.0, 2.0], [1e4, 1e4 + 1.0, 1e4 + 2.0]])
        w = to_numpy(nk.attention_weights(make(s)))
        np.testing.assert_allclose(w[0], w[1], rtol=tol(dtype, "contraction"))
        assert np.all(np.isfinite(w))

    def test_limits_of_the_temperature(self, make):
        s = make(np.array([0.0, 3.0, -1.0, 2.0]))
        np.testing.assert_allclose(to_numpy(nk.attention_weights(s, temperature=math.inf)), 0.25)
        peaked = to_numpy(nk.attention_weights(s, temperature=1e-3))
        np.testing.assert_allclose(peaked, [0, 1, 0, 0], atol=1e-6)

    def test_axis_and_per_row_temperature(self, make, xp, dtype):
        s = np.random.default_rng(1).standard_normal((3, 5))
        w = to_numpy(nk.attention_weights(make(s), axis=0))
        np.testing.assert_allclose(
            w, _softmax(to_numpy(make(s)).T.astype(float), 1.0).T, rtol=tol(dtype, "contraction")
        )
        temps = make(np.array([[0.5], [1.0], [math.inf]]))
        w = to_numpy(nk.attention_weights(make(s), temperature=temps))
        np.testing.assert_allclose(w[2], 0.2, rtol=tol(dtype, "contraction"))

    def test_mask_and_fully_masked_rows(self, make, xp):
        s = make(np.zeros((2, 4)))
        mask = xp.asarray(
            np.array([[True, False, True, False], [False] * 4]), device=array_device(s)
        )
        w = to_numpy(nk.attention_weights(s, mask=mask))
        np.testing.assert_allclose(w, [[0.5, 0, 0.5, 0], [0, 0, 0, 0]])
        logw = to_numpy(nk.attention_weights(s, mask=mask, log=True))
        assert np.all(np.isneginf(logw[1])) and np.isneginf(logw[0, 1])
        np.testing.assert_allclose(logw[0, 0], math.log(0.5), rtol=1e-6)

    def test_log_weights_keep_tiny_weights(self, make, dtype):
        s = make(np.array([0.0, -200.0]))
        logw = to_numpy(nk.attention_weights(s, log=True))
        np.testing.assert_allclose(logw, [0.0, -200.0], atol=1e-4)

    def test_errors(self, make, xp):
        s = make(np.zeros(3))
        for t in (0.0, -1.0, math.nan):
            with pytest.raises(ValueError, match="temperature"):
                nk.attention_weights(s, temperature=t)
        with pytest.raises(TypeError, match="temperature"):
            nk.attention_weights(s, temperature="hot")
        with pytest.raises(TypeError, match="floating"):
            nk.attention_weights(xp.zeros(3, dtype=xp.int32))
        with pytest.raises(TypeError, match="mask"):
            nk.attention_weights(s, mask=s)
        with pytest.raises(ValueError, match="axis"):
            nk.attention_weights(s, axis=2)
        with pytest.raises(ValueError, match="NaN"):
            nk.attention_weights(make(np.array([0.0, np.inf])))


class TestEffectiveSampleSize:
    def test_bounds(self, make, dtype):
        s = np.random.default_rng(2).standard_normal((6, 50)) * 5
        for t in (0.01, 1.0, 100.0):
            ess = to_numpy(nk.effective_sample_size(nk.attention_weights(make(s), temperature=t)))
            assert np.all((ess >= 1 - 1e-4) & (ess <= 50 * (1 + 1e-4)))

    @pytest.mark.parametrize("target", [0.1, 0.3, 0.5, 0.9])
    def test_target_ess_bisection(self, make, xp, dtype, target):
        s = make(np.random.default_rng(3).standard_normal((4, 200)) * 3)
        t = _temperature_for_ess(xp, s, target)
        ess = to_numpy(nk.effective_sample_size(nk.attention_weights(s, temperature=t)))
        np.testing.assert_allclose(ess / 200, target, rtol=1e-3)


class TestAttentionSpec:
    def test_validation(self):
        with pytest.raises(ValueError, match="score"):
            nk.Attention(score="cosine")
        with pytest.raises(ValueError, match="not both"):
            nk.Attention(temperature=1.0, target_ess=0.5)
        for t in (0, -1.0, math.nan, True):
            with pytest.raises(ValueError, match="temperature"):
                nk.Attention(temperature=t)
        for e in (0, 1.5, math.nan):
            with pytest.raises(ValueError, match="target_ess"):
                nk.Attention(target_ess=e)
        with pytest.raises(ValueError, match="targets"):
            nk.Attention(score="loss")
        with pytest.raises(ValueError, match="targets"):
            nk.Attention(score="output", targets=np.zeros(3))
