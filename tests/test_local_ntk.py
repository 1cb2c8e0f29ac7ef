from __future__ import annotations

import numpy as np
import pytest
from array_api_compat import array_namespace
from array_api_compat import device as array_device
from hypothesis import given, settings
from hypothesis import strategies as st

import nntk_array as nk
from nntk_array.backends.autodiff import has_autodiff
from nntk_array.testing import to_numpy, tol

from ._reference import autodiff_ntk

ARCHS = [
    # (in, hidden, out, activation, parameterization, bias)
    (3, (), 2, "identity", "ntk", True),
    (2, (9,), 1, "relu", "ntk", True),
    (3, (7, 5), 3, "tanh", "standard", True),
    (2, (6, 6, 4), 2, "erf", "ntk", False),
    (4, (8,), 2, "leaky_relu", "standard", False),
    (1, (10,), 1, "sign", "ntk", True),
    (2, (5, 5), 1, "step", "ntk", True),
    (2, (7,), 2, "sawtooth", "ntk", True),
    (3, (6, 4), 1, "abs", "standard", True),
]


def _data(model: nk.MLP, seed: int, n1: int = 5, n2: int = 4) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    theta = model.init(seed, xp=np, dtype=np.float64)
    return (
        theta,
        rng.standard_normal((n1, model.in_features)),
        rng.standard_normal((n2, model.in_features)),
    )


def _rel_err(got: object, ref: np.ndarray) -> float:
    return float(np.max(np.abs(to_numpy(got) - ref)) / np.max(np.abs(ref)))


class TestStructuredNTK:
    @pytest.mark.parametrize("arch", ARCHS, ids=lambda a: f"{a[3]}-{len(a[1])}hidden-{a[4]}")
    @pytest.mark.fast  # the exact oracle at float64's tolerance on JAX too (conftest SLOW_CELLS)
    def test_equals_autodiff_jacobian_contraction(self, arch, make, dtype, xp):
        d, hidden, o, act, param, bias = arch
        model = nk.MLP(d, hidden, o, act, parameterization=param, bias=bias)
        theta, x1, x2 = _data(model, seed=len(hidden) + o)
        # The oracle sees the same rounded inputs as the kernel under test.
        theta, x1, x2 = (to_numpy(make(a)).astype(np.float64) for a in (theta, x1, x2))
        ref = autodiff_ntk(model.apply, theta, x1, x2)
        full = nk.ntk(model, make(theta), make(x1), make(x2), outputs="full")
        mean = nk.ntk(model, make(theta), make(x1), make(x2))
        assert full.shape == (5, 4, o, o) and mean.shape == (5, 4)
        assert _rel_err(full, ref) <= tol(dtype, "exact")
        assert _rel_err(mean, np.trace(ref, axis1=2, axis2=3) / o) <= tol(dtype, "exact")

    def test_preserves_namespace_dtype_device(self, make, xp, dtype):
        model = nk.MLP(2, (4,), 2)
        theta, x1, x2 = _data(model, 0)
        x = make(x1)
        for kernel in (
            nk.ntk(model, make(theta), x),
            nk.ntk(model, make(theta), x, make(x2), outputs="full"),
        ):
            assert array_namespace(kernel) is array_namespace(x)
            assert kernel.dtype == dtype
            assert array_device(kernel) == array_device(x)

    def test_symmetric_positive_semidefinite(self, make, dtype):
        model = nk.MLP(3, (16, 16), 1, "tanh")
        theta, x1, _ = _data(model, 1, n1=12)
        k = to_numpy(nk.ntk(model, make(theta), make(x1))).astype(np.float64)
        np.testing.assert_allclose(k, k.T, rtol=tol(dtype, "exact"))
        eig = np.linalg.eigvalsh((k + k.T) / 2)
        assert eig.min() >= -tol(dtype, "exact") * eig.max()

    @pytest.mark.parametrize("batch_size", [1, 2, 3, 100])
    def test_blocks_do_not_change_the_result(self, make, dtype, batch_size):
        model = nk.MLP(2, (6,), 2, "relu")
        theta, x1, x2 = _data(model, 2, n1=7, n2=5)
        t, a, b = make(theta), make(x1), make(x2)
        for x2_ in (None, b):
            for outputs in ("mean", "full"):
                whole = to_numpy(nk.ntk(model, t, a, x2_, outputs=outputs))
                blocked = to_numpy(nk.ntk(model, t, a, x2_, outputs=outputs, batch_size=batch_size))
                np.testing.assert_allclose(blocked, whole, rtol=tol(dtype, "exact"), atol=0)

    def test_x2_none_equals_x1_twice(self, make, dtype):
        model = nk.MLP(2, (5,), 3)
        theta, x1, _ = _data(model, 3)
        t, a = make(theta), make(x1)
        np.testing.assert_allclose(
            to_numpy(nk.ntk(model, t, a, outputs="full")),
            to_numpy(nk.ntk(model, t, a, a, outputs="full")),
            rtol=tol(dtype, "exact"),
        )


class TestCallableNTK:
    def test_autodiff_backends_match_structured(self, xp, make, dtype):
        model = nk.MLP(3, (6, 5), 2, "tanh")
        theta, x1, x2 = _data(model, 4)
        t, a, b = make(theta), make(x1), make(x2)
        if not has_autodiff(xp):
            with pytest.raises(TypeError, match="automatic differentiation"):
                nk.ntk(model.apply, t, a, b)
            return
        for kw in ({}, {"batch_size": 2}):
            got = nk.ntk(model.apply, t, a, b, outputs="full", **kw)
            want = nk.ntk(model, t, a, b, outputs="full")
            assert got.dtype == dtype and array_device(got) == array_device(a)
            assert _rel_err(got, to_numpy(want)) <= tol(dtype, "exact")

    def test_scalar_output_callable(self, xp, make, dtype):
        if not has_autodiff(xp):
            pytest.skip("needs autodiff")
        model = nk.MLP(2, (4,), 1, "erf")
        theta, x1, _ = _data(model, 5)

        def f(th, x):  # (B, P) -> (B, N): no output axis
            return model.apply(th, x)[..., 0]

        got = nk.ntk(f, make(theta), make(x1))
        want = nk.ntk(model, make(theta), make(x1))
        assert _rel_err(got, to_numpy(want)) <= tol(dtype, "exact")

    def test_callable_with_wrong_output_shape(self, xp, make):
        if not has_autodiff(xp):
            pytest.skip("needs autodiff")
        model = nk.MLP(2, (4,), 1)
        theta, x1, _ = _data(model, 6)
        with pytest.raises(ValueError, match="must return shape"):
            nk.ntk(lambda th, x: model.apply(th, x)[0, ...], make(theta), make(x1))


class TestBadInput:
    model = nk.MLP(2, (4,), 1)

    def _args(self, make):
        theta, x1, x2 = _data(self.model, 7)
        return make(theta), make(x1), make(x2)

    def test_mixed_libraries(self, make, xp):
        if "numpy" in xp.__name__:
            pytest.skip("needs a second library")
        t, a, _ = self._args(make)
        with pytest.raises(TypeError, match="one array library"):
            nk.ntk(self.model, t, np.asarray(to_numpy(a)))

    def test_mixed_devices(self):
        xs = pytest.importorskip("array_api_strict")
        theta = self.model.init(0, xp=xs, dtype=xs.float64)
        x = xs.ones((3, 2), dtype=xs.float64, device=xs.Device("device1"))
        with pytest.raises(ValueError, match="device"):
            nk.ntk(self.model, theta, x)

    @pytest.mark.parametrize("bad", ["int32", "int64", "bool", "complex128"])
    def test_non_floating_dtypes(self, make, xp, device, bad):
        info = getattr(xp, "__array_namespace_info__", None)
        if info is not None and bad not in info().dtypes(device=device):
            pytest.skip(f"no {bad} on {device!r}")  # array-api-strict's Device("no_float64")
        t, a, _ = self._args(make)
        x = xp.astype(a, getattr(xp, bad))
        with pytest.raises(TypeError, match="`x1` must have a real floating dtype"):
            nk.ntk(self.model, t, x)

    def test_not_an_array(self, make):
        t, _, _ = self._args(make)
        with pytest.raises(TypeError, match="`x1` must be an array"):
            nk.ntk(self.model, t, [[0.0, 1.0]])

    def test_non_finite(self, make, xp):
        t, a, _ = self._args(make)
        bad = make(np.array([[0.0, np.nan]]))
        with pytest.raises(ValueError, match="`x1` contains NaN"):
            nk.ntk(self.model, t, bad)
        with pytest.raises(ValueError, match="`x2` contains NaN"):
            nk.ntk(self.model, t, a, make(np.array([[np.inf, 0.0]])))

    def test_bad_options(self, make):
        t, a, _ = self._args(make)
        with pytest.raises(ValueError, match="`outputs` must be one of"):
            nk.ntk(self.model, t, a, outputs="trace")
        for b in (0, -1):
            with pytest.raises(ValueError, match="`batch_size` must be a positive integer"):
                nk.ntk(self.model, t, a, batch_size=b)
        for b in (2.5, True, "3"):  # a wrong type is a TypeError, as for the float checks
            with pytest.raises(TypeError, match="`batch_size` must be a positive integer"):
                nk.ntk(self.model, t, a, batch_size=b)
        with pytest.raises(TypeError, match="`f` must be"):
            nk.ntk("mlp", t, a)

    def test_theta_shape(self, make):
        _, a, _ = self._args(make)
        for shape in [(self.model.num_params + 1,), (2, self.model.num_params), ()]:
            with pytest.raises(ValueError, match="`theta` must have shape"):
                nk.ntk(self.model, make(np.zeros(shape)), a)

    @settings(max_examples=25, deadline=None)
    @given(
        shape=st.lists(st.integers(1, 4), min_size=1, max_size=3).filter(
            lambda s: not (len(s) == 2 and s[1] == 2)
        ),
        which=st.sampled_from(["x1", "x2"]),
    )
    def test_input_shape_property(self, shape, which):
        theta = self.model.init(0, xp=np, dtype=np.float64)
        good = np.zeros((3, 2))
        bad = np.zeros(shape)
        args = (good, bad) if which == "x2" else (bad, good)
        with pytest.raises(ValueError, match=f"`{which}` must have shape"):
            nk.ntk(self.model, theta, *args)

    @settings(max_examples=25, deadline=None)
    @given(dtype=st.sampled_from(["int8", "int16", "int32", "int64", "uint8", "bool", "complex64"]))
    def test_dtype_property(self, dtype):
        theta = self.model.init(0, xp=np, dtype=np.float64)
        with pytest.raises(TypeError, match="real floating"):
            nk.ntk(self.model, theta, np.zeros((3, 2), dtype=dtype))

    def test_mixed_float_dtypes_promote(self):
        theta = self.model.init(0, xp=np, dtype=np.float32)
        k = nk.ntk(self.model, theta, np.zeros((3, 2), dtype=np.float64))
        assert k.dtype == np.float64


class TestMemoryBudget:
    """``memory_budget`` bounds the per-block temporaries; the numbers do not depend on it."""

    def test_results_identical_across_budgets(self):
        model = nk.MLP(3, (32, 16), 2, "tanh")
        theta, x1, x2 = _data(model, 3, n1=40, n2=30)
        ref = nk.ntk(model, theta, x1, x2, outputs="full")
        sym = nk.ntk(model, theta, x1)
        for budget in (2**14, 2**17, 2**30):
            np.testing.assert_allclose(
                nk.ntk(model, theta, x1, x2, outputs="full", memory_budget=budget),
                ref,
                rtol=1e-12,
            )
            np.testing.assert_allclose(
                nk.ntk(model, theta, x1, memory_budget=budget), sym, rtol=1e-12
            )

    def test_block_size_shrinks_with_the_budget(self):
        from nntk_array._mc.plan import ntk_blocks

        kw = {"n_out": 10, "full": False, "per_input": 10 * 5050, "itemsize": 4, "mode": "reverse"}
        sizes = [ntk_blocks(None, 256, None, budget=b, **kw)[0] for b in (2**28, 2**24, 2**22)]
        assert sizes[0] > sizes[1] > sizes[2] >= 1

    @pytest.mark.parametrize("mode", [None, "reverse", "forward", "batch"])
    @pytest.mark.parametrize("budget", [2**20, 2**23, 2**26])
    def test_planned_block_fits_the_budget(self, mode, budget):
        from nntk_array._mc.plan import ntk_blocks, ntk_temporaries

        per_input, itemsize = 10 * 5050, 4  # the CNN of benchmarks/compare_interop.py
        size, cache = ntk_blocks(
            None, 256, 100, n_out=10, full=False, per_input=per_input, itemsize=itemsize,
            mode=mode, budget=budget,
        )  # fmt: skip
        held = per_input * itemsize
        scratch = ntk_temporaries(mode) * (size if mode == "batch" else 1)
        factors = 356 * held if cache else 2 * size * held
        assert factors + size * held * scratch + size * size * 4 * itemsize <= budget

    def test_adapter_model_gets_small_blocks(self):
        torch = pytest.importorskip("torch")
        from nntk_array._mc.plan import ntk_blocks
        from nntk_array.models.protocol import bind

        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(4, 64), torch.nn.Tanh(), torch.nn.Linear(64, 3))
        model = nk.from_torch(net)
        x = torch.randn(50, 4)
        bound = bind(model, array_namespace(x), model.theta0, x)
        assert bound.jacobian_mode == "reverse"
        assert bound.ntk_numbers_per_input == 3 * model.num_params
        held = bound.ntk_numbers_per_input * 4
        budget = 40 * held
        size, _ = ntk_blocks(
            None, 50, None, n_out=3, full=False, per_input=bound.ntk_numbers_per_input,
            itemsize=4, mode=bound.jacobian_mode, budget=budget,
        )  # fmt: skip
        assert size * held * 4 <= budget and size < 50
        ref = nk.ntk(model, model.theta0, x)
        got = nk.ntk(model, model.theta0, x, memory_budget=budget)
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)

    def test_torch_training_mode_differentiates_whole_blocks(self):
        torch = pytest.importorskip("torch")
        from nntk_array.models.protocol import bind

        net = torch.nn.Sequential(
            torch.nn.Linear(3, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 1)
        )
        x = torch.randn(6, 3)
        model = nk.from_torch(net, train=True)
        assert bind(model, array_namespace(x), model.theta0, x).jacobian_mode == "batch"
        k = nk.ntk(model, model.theta0, x)  # batch statistics of the whole (single) block
        assert k.shape == (6, 6) and bool(torch.all(torch.isfinite(k)))

    def test_peak_memory_of_the_temporaries_is_bounded(self):
        import tracemalloc

        model = nk.MLP(8, (256, 256), 4, "relu")
        theta = model.init(0, xp=np, dtype=np.float64)
        x = np.random.default_rng(0).standard_normal((600, 8))
        kernel_bytes = 600 * 600 * 8 * 3  # the kernel, its block rows and their concatenation
        budget = 2**21
        tracemalloc.start()
        try:
            nk.ntk(model, theta, x[:4], memory_budget=budget)
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            k = nk.ntk(model, theta, x, memory_budget=budget)
            peak = tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()
        np.testing.assert_allclose(k, nk.ntk(model, theta, x), rtol=1e-12)
        assert peak <= budget + kernel_bytes, peak

    def test_too_small_a_budget_is_refused(self):
        model = nk.MLP(3, (64,), 2, "relu")
        theta, x1, _ = _data(model, 0)
        with pytest.raises(ValueError, match="memory_budget"):
            nk.ntk(model, theta, x1, memory_budget=64)
        nk.ntk(model, theta, x1, memory_budget=64, batch_size=2)  # batch_size overrides

    def test_budget_validation(self):
        model = nk.MLP(3, (4,), 1, "relu")
        theta, x1, _ = _data(model, 0)
        with pytest.raises(ValueError, match="`memory_budget` must be a positive integer"):
            nk.ntk(model, theta, x1, memory_budget=0)
        with pytest.raises(TypeError, match="`memory_budget` must be a positive integer"):
            nk.ntk(model, theta, x1, memory_budget=1.5)
