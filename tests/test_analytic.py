from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest
from array_api_compat import array_namespace, is_jax_namespace

import nntk_array as nk
from nntk_array.testing import eps, to_numpy, tol

from ._reference import smoothed_one_hidden_ntk

GRID = np.array([[-1.0], [-1 / 3], [1 / 3], [1.0]])


class TestClosedForms:
    def test_smoothed_sign_numbers_of_the_mathematics_page(self, make, dtype):
        k = nk.analytic.ntk(make(GRID), activation="sign", sigma=0.5)
        assert array_namespace(k) is array_namespace(make(GRID)) and k.dtype == dtype
        # docs: Mathematics, 'Infinite width' (without the output bias, which adds 1): row 0
        # and the diagonal
        np.testing.assert_allclose(to_numpy(k)[0] - 1, [1.4392, 1.1597, 0.4768, 0.0], atol=1e-4)
        np.testing.assert_allclose(np.diag(to_numpy(k)) - 1, 0.5903 + 0.8488, atol=1e-4)

    @pytest.mark.parametrize("activation", ["relu", "erf", "sign"])
    def test_wide_finite_network_converges_at_rate_one_over_sqrt_width(self, activation):
        x = np.linspace(-1, 1, 4)[:, None]
        exact = nk.analytic.ntk(x, activation=activation, sigma=0.3)
        errs = []
        for width in (64, 1024):
            model = nk.MLP(1, (width,), activation=activation)
            mean, _ = nk.monte_carlo_kernel(
                lambda s, model=model: (
                    smoothed_one_hidden_ntk(model, model.init(s, xp=np), x, x, 0.3) - exact
                ),
                40,
            )
            spread = [
                np.abs(
                    smoothed_one_hidden_ntk(model, model.init(s, xp=np), x, x, 0.3) - exact
                ).max()
                for s in range(40)
            ]
            errs.append(np.sqrt(np.mean(np.square(spread))))
            assert np.abs(mean).max() < 4 * errs[-1] / np.sqrt(40) + 2.0 / width
        assert 0.15 < errs[1] / errs[0] < 0.4  # 1/sqrt(16) = 0.25

    @pytest.mark.parametrize(("activation", "depth"), [("relu", 1), ("relu", 2), ("erf", 2)])
    def test_local_ntk_of_wide_networks(self, activation, depth):
        x = np.random.default_rng(0).standard_normal((3, 2))
        exact = nk.analytic.ntk(x, activation=activation, depth=depth)
        model = nk.MLP(2, (2048,) * depth, activation=activation)
        mean, se = nk.monte_carlo_kernel(lambda s: nk.ntk(model, model.init(s, xp=np), x), 6)
        assert np.all(np.abs(mean - exact) < 5 * se + 0.02 * np.abs(exact))

    def test_nngp_and_shapes(self, make, dtype):
        x1, x2 = make(GRID), make(GRID[:2])
        k = to_numpy(nk.analytic.nngp(x1, x2, activation="erf", depth=2))
        assert k.shape == (4, 2)
        full = to_numpy(nk.analytic.nngp(x1, activation="erf", depth=2))
        np.testing.assert_allclose(k, full[:, :2], rtol=tol(dtype, "elementwise") * 10)

    def test_errors(self, make):
        with pytest.raises(ValueError, match="activation"):
            nk.analytic.ntk(make(GRID), activation="tanh")
        with pytest.raises(ValueError, match="depth"):
            nk.analytic.ntk(make(GRID), depth=0)
        with pytest.raises(ValueError, match="one hidden layer"):
            nk.analytic.ntk(make(GRID), depth=2, sigma=0.1)
        with pytest.raises(ValueError, match="`sigma` must be >= 0"):
            nk.analytic.ntk(make(GRID), sigma=-1.0)
        with pytest.raises(ValueError, match="weight_std"):
            nk.analytic.ntk(make(GRID), weight_std=0.0)
        with pytest.raises(ValueError, match="x2"):
            nk.analytic.ntk(make(GRID), make(np.zeros((2, 3))))


NT_REFERENCE = Path(__file__).parent / "data" / "nt_analytic_reference.json"
SCALES = [(1.0, 1.0), (1.5, 0.3)]  # (weight_std, bias_std)


def _kernels(x1, x2, activation, depth, scale):
    w, b = scale
    kw = {"activation": activation, "depth": depth, "weight_std": w, "bias_std": b}
    return to_numpy(nk.analytic.nngp(x1, x2, **kw)), to_numpy(nk.analytic.ntk(x1, x2, **kw))


@functools.cache
def _reference(x, y, activation, depth, scale, shift=0.0):
    """(NNGP, NTK) of the pair (x, y) by the textbook recursion, arccos of the correlation, at
    50 digits on the exact values of the float inputs; ``shift`` moves the first layer's angle.
    """
    mp = pytest.importorskip("mpmath")
    with mp.workdps(50):
        x, y = [mp.mpf(v) for v in x], [mp.mpf(v) for v in y]
        sw2, sb2, d = mp.mpf(scale[0]) ** 2, mp.mpf(scale[1]) ** 2, len(x)
        s11 = sw2 * mp.fsum(a * a for a in x) / d + sb2
        s22 = sw2 * mp.fsum(a * a for a in y) / d + sb2
        s12 = sw2 * mp.fsum(a * b for a, b in zip(x, y, strict=True)) / d + sb2
        p = mp.sqrt(s11 * s22)
        s12 = p * mp.cos(max(0, mp.acos(s12 / p) + shift))  # the kernels are monotone in θ
        ntk = s12
        for _ in range(depth):
            p = mp.sqrt(s11 * s22)
            theta = mp.acos(max(-1, min(1, s12 / p)))
            if activation == "sign":
                q11 = q22 = mp.mpf(1)
                q12, kd = 1 - 2 * theta / mp.pi, mp.mpf(0)
            elif activation == "relu":
                q11, q22 = s11 / 2, s22 / 2
                q12 = p * (mp.sin(theta) + (mp.pi - theta) * mp.cos(theta)) / (2 * mp.pi)
                kd = (mp.pi - theta) / (2 * mp.pi)
            else:
                a1, a2 = 1 + 2 * s11, 1 + 2 * s22
                q11, q22 = 2 / mp.pi * mp.asin(2 * s11 / a1), 2 / mp.pi * mp.asin(2 * s22 / a2)
                q12 = 2 / mp.pi * mp.asin(2 * s12 / mp.sqrt(a1 * a2))
                kd = 4 / mp.pi / mp.sqrt(a1 * a2 - 4 * s12**2)
            s11, s22, s12 = sw2 * q11 + sb2, sw2 * q22 + sb2, sw2 * q12 + sb2
            ntk = sw2 * kd * ntk + s12
        return float(s12), float(ntk)


class TestStableAngles:
    """Issue 18: the arccos recursion lost digits at correlation 1 (sign's diagonal 1.99994
    instead of 2 at depth 2, 1.87 at depth 5)."""

    @pytest.mark.parametrize("scale", SCALES)
    def test_diagonal_is_exact_at_every_depth(self, make, dtype, scale):
        x = np.random.default_rng(0).standard_normal((6, 3))
        x[5] = x[0]  # a repeated input: its off-diagonal entries are diagonal ones too
        w, b = scale
        xd = to_numpy(make(x)).astype(np.float64)
        d = x.shape[1]
        s = w**2 * np.sum(xd * xd, axis=1) / d + b**2
        theta = s.copy()
        for depth in range(1, 6):
            # sign: every post-activation variance is 1, and κ' = 0
            for k in _kernels(make(x), make(x.copy()), "sign", depth, scale):
                same = np.concatenate([np.diag(k), [k[0, 5], k[5, 0]]])
                np.testing.assert_allclose(same, w**2 + b**2, rtol=4 * depth * eps(dtype))
            # correlation -1 without bias: κ(-1) = -1 at every depth
            minus = nk.analytic.nngp(
                make(x), make(-x), activation="sign", depth=depth, weight_std=w, bias_std=0.0
            )
            np.testing.assert_allclose(
                np.diag(to_numpy(minus)), -(w**2), rtol=4 * depth * eps(dtype)
            )
            # ReLU: Σ ↦ σ_w²Σ/2 + σ_b², Θ ↦ σ_w²Θ/2 + Σ (κ' = 1/2 at θ = 0)
            s = w**2 * s / 2 + b**2
            theta = w**2 * theta / 2 + s
            nngp, ntk = _kernels(make(x), None, "relu", depth, scale)
            rtol = (d + 4) * depth * eps(dtype)  # the inputs' squared norms, then each layer
            np.testing.assert_allclose(np.diag(nngp), s, rtol=rtol)
            np.testing.assert_allclose(np.diag(ntk), theta, rtol=rtol)

    @pytest.mark.parametrize("activation", ["sign", "relu", "erf"])
    def test_nearly_identical_inputs_match_a_high_precision_reference(
        self, make, dtype, activation
    ):
        rng = np.random.default_rng(1)
        x, delta = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
        d = x.shape[1]
        # the unit vectors of the first layer carry about (d + 4) roundings: a shift of the
        # first angle by that many eps bounds what float inputs can resolve
        shift = (d + 4) * eps(dtype)
        for step in (1e-7, 1e-4):
            x1, x2 = make(x), make(x + step * delta)  # in float32 1e-7 often rounds to 0
            a, b = to_numpy(x1).astype(np.float64), to_numpy(x2).astype(np.float64)
            for depth in (3, 4, 5):
                for scale in SCALES:
                    ours = _kernels(x1, x2, activation, depth, scale)
                    for i in range(len(x)):
                        pair = (tuple(a[i]), tuple(b[i]), activation, depth, scale)
                        band = np.array([_reference(*pair, s) for s in (-shift, 0.0, shift)])
                        lo, hi = band.min(axis=0), band.max(axis=0)
                        slack = (d + 4) * depth * eps(dtype) * np.abs(band[1])
                        got = np.array([ours[0][i, i], ours[1][i, i]])
                        assert np.all((got >= lo - slack) & (got <= hi + slack)), (
                            step,
                            depth,
                            scale,
                            i,
                            got,
                            band[1],
                        )

    def test_jax_jit_keeps_identical_inputs_exact(self, xp, make, dtype):
        # Under jit all pairs take the inputs' differences, and XLA fuses them: an angle of
        # 1e-17 from norms summed in another order became 0.07 at depth 5 (depth 3 here:
        # the suite's fast-compile XLA flags take 65 s to compile depth 5, 1.5 s depth 3)
        if not is_jax_namespace(xp):
            pytest.skip("jax.jit needs JAX arrays")
        import jax

        x = np.random.default_rng(0).standard_normal((8, 3))

        def kernels(x1, x2):
            same = nk.analytic.nngp(x1, activation="sign", depth=3)
            opposite = nk.analytic.nngp(x1, x2, activation="sign", depth=3, bias_std=0.0)
            return same, opposite

        same, opposite = (np.diag(to_numpy(k)) for k in jax.jit(kernels)(make(x), make(-x)))
        # κ(1) = 1 and, without bias, κ(-1) = -1 at every depth
        np.testing.assert_allclose(same, 2.0, rtol=5 * eps(dtype))
        np.testing.assert_allclose(opposite, -1.0, rtol=5 * eps(dtype))

    def test_inputs_of_variance_zero(self, make):
        x = make(np.array([[0.0], [1.0]]))
        for activation in ("relu", "sign", "erf"):
            k = to_numpy(nk.analytic.ntk(x, activation=activation, depth=2, bias_std=0.0))
            np.testing.assert_array_equal(k[0], 0.0)  # φ(0) = φ'(0) = 0 or a.e.
            assert np.isfinite(k[1, 1])


class TestNeuralTangents:
    """``tests/data/nt_analytic_reference.json``: neural-tangents' stax kernels (see its script)."""

    # inputs 0 and 6 are 1e-7 apart, where neural-tangents' own arccos-type recursion is off
    # (up to 3e-5 for sign at depth 3): see test_where_neural_tangents_is_off
    NEAR = (0, 6)

    def test_kernels_agree(self, make, dtype):
        data = json.loads(NT_REFERENCE.read_text())
        x = np.array(data["x"])
        mask = np.ones((len(x), len(x)), dtype=bool)
        mask[self.NEAR, self.NEAR[::-1]] = False
        for case in data["cases"]:
            scale = (case["weight_std"], case["bias_std"])
            ours = _kernels(make(x), None, case["activation"], case["depth"], scale)
            for name, k in zip(("nngp", "ntk"), ours, strict=True):
                nt = np.array(case[name])
                # float64: rounding in each layer; float32: the inputs' rounding as well
                atol = (x.shape[1] + 4) * case["depth"] * eps(dtype) * np.abs(nt).max()
                np.testing.assert_allclose(
                    k[mask], nt[mask], rtol=0, atol=atol, err_msg=f"{name} {case}"
                )

    def test_where_neural_tangents_is_off_the_reference_decides(self):
        data = json.loads(NT_REFERENCE.read_text())
        x = np.array(data["x"])
        i, j = self.NEAR
        worst_nt = 0.0
        for case in data["cases"]:
            scale = (case["weight_std"], case["bias_std"])
            pair = (tuple(x[i]), tuple(x[j]), case["activation"], case["depth"], scale)
            ours = _kernels(x, None, case["activation"], case["depth"], scale)
            shift = (x.shape[1] + 4) * eps(np.float64)  # as in the nearly-identical test
            exact = _reference(*pair)
            band = np.array([_reference(*pair, s) for s in (-shift, shift)])
            slack = (x.shape[1] + 4) * case["depth"] * eps(np.float64) * np.abs(exact)
            lo, hi = band.min(axis=0) - slack, band.max(axis=0) + slack
            for name, k, e, low, high in zip(("nngp", "ntk"), ours, exact, lo, hi, strict=True):
                assert low <= k[i, j] <= high
                worst_nt = max(worst_nt, abs(case[name][i][j] - e))
        assert worst_nt > 1e-5  # neural-tangents 0.6.5's sign kernel at depth 3


def test_finite_width_low_rank_checks_its_rank():
    model = nk.MLP(2, (8,), activation="relu")
    theta, x = model.init(0, xp=np), np.ones((3, 2))
    with pytest.raises(ValueError, match="rank"):
        nk.analytic.finite_width_nntk(model, theta, x, sigma=0.1, rank=0)
    with pytest.raises(TypeError, match="rank"):
        nk.analytic.finite_width_nntk(model, theta, x, sigma=0.1, rank=2.0)
    # rank one of a ReLU net with biases is within a few percent of the Gaussian kernel
    gauss = nk.analytic.finite_width_nntk(model, theta, x, sigma=0.1)
    low = nk.analytic.finite_width_nntk(model, theta, x, sigma=0.1, rank=1)
    assert np.allclose(low, gauss, rtol=2e-2)
