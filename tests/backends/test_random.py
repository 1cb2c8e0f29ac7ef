from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from array_api_compat import array_namespace, is_writeable_array
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

    def test_spawn_normal_and_writes_into_views(self, xp, dtype, device):
        # the fused draw (compiled on JAX) and the draw into a strided view of a block give
        # the numbers of spawn(...).normal(...)
        gen = Generator(5, xp=xp, device=device)
        want = to_numpy(gen.spawn(0, 2, 3).normal((4, 6), dtype=dtype))
        got = to_numpy(gen.spawn_normal((0, 2, 3), (4, 6), dtype=dtype))
        np.testing.assert_array_equal(got, want)
        block = xp.zeros((4, 10), dtype=dtype, device=device)
        if is_writeable_array(block):
            gen.spawn(0, 2, 3).normal((4, 6), dtype=dtype, out=block[:, 2:8])
            np.testing.assert_array_equal(to_numpy(block)[:, 2:8], want)
            assert not to_numpy(block)[:, :2].any() and not to_numpy(block)[:, 8:].any()

    @pytest.mark.parametrize(
        ("matrix", "rows", "cols"),
        [
            ((12, 10), range(0, 3), range(0, 2)),  # short last row and column of tiles
            ((12, 10), range(1, 3), range(1, 2)),  # a block away from the origin
            ((10, 12), range(0, 2), range(0, 2)),  # whole tiles only
            ((12, 10), range(2, 3), range(0, 1)),  # one short tile
        ],
    )
    def test_spawn_normal_grid(self, xp, dtype, device, matrix, rows, cols):
        # a block of a matrix in tiles of 5 x 6, drawn at once, holds the numbers of its
        # tiles drawn one by one
        def tile(i, j):
            return min(5, matrix[0] - 5 * i), min(6, matrix[1] - 6 * j)

        gen = Generator(6, xp=xp, device=device)
        want = np.block(
            [
                [to_numpy(gen.spawn_normal((0, i, j), tile(i, j), dtype=dtype)) for j in cols]
                for i in rows
            ]
        )
        got = gen.spawn_normal_grid(0, rows, cols, want.shape, (5, 6), dtype=dtype)
        if got is None:  # drawn tile by tile into buffers on this library
            assert "jax" not in xp.__name__
            return
        assert got.dtype == dtype
        np.testing.assert_array_equal(to_numpy(got), want)

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


@pytest.mark.backend("torch")
class TestTorchDevices:
    """A torch.Generator must be on the arrays' device, index included (cuda:0 is not cuda:1)."""

    def test_same_device(self, monkeypatch):
        torch = pytest.importorskip("torch")
        from nntk_array.backends.random import _same_device

        dev = torch.device
        assert _same_device(dev("cpu"), dev("cpu")) and _same_device("cpu", dev("cpu", 0))
        assert not _same_device(dev("cuda", 0), dev("cuda", 1))
        assert not _same_device(dev("cuda", 0), dev("cpu"))
        assert not _same_device("meta", "cpu")
        # "cuda" without an index is the current CUDA device: fake one where there is none.
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        for current in (0, 1):
            monkeypatch.setattr(torch.cuda, "current_device", lambda current=current: current)
            assert _same_device("cuda", dev("cuda", current))
            assert not _same_device(dev("cuda"), dev("cuda", 1 - current))

    def test_generator_on_another_index_is_refused(self):
        # Regression: only the device types were compared, so a generator on cuda:1 passed for
        # arrays on cuda:0 and failed deep inside the first draw. A subclass reports cuda:1
        # without a GPU; the check fails before anything is drawn.
        torch = pytest.importorskip("torch")

        class OnCuda1(torch.Generator):
            @property
            def device(self) -> object:
                return torch.device("cuda", 1)

        with pytest.raises(ValueError, match=r"`rng`.*cuda:1.*cuda:0"):
            Generator(OnCuda1(), xp=array_namespace(torch.empty(0)), device="cuda:0")
        with pytest.raises(ValueError, match=r"`rng`.*cuda:1.*cpu"):
            Generator(OnCuda1(), xp=array_namespace(torch.empty(0)), device=None)

    def test_generator_on_the_right_device_is_used(self):
        torch = pytest.importorskip("torch")
        native = torch.Generator(device="cpu").manual_seed(5)
        gen = Generator(native, xp=array_namespace(torch.empty(0)), device=torch.device("cpu", 0))
        assert gen.normal((2,), dtype=torch.float64).shape == (2,)

    def test_two_gpus(self):
        torch = pytest.importorskip("torch")
        if not torch.cuda.is_available() or torch.cuda.device_count() < 2:
            pytest.skip("needs two CUDA devices")
        xp = array_namespace(torch.empty(0))
        with pytest.raises(ValueError, match=r"`rng`.*cuda:1.*cuda:0"):
            Generator(torch.Generator(device="cuda:1"), xp=xp, device="cuda:0")
        with torch.cuda.device(1):  # "cuda" is the current device, cuda:1
            out = Generator(torch.Generator(device="cuda:1"), xp=xp, device="cuda").normal(
                (3,), dtype=torch.float32
            )
        assert out.device == torch.device("cuda", 1)


FORK_CHECK = """
import multiprocessing
import numpy as np
from nntk_array.backends.random import draw_parallel

def draw(queue):
    queue.put([float(a[0]) for a in draw_parallel([lambda: np.ones(2)] * 4, xp=np)])

if __name__ == "__main__":
    draw_parallel([lambda: np.ones(2)] * 4, xp=np)  # the parent's pool exists
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=draw, args=(queue,))
    child.start()
    child.join(60)
    assert child.exitcode == 0, child.exitcode
    assert queue.get(timeout=5) == [1.0] * 4
"""


@pytest.mark.skipif(not hasattr(os, "register_at_fork"), reason="no fork on this platform")
def test_parallel_draws_work_in_a_forked_child(tmp_path):
    # the long-lived draw pool's threads do not survive fork: a child must start its own.
    # A fresh interpreter, so that no multithreaded library (JAX) is loaded when it forks.
    script = tmp_path / "fork_check.py"
    script.write_text(FORK_CHECK)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
