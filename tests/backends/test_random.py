from __future__ import annotations

import numpy as np
import pytest
from array_api_compat import device as array_device

from nntk_array.backends.random import Generator
from nntk_array.testing import to_numpy


class TestGenerator:
    @pytest.mark.parametrize("dist", ["normal", "uniform"])
    def test_shape_dtype_device(self, xp, dtype, device, dist):
        out = getattr(Generator(0, xp=xp, device=device), dist)((3, 4), dtype=dtype)
        assert out.shape == (3, 4) and out.dtype == dtype
        if device is not None:
            assert array_device(out) == device

    def test_reproducible_and_advancing(self, xp, dtype, device):
        a, b = Generator(3, xp=xp, device=device), Generator(3, xp=xp, device=device)
        first = to_numpy(a.normal((5,), dtype=dtype))
        np.testing.assert_array_equal(first, to_numpy(b.normal((5,), dtype=dtype)))
        assert not np.array_equal(first, to_numpy(a.normal((5,), dtype=dtype)))

    def test_moments(self, xp, dtype, device):
        # 40000 draws: the sample mean has standard error 0.005, the variance 0.007.
        z = to_numpy(Generator(1, xp=xp, device=device).normal((40000,), dtype=dtype)).astype(float)
        u = to_numpy(Generator(2, xp=xp, device=device).uniform((40000,), dtype=dtype)).astype(
            float
        )
        assert abs(z.mean()) < 5 * 0.005 and abs(z.var() - 1) < 5 * 0.0071
        assert abs(u.mean() - 0.5) < 5 * 0.0015 and u.min() >= 0 and u.max() < 1

    def test_native_generator(self, xp, dtype, device):
        name = xp.__name__
        if "torch" in name:
            import torch

            native = torch.Generator(device=device).manual_seed(4)
        elif "jax" in name:
            import jax

            native = jax.random.key(4)
        elif "cupy" in name:
            import cupy

            native = cupy.random.default_rng(4)
        else:
            native = np.random.default_rng(4)
        out = Generator(native, xp=xp, device=device).normal((3,), dtype=dtype)
        assert out.shape == (3,)

    def test_bad_seeds(self, xp, device):
        with pytest.raises(ValueError, match="`seed` must be >= 0"):
            Generator(-1, xp=xp, device=device)
        for bad in ("0", 1.5, True, object()):
            with pytest.raises(TypeError, match="`seed` must be an int or a"):
                Generator(bad, xp=xp, device=device)

    def test_none_draws_fresh_entropy(self, xp, dtype, device):
        a = to_numpy(Generator(None, xp=xp, device=device).normal((8,), dtype=dtype))
        b = to_numpy(Generator(None, xp=xp, device=device).normal((8,), dtype=dtype))
        assert not np.array_equal(a, b)
