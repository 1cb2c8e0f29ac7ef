from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest
from array_api_compat import is_jax_namespace

from nntk_array.backends import autodiff
from nntk_array.backends.autodiff import has_autodiff, jacobian, jvp
from nntk_array.testing import to_numpy, tol

P, N = 4, 5


def _quadratic(xp: object, outputs: int):
    """f(θ, x) = (x·θ)² + Σθ, and (x·θ) θ₀ as a second output: batched (B, P), (N, P)."""

    def f(thetas, x):
        z = xp.matmul(thetas, xp.permute_dims(x, (1, 0)))  # (B, N)
        first = z**2 + xp.sum(thetas, axis=1)[:, None]
        if outputs == 1:
            return first
        return xp.stack([first, z * thetas[:, 0:1]], axis=2)  # (B, N, 2)

    return f


def _analytic(theta: np.ndarray, x: np.ndarray, outputs: int) -> np.ndarray:
    """The Jacobian of ``_quadratic`` at ``theta``: (N, P), or (N, 2, P)."""
    z = x @ theta
    first = 2 * z[:, None] * x + 1.0
    if outputs == 1:
        return first
    second = theta[0] * x + z[:, None] * np.eye(P)[0]
    return np.stack([first, second], axis=1)


def _data(seed: int = 0, n: int = N) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal(P), rng.standard_normal((n, P)), rng.standard_normal(P)


def _needs_autodiff(xp: object) -> None:
    if not has_autodiff(xp):
        pytest.skip(f"{xp.__name__} has no autodiff")


class TestJacobian:
    @pytest.mark.parametrize("outputs", [1, 2])
    def test_matches_analytic(self, xp, make, dtype, outputs):
        _needs_autodiff(xp)
        theta, x, _ = _data()
        jac = jacobian(_quadratic(xp, outputs), make(theta), make(x), xp=xp)
        expected = _analytic(theta, x, outputs)
        assert jac.shape == expected.shape and jac.dtype == dtype
        rtol = tol(dtype, "contraction")
        np.testing.assert_allclose(to_numpy(jac), expected, rtol=rtol, atol=rtol)

    def test_no_autodiff_raises(self, xp, make):
        if has_autodiff(xp):
            pytest.skip(f"{xp.__name__} has autodiff")
        theta, x, v = _data()
        f = _quadratic(xp, 1)
        with pytest.raises(TypeError, match="automatic differentiation"):
            jacobian(f, make(theta), make(x), xp=xp)
        with pytest.raises(TypeError, match="automatic differentiation"):
            jvp(f, make(theta), make(x), make(v), xp=xp)

    def test_errors(self, xp, make):
        _needs_autodiff(xp)
        theta, x, v = _data()
        f = _quadratic(xp, 1)
        with pytest.raises(ValueError, match="`theta`"):
            jacobian(f, make(theta[None, :]), make(x), xp=xp)
        with pytest.raises(ValueError, match="`tangent`"):
            jvp(f, make(theta), make(x), make(v[:3]), xp=xp)


class TestJVP:
    @pytest.mark.parametrize("outputs", [1, 2])
    def test_matches_analytic(self, xp, make, dtype, outputs):
        _needs_autodiff(xp)
        theta, x, v = _data()
        out, jv = jvp(_quadratic(xp, outputs), make(theta), make(x), make(v), xp=xp)
        value = to_numpy(_quadratic(np, outputs)(theta[None, :], x)[0])
        expected = _analytic(theta, x, outputs) @ v
        rtol = tol(dtype, "contraction")
        assert out.shape == jv.shape == expected.shape and jv.dtype == dtype
        np.testing.assert_allclose(to_numpy(out), value, rtol=rtol, atol=rtol)
        np.testing.assert_allclose(to_numpy(jv), expected, rtol=rtol, atol=rtol)


class TestJaxCompilesOnce:
    """The jitted derivatives are cached per model: new blocks of one shape are not retraced."""

    @staticmethod
    def _counting(xp: object) -> tuple[object, list[int]]:
        base, traces = _quadratic(xp, 2), []

        def model(thetas, x):
            traces.append(1)  # Python runs under jit only while tracing
            return base(thetas, x)

        return model, traces

    def test_jacobian_and_jvp_trace_once_per_shape(self, xp, make):
        if not is_jax_namespace(xp):
            pytest.skip("jit compilation is JAX's")
        model, traces = self._counting(xp)
        theta, _, v = _data()
        blocks = [make(_data(seed)[1]) for seed in range(3)]
        for _call in range(2):
            for x in blocks:
                jacobian(model, make(theta), x, xp=xp)
        assert len(traces) == 1
        for _call in range(2):
            for x in blocks:
                jvp(model, make(theta), x, make(v), xp=xp)
        assert len(traces) == 2  # the forward-mode program, once
        jacobian(model, make(theta), make(_data(0, n=7)[1]), xp=xp)
        assert len(traces) == 3  # a new block shape compiles once more

    def test_bound_methods_are_cached_by_instance(self, xp, make):
        if not is_jax_namespace(xp):
            pytest.skip("jit compilation is JAX's")
        traces = []

        class Model:
            def apply(self, thetas, x):
                traces.append(1)
                return _quadratic(xp, 1)(thetas, x)

        model = Model()
        theta, x, _ = _data()
        for _call in range(3):  # model.apply is a new bound method object every time
            jacobian(model.apply, make(theta), make(x), xp=xp)
        assert len(traces) == 1

    def test_the_cache_does_not_keep_models_alive(self, xp, make):
        if not is_jax_namespace(xp):
            pytest.skip("jit compilation is JAX's")
        model, _ = self._counting(xp)
        theta, x, v = _data()
        jacobian(model, make(theta), make(x), xp=xp)
        jvp(model, make(theta), make(x), make(v), xp=xp)
        alive = weakref.ref(model)
        assert model in autodiff._JAX_PROGRAMS
        del model
        gc.collect()
        assert alive() is None

    def test_unhashable_models_work_uncached(self, xp, make, dtype):
        if not is_jax_namespace(xp):
            pytest.skip("jit compilation is JAX's")

        class Unhashable:
            __hash__ = None  # type: ignore[assignment]

            def __call__(self, thetas, x):
                return _quadratic(xp, 1)(thetas, x)

        theta, x, _ = _data()
        jac = jacobian(Unhashable(), make(theta), make(x), xp=xp)
        rtol = tol(dtype, "contraction")
        np.testing.assert_allclose(to_numpy(jac), _analytic(theta, x, 1), rtol=rtol, atol=rtol)


class TestJacobianModes:
    @pytest.mark.parametrize("outputs", [1, 2])
    @pytest.mark.parametrize("mode", ["reverse", "forward"])
    def test_per_input_modes_match_the_batch_jacobian(self, xp, make, dtype, outputs, mode):
        _needs_autodiff(xp)
        theta, x, _ = _data()
        f = _quadratic(xp, outputs)
        got = jacobian(f, make(theta), make(x), xp=xp, mode=mode)
        want = jacobian(f, make(theta), make(x), xp=xp)
        assert got.shape == want.shape and got.dtype == dtype
        rtol = tol(dtype, "contraction")
        np.testing.assert_allclose(
            to_numpy(got), _analytic(theta, x, outputs), rtol=rtol, atol=rtol
        )

    def test_unknown_mode(self, xp, make):
        _needs_autodiff(xp)
        theta, x, _ = _data()
        with pytest.raises(ValueError, match="mode"):
            jacobian(_quadratic(xp, 1), make(theta), make(x), xp=xp, mode="sideways")


def test_jacobian_mode_rule():
    from nntk_array.models.protocol import jacobian_mode

    assert jacobian_mode(p=5050, n_out=10, independent=True) == "reverse"
    assert jacobian_mode(p=4, n_out=10, independent=True) == "forward"
    assert jacobian_mode(p=4, n_out=10, independent=False) == "batch"
