from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from array_api_compat import array_namespace, is_writeable_array
from array_api_compat import device as array_device

import nntk_array as nk
from nntk_array.models.activations import ACTIVATIONS
from nntk_array.testing import to_numpy, tol


def _x(make, n: int = 6, d: int = 3, seed: int = 0):
    return make(np.random.default_rng(seed).standard_normal((n, d)))


class TestLayout:
    @pytest.mark.parametrize("bias", [True, False])
    def test_num_params(self, bias):
        model = nk.MLP(3, (5, 4), 2, bias=bias)
        weights = 3 * 5 + 5 * 4 + 4 * 2
        assert model.num_params == weights + ((5 + 4 + 2) if bias else 0)

    def test_int_hidden_means_one_layer(self):
        assert nk.MLP(2, 7).hidden == (7,)

    def test_repr_round_trips(self):
        model = nk.MLP(2, (3,), 4, "tanh", bias=False, parameterization="standard")
        assert "MLP(in_features=2, hidden=(3,), out_features=4, activation='tanh'" in repr(model)

    @pytest.mark.parametrize(
        ("kwargs", "error", "match"),
        [
            ({"in_features": 0}, ValueError, "`in_features` must be a positive integer"),
            ({"hidden": (4, -1)}, ValueError, r"`hidden\[1\]` must be a positive integer"),
            ({"out_features": 1.5}, TypeError, "`out_features` must be a positive integer"),
            ({"hidden": (10**12,)}, ValueError, r"`hidden\[0\]` must be at most 2\*\*31 - 1"),
            ({"activation": "gelu"}, ValueError, "`activation` must be one of"),
            ({"parameterization": "mup"}, ValueError, "`parameterization` must be one of"),
            ({"bias": 1}, TypeError, "`bias` must be a bool"),
            ({"weight_std": 0.0}, ValueError, "`weight_std` must be finite and > 0"),
            ({"bias_std": float("nan")}, ValueError, "`bias_std` must be finite and > 0"),
            ({"weight_std": "1"}, TypeError, "`weight_std` must be a real number"),
        ],
    )
    def test_bad_constructor_arguments(self, kwargs, error, match):
        args = {"in_features": 2, "hidden": (3,), "out_features": 1, **kwargs}
        with pytest.raises(error, match=match):
            nk.MLP(**args)


class TestInit:
    def test_dtype_device_namespace(self, xp, dtype, device):
        theta = nk.MLP(3, (4,), 2).init(0, xp=xp, dtype=dtype, device=device)
        assert theta.shape == (3 * 4 + 4 + 4 * 2 + 2,)
        assert theta.dtype == dtype
        if device is not None:
            assert array_device(theta) == device

    def test_reproducible_per_backend(self, xp, dtype, device):
        model = nk.MLP(3, (8,), 1)
        a, b, c = (model.init(s, xp=xp, dtype=dtype, device=device) for s in (5, 5, 6))
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b))
        assert not np.array_equal(to_numpy(a), to_numpy(c))

    def test_default_dtype_is_the_library_default(self, xp, device):
        theta = nk.MLP(2, (3,)).init(0, xp=xp, device=device)
        default = xp.__array_namespace_info__().default_dtypes(device=device)["real floating"]
        assert theta.dtype == default

    @pytest.mark.parametrize("parameterization", ["ntk", "standard"])
    def test_standard_deviations(self, parameterization):
        # 400 x 300 weights: the sample std has relative standard error 1/sqrt(2 * 120000).
        model = nk.MLP(
            400, (300,), 1, parameterization=parameterization, weight_std=2.0, bias_std=0.5
        )
        theta = model.init(0, xp=np, dtype=np.float64)
        w, b = theta[: 400 * 300], theta[400 * 300 : 400 * 300 + 300]
        want_w, want_b = (
            (2.0 / math.sqrt(400), 0.5) if parameterization == "standard" else (1.0, 1.0)
        )
        assert abs(w.std() / want_w - 1) < 5 / math.sqrt(2 * w.size)
        assert abs(b.std() / want_b - 1) < 5 / math.sqrt(2 * b.size)

    def test_bad_dtype(self):
        with pytest.raises(TypeError, match="`dtype` must be a real floating dtype"):
            nk.MLP(2, (3,)).init(0, xp=np, dtype=np.int32)

    def test_bad_namespace(self):
        with pytest.raises(TypeError, match="`xp` must be an array library"):
            nk.MLP(2, (3,)).init(0, xp="numpy")

    @pytest.mark.backend("jax")  # runs where JAX is installed (backends/run jax)
    def test_jax_float64_without_x64_raises(self):
        jax = pytest.importorskip("jax")
        import jax.numpy as jnp

        before = jax.config.read("jax_enable_x64")
        jax.config.update("jax_enable_x64", False)
        try:
            with pytest.raises(ValueError, match="jax_enable_x64"):
                nk.MLP(2, (3,)).init(0, xp=jnp, dtype=jnp.float64)
        finally:
            jax.config.update("jax_enable_x64", before)


class TestApply:
    @pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
    def test_batch_equals_loop_over_rows(self, activation, xp, make, dtype, device):
        model = nk.MLP(3, (5, 4), 2, activation)
        thetas = [model.init(s, xp=xp, dtype=dtype, device=device) for s in range(4)]
        x = _x(make)
        batched = model.apply(xp.stack(thetas), x)
        assert batched.shape == (4, 6, 2) and batched.dtype == dtype
        assert array_namespace(batched) is array_namespace(x)
        for i, theta in enumerate(thetas):
            np.testing.assert_allclose(
                to_numpy(batched[i, ...]),
                to_numpy(model.apply(theta, x)),
                rtol=tol(dtype, "contraction"),
                atol=tol(dtype, "contraction"),
            )

    @pytest.mark.parametrize("bias", [True, False])
    @pytest.mark.parametrize(
        "activation", sorted(a for a in ACTIVATIONS if ACTIVATIONS[a].kink is not None)
    )
    def test_one_input_nets_by_breakpoints_equal_the_layers(
        self, activation, bias, xp, make, dtype, device
    ):
        # from 32 inputs a 1-W-O net with a kinked activation is summed by its breakpoints
        model = nk.MLP(1, (16,), 2, activation, bias=bias)
        thetas = xp.stack([model.init(s, xp=xp, dtype=dtype, device=device) for s in range(3)])
        grid = np.linspace(-2.0, 2.0, 40)[:, None]
        grid[[3, 7]] = [[0.0], [grid[9, 0]]]  # at the unbiased units' breakpoints; a repeat
        x = make(grid)
        got = model.apply(thetas, x)
        layers = model._forward(xp, thetas, x, keep_trace=False)[0]
        assert got.shape == (3, 40, 2) and got.dtype == dtype
        np.testing.assert_allclose(
            to_numpy(got), to_numpy(layers), rtol=0, atol=tol(dtype, "contraction")
        )
        one = to_numpy(model.apply(thetas[0, ...], x))
        np.testing.assert_allclose(one, to_numpy(got)[0], rtol=0, atol=tol(dtype, "elementwise"))
        layered = model.eval_bytes_per_set(40, 8, layer_by_layer=True)
        assert model.eval_bytes_per_set(40, 8) < layered

    @pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
    def test_matches_numpy_reference(self, activation, make, dtype):
        model = nk.MLP(2, (6,), 1, activation)
        theta = model.init(1, xp=np, dtype=np.float64)
        x = np.random.default_rng(1).standard_normal((5, 2))
        w1, b1 = theta[:12].reshape(2, 6), theta[12:18]
        w2, b2 = theta[18:24].reshape(6, 1), theta[24:]
        z = x @ w1 / math.sqrt(2) + b1
        phi = {
            "relu": np.maximum(z, 0),
            "leaky_relu": np.where(z > 0, z, 0.01 * z),
            "tanh": np.tanh(z),
            "erf": np.vectorize(math.erf)(z),
            "sign": np.sign(z),
            "step": (z > 0).astype(float),
            "sawtooth": 2 * (z - np.floor(z + 0.5)),
            "abs": np.abs(z),
            "identity": z,
        }[activation]
        want = phi @ w2 / math.sqrt(6) + b2
        got = to_numpy(model.apply(make(theta), make(x))).astype(np.float64)
        np.testing.assert_allclose(
            got, want, rtol=tol(dtype, "contraction"), atol=tol(dtype, "contraction")
        )

    def test_parameterizations_agree_on_rescaled_parameters(self, make, dtype):
        ntk = nk.MLP(3, (7,), 2, "tanh", weight_std=1.5, bias_std=0.3)
        std = nk.MLP(3, (7,), 2, "tanh", parameterization="standard", weight_std=1.5, bias_std=0.3)
        theta = ntk.init(0, xp=np, dtype=np.float64)
        scale = np.concatenate(
            [
                np.full(21, 1.5 / math.sqrt(3)),
                np.full(7, 0.3),
                np.full(14, 1.5 / math.sqrt(7)),
                np.full(2, 0.3),
            ]
        )
        x = _x(make)
        np.testing.assert_allclose(
            to_numpy(ntk.apply(make(theta), x)),
            to_numpy(std.apply(make(theta * scale), x)),
            rtol=tol(dtype, "contraction"),
        )

    def test_callable(self, make, dtype):
        model = nk.MLP(3, (4,), 1)
        theta = make(model.init(0, xp=np, dtype=np.float64))
        np.testing.assert_array_equal(
            to_numpy(model(theta, _x(make))), to_numpy(model.apply(theta, _x(make)))
        )

    def test_bad_input(self, make, xp):
        model = nk.MLP(3, (4,), 1)
        theta = make(model.init(0, xp=np, dtype=np.float64))
        with pytest.raises(ValueError, match=r"`x` must have shape \(N, 3\)"):
            model.apply(theta, make(np.zeros((4, 2))))
        with pytest.raises(ValueError, match=r"`x` must have shape \(N, 3\)"):
            model.apply(theta, make(np.zeros(3)))
        with pytest.raises(ValueError, match="`theta` must have shape"):
            model.apply(make(np.zeros((2, 2, model.num_params))), _x(make))
        with pytest.raises(ValueError, match="`theta` contains NaN"):
            model.apply(make(np.full(model.num_params, np.nan)), _x(make))
        with pytest.raises(TypeError, match="`x` must have a real floating dtype"):
            model.apply(theta, xp.astype(_x(make), xp.int32))


class TestApplyByColumns:
    """The layer-by-layer pass over U's columns is the batched forward pass at θ + scale·U."""

    @pytest.mark.parametrize(
        ("hidden", "out", "activation", "bias"),
        [
            ((8,), 1, "relu", True),
            ((16, 7), 2, "tanh", True),
            ((5,), 3, "sign", False),
            ((), 2, "relu", True),
        ],
    )
    @pytest.mark.parametrize("block", [1, 40, 10**6])
    def test_is_the_perturbed_forward_pass(
        self, make, xp, dtype, hidden, out, activation, bias, block
    ):
        model = nk.MLP(3, hidden, out, activation, bias=bias)
        theta = make(model.init(0, xp=np, dtype=np.float64))
        x = _x(make)
        u = make(np.random.default_rng(2).standard_normal((5, model.num_params)))
        if not is_writeable_array(theta):  # it adds into its activations in place
            with pytest.raises(TypeError, match="arrays the library can write"):
                model.apply_by_columns(theta, x, lambda a, b: u[:, a:b], 0.1, sets=5, block=block)
            return
        read = []

        def columns(a, b):
            read.append((a, b))
            return u[:, a:b]

        got = model.apply_by_columns(theta, x, columns, 0.1, sets=5, block=block)
        want = model.apply(theta + 0.1 * u, x)
        assert got.shape == (5, 6, out) and got.dtype == dtype
        np.testing.assert_allclose(
            to_numpy(got),
            to_numpy(want),
            rtol=tol(dtype, "contraction"),
            atol=tol(dtype, "contraction") * float(np.abs(to_numpy(want)).max()),
        )
        assert read[0][0] == 0 and read[-1][1] == model.num_params
        assert all(b == a2 for (_, b), (a2, _) in itertools.pairwise(read))

    def test_declines_where_breakpoints_are_cheaper(self):
        assert nk.MLP(1, (16,)).column_bytes(8, 64, 8) is None
        assert nk.MLP(1, (16,)).column_bytes(8, 8, 8) is not None
        assert nk.MLP(2, (16,)).column_bytes(8, 64, 8) is not None


@pytest.mark.parametrize(
    ("a_shape", "w_shape"),
    [
        ((3, 5, 2), (2, 4)),  # few inputs: broadcast products
        ((3, 5, 7), (7, 4)),  # shared weights: one GEMM
        ((3, 5, 7), (7, 1)),  # shared weights, one output
        ((3, 5, 7), (3, 7, 1)),  # one output per set: a reduction
        ((3, 5, 7), (3, 7, 4)),  # weights per set: batched products
    ],
)
def test_dense_writes_the_product_into_out(xp, make, dtype, device, a_shape, w_shape):
    from nntk_array.models.mlp import dense

    g = np.random.default_rng(0)
    a, w = g.standard_normal(a_shape), g.standard_normal(w_shape)
    expected = a @ w
    got = to_numpy(dense(xp, make(a), make(w)))
    np.testing.assert_allclose(got, expected, rtol=tol(dtype, "contraction"), atol=1e-6)
    if not is_writeable_array(make(a)):
        return
    buf = xp.zeros((2, *expected.shape), dtype=dtype, device=device)
    out = buf[1, ...]
    assert dense(xp, make(a), make(w), out) is out
    written = to_numpy(buf)
    np.testing.assert_allclose(written[1], expected, rtol=tol(dtype, "contraction"), atol=1e-6)
    assert not written[0].any()
