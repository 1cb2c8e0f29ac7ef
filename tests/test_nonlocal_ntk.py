"""nk.nntk against exact oracles on every backend and both dtypes.

(docs: Mathematics, 'Test oracles'.)

Monte Carlo comparisons use the estimator's own jackknife standard error ``se`` (its
calibration is tested separately, against the closed-form variance of a linear model) and
allow 5 standard errors per entry with fixed seeds.
"""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest
from array_api_compat import array_namespace
from array_api_compat import device as array_device

import nntk_array as nk
from nntk_array.backends.random import Generator
from nntk_array.testing import to_numpy, tol

from ._reference import smoothed_one_hidden_ntk

Z = 5.0  # standard errors allowed per entry

# The Monte Carlo oracles below draw thousands of samples per case. Their full backend x dtype
# matrix runs in the slow step (`pytest -m slow`); the default run keeps every case on NumPy
# and the float32 case on the other libraries (conftest: slow_unless).
ALL_ON_NUMPY = pytest.mark.slow_unless(backend="numpy")
FLOAT32 = pytest.mark.slow_unless(dtype="float32")


def _np(a: object) -> np.ndarray:
    return to_numpy(a).astype(np.float64)


def _within(k: object, se: object, truth: np.ndarray, dtype: object, slack: float = 0.0) -> None:
    err = np.abs(_np(k) - truth)
    bound = Z * _np(se) + tol(dtype, "contraction") * np.abs(truth).max() + slack
    assert np.all(err <= bound), f"max err/bound {np.max(err / bound):.2f}"


def _linear(thetas: object, x: object) -> object:
    """f(θ, x) = x·θ: linear in θ, so ∇f(x) = x and every unbiased estimator has mean x x'ᵀ."""
    xp = array_namespace(thetas, x)
    return xp.matmul(thetas, xp.permute_dims(x, (1, 0)))


def _features(n: int = 5, p: int = 12, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, p)) / math.sqrt(p)


class TestLinearModel:
    @pytest.mark.parametrize(
        ("sampling", "form"),
        [
            ("iid", "gaussian"),
            ("antithetic", "gaussian"),
            ("orthogonal", "gaussian"),
            ("qmc", "gaussian"),
            ("iid", "paper"),
            ("antithetic", "paper"),
        ],
    )
    @ALL_ON_NUMPY
    @pytest.mark.slow_unless(sampling="iid", form="gaussian")  # elsewhere: the plain estimator
    def test_unbiased_estimators_have_mean_phi_phi(self, make, dtype, sampling, form):
        x = _features()
        k, se = nk.nntk(
            _linear,
            make(np.zeros(12)),
            make(x),
            sigma=0.7,
            samples=3000,
            seed=1,
            sampling=sampling,
            form=form,
            return_stderr=True,
        )
        _within(k, se, x @ x.T, dtype)

    @ALL_ON_NUMPY
    @FLOAT32
    def test_ball_and_literal_scale(self, make, dtype):
        x = _features()
        k, se = nk.nntk(
            _linear,
            make(np.zeros(12)),
            make(x),
            sigma=0.5,
            samples=3000,
            seed=2,
            form="paper",
            radial="ball",
            return_stderr=True,
        )
        _within(k, se, x @ x.T, dtype)
        lit, se = nk.nntk(
            _linear,
            make(np.zeros(12)),
            make(x),
            sigma=0.5,
            samples=3000,
            seed=2,
            form="paper",
            scale="literal",
            return_stderr=True,
        )
        _within(lit, se, x @ x.T / 144, dtype)

    @ALL_ON_NUMPY
    @FLOAT32
    def test_sketch_is_unbiased_for_linear_f(self, make, dtype):
        x = _features()
        k, se = nk.nntk(
            _linear,
            make(np.zeros(12)),
            make(x),
            sigma=0.3,
            samples=3000,
            seed=3,
            estimator="sketch",
            return_stderr=True,
        )
        _within(k, se, x @ x.T, dtype)
        k = _np(k)
        assert np.linalg.eigvalsh((k + k.T) / 2).min() >= -1e-5 * np.abs(k).max()  # PSD

    def test_plugin_mean_is_inflated_by_one_plus_p_plus_one_over_m(self, make, dtype):
        x = _features()
        m, p = 40, 12
        k, se = nk.nntk(
            _linear,
            make(np.zeros(p)),
            make(x),
            sigma=1.0,
            samples=m,
            seed=4,
            estimator="plugin",
            return_stderr=True,
        )
        # Averaged over 40 seeds the plug-in mean is (1 + (P+1)/M) x x'ᵀ = 1.325 x x'ᵀ.
        ks = [
            _np(
                nk.nntk(
                    _linear,
                    make(np.zeros(p)),
                    make(x),
                    sigma=1.0,
                    samples=m,
                    seed=s,
                    estimator="plugin",
                )
            )
            for s in range(40)
        ]
        mean, sem = np.mean(ks, axis=0), np.std(ks, axis=0, ddof=1) / math.sqrt(40)
        truth = (1 + (p + 1) / m) * (x @ x.T)
        assert np.all(np.abs(mean - truth) <= Z * sem + 1e-3)
        assert k.shape == (5, 5) and _np(se).min() > 0

    def test_directional_is_exact_with_p_orthogonal_directions(self, make, dtype):
        x = _features()
        k = nk.nntk(
            _linear,
            make(np.zeros(12)),
            make(x),
            sigma=0.4,
            samples=12,
            seed=5,
            estimator="directional",
            sampling="orthogonal",
            quadrature=2,
        )
        np.testing.assert_allclose(
            _np(k), x @ x.T, rtol=tol(dtype, "contraction"), atol=tol(dtype, "contraction")
        )

    def test_stderr_is_calibrated(self):
        # Linear f: Var Θ̂_U ≈ (|a|²|b|² + (aᵀb)²)(4/M + P/M²) (docs: Mathematics, 'U-statistic').
        x = _features(n=3, p=30)
        m = 200
        runs = [
            nk.nntk(_linear, np.zeros(30), x, sigma=1.0, samples=m, seed=s, return_stderr=True)
            for s in range(60)
        ]
        ks = np.array([r[0] for r in runs])
        se = np.sqrt(np.mean([r[1] ** 2 for r in runs], axis=0))
        g = x @ x.T
        theory = np.sqrt((np.outer(np.diag(g), np.diag(g)) + g**2) * (4 / m + 30 / m**2))
        empirical = ks.std(axis=0, ddof=1)
        for ratio in (se / theory, empirical / theory):
            assert np.all((ratio > 0.6) & (ratio < 1.6))


@pytest.mark.slow
@pytest.mark.parametrize("route", ["gram", "stream"])
def test_stderr_covers_the_exact_smoothed_kernel(route):
    # Coverage across seeds of K ± 2·se for the exact Gaussian-smoothed kernel of a one-hidden
    # -layer net (docs: Mathematics, 'Closed forms'): about 95% of the entries.
    model = nk.MLP(1, (32,), activation="relu")
    theta = model.init(3, xp=np, dtype=np.float64)
    x = np.linspace(-1.0, 1.0, 5)[:, None]
    truth = smoothed_one_hidden_ntk(model, theta, x, x, 0.3)
    upper = np.triu_indices(5)
    z = []
    for seed in range(60):
        k, se = nk.nntk(
            model, theta, x, sigma=0.3, samples=1000, seed=seed, route=route, return_stderr=True
        )
        z.append(((k - truth) / se)[upper])
    covered = np.mean(np.abs(np.concatenate(z)) < 2.0)
    assert 0.88 < covered < 0.995, covered


class TestAgainstClosedForms:
    @pytest.mark.parametrize("activation", ["sign", "relu", "erf"])
    @ALL_ON_NUMPY
    @pytest.mark.slow_unless(activation="sign", dtype="float32")
    def test_one_hidden_layer_gaussian_smoothing(self, make, dtype, activation):
        model = nk.MLP(1, (64,), activation=activation)
        theta = model.init(3, xp=np, dtype=np.float64)
        x = np.linspace(-1.0, 1.0, 5)[:, None]
        theta_b = _np(make(theta))  # the oracle sees the rounded parameters
        truth = smoothed_one_hidden_ntk(model, theta_b, x, x, 0.3)
        k, se = nk.nntk(
            model, make(theta), make(x), sigma=0.3, samples=4000, seed=6, return_stderr=True
        )
        _within(k, se, truth, dtype)

    @ALL_ON_NUMPY
    @FLOAT32
    def test_paper_form_matches_its_smoothing_density(self, make, dtype):
        model = nk.MLP(1, (64,), activation="relu")
        theta = model.init(4, xp=np, dtype=np.float64)
        x = np.linspace(-1.0, 1.0, 4)[:, None]
        truth = smoothed_one_hidden_ntk(model, _np(make(theta)), x, x, 0.5, paper=True)
        k, se = nk.nntk(
            model,
            make(theta),
            make(x),
            sigma=0.5,
            samples=4000,
            seed=7,
            form="paper",
            return_stderr=True,
        )
        _within(k, se, truth, dtype)

    @ALL_ON_NUMPY
    @FLOAT32
    def test_sign_network_gets_a_nondegenerate_first_layer_term(self, make, dtype):
        model = nk.MLP(1, (64,), activation="sign")
        theta = model.init(5, xp=np, dtype=np.float64)
        x = np.linspace(-1.0, 1.0, 5)[:, None]
        local = _np(nk.ntk(model, make(theta), make(x)))
        z = x @ theta[:64][None, :] + theta[64:128]
        # Local NTK: only the output layer's term survives (sign' = 0 a.e.).
        np.testing.assert_allclose(local, np.sign(z) @ np.sign(z).T / 64 + 1, rtol=1e-5)
        truth = smoothed_one_hidden_ntk(model, theta, x, x, 0.3)
        first = smoothed_one_hidden_ntk(model, theta, x, x, 0.3, first_layer_only=True)
        assert np.min(np.diag(first)) > 0.1 * np.max(np.diag(truth))
        k, se = nk.nntk(
            model, make(theta), make(x), sigma=0.3, samples=4000, seed=8, return_stderr=True
        )
        _within(k, se, truth, dtype)

    @ALL_ON_NUMPY
    @FLOAT32
    def test_quadratic_model_equals_local_ntk_for_every_sigma(self, make, dtype):
        model = nk.MLP(3, (16,), 1, "identity", bias=False)  # f = vᵀ W x: bilinear in θ
        theta = model.init(6, xp=np, dtype=np.float64)
        x = np.random.default_rng(0).standard_normal((4, 3))
        ntk = _np(nk.ntk(model, make(theta), make(x)))
        for sigma, sampling in ((0.5, "iid"), (2.0, "antithetic")):
            k, se = nk.nntk(
                model,
                make(theta),
                make(x),
                sigma=sigma,
                samples=3000,
                seed=9,
                sampling=sampling,
                return_stderr=True,
            )
            _within(k, se, ntk, dtype)

    def test_smooth_network_tends_to_local_ntk_like_sigma_squared(self):
        model = nk.MLP(1, (64,), activation="erf")
        theta = model.init(7, xp=np, dtype=np.float64)
        x = np.linspace(-1.0, 1.0, 5)[:, None]
        ntk = nk.ntk(model, theta, x)
        errs = [
            np.abs(smoothed_one_hidden_ntk(model, theta, x, x, s) - ntk).max() for s in (0.1, 0.05)
        ]
        assert 3.5 < errs[0] / errs[1] < 4.5
        k, se = nk.nntk(
            model,
            theta,
            x,
            sigma=0.01,
            samples=2000,
            seed=10,
            sampling="antithetic",
            return_stderr=True,
        )
        assert np.all(np.abs(k - ntk) <= Z * se + 4 * errs[1] / 25)


class TestStructure:
    def _setup(self, make):
        model = nk.MLP(2, (8,), 2, "tanh")
        theta = model.init(0, xp=np, dtype=np.float64)
        rng = np.random.default_rng(1)
        return (
            model,
            make(theta),
            make(rng.standard_normal((5, 2))),
            make(rng.standard_normal((3, 2))),
        )

    def test_preserves_namespace_dtype_device(self, make, dtype, xp):
        model, theta, x1, x2 = self._setup(make)
        k, se = nk.nntk(model, theta, x1, x2, sigma=0.2, samples=64, seed=0, return_stderr=True)
        for a in (k, se):
            assert array_namespace(a) is array_namespace(x1) and a.dtype == dtype
            assert array_device(a) == array_device(x1) and a.shape == (5, 3)

    def test_chunking_and_routes_do_not_change_the_estimate(self, make, dtype):
        model, theta, x1, x2 = self._setup(make)
        # the plain estimator's routes (the reduced one's chunking: tests/_mc/test_reduced.py)
        plain = {"variance_reduction": "none"}
        ref = _np(nk.nntk(model, theta, x1, x2, sigma=0.2, samples=70, seed=3, **plain))
        for kw in (
            {"samples_per_call": 1},
            {"samples_per_call": 17},
            {"memory_budget": 2**12},
            {"route": "stream"},
            {"route": "gram", "samples_per_call": 64},
        ):
            k = _np(nk.nntk(model, theta, x1, x2, sigma=0.2, samples=70, seed=3, **kw, **plain))
            np.testing.assert_allclose(
                k,
                ref,
                rtol=tol(dtype, "contraction"),
                atol=tol(dtype, "contraction") * np.abs(ref).max(),
            )

    @pytest.mark.parametrize("estimator", ["unbiased", "plugin"])
    def test_stderr_is_the_same_on_both_routes(self, make, dtype, xp, estimator):
        # The stream route's jackknife (one pass, and several windows of batches under a
        # small budget) against the Gram route's; the value is the one without errors.
        model, theta, x1, x2 = self._setup(make)
        for second, outputs in ((x2, "mean"), (None, "full")):
            kw = {"sigma": 0.2, "samples": 70, "seed": 3, "estimator": estimator}
            kw |= {"outputs": outputs, "variance_reduction": "none"}
            plain = _np(nk.nntk(model, theta, x1, second, **kw))
            ref_k, ref_se = nk.nntk(
                model, theta, x1, second, route="gram", return_stderr=True, **kw
            )
            for budget in (None, 2**12):
                k, se = nk.nntk(
                    model,
                    theta,
                    x1,
                    second,
                    route="stream",
                    memory_budget=budget,
                    return_stderr=True,
                    **kw,
                )
                for got, want in ((k, plain), (ref_k, plain), (se, _np(ref_se))):
                    np.testing.assert_allclose(
                        _np(got),
                        want,
                        rtol=tol(dtype, "contraction"),
                        atol=tol(dtype, "contraction") * np.abs(want).max(),
                    )

    def test_x2_rows_are_blocks_of_the_joint_kernel(self, make, dtype, xp):
        model, theta, x1, x2 = self._setup(make)
        joint = _np(nk.nntk(model, theta, xp.concat([x1, x2]), sigma=0.2, samples=50, seed=4))
        cross = _np(nk.nntk(model, theta, x1, x2, sigma=0.2, samples=50, seed=4))
        np.testing.assert_allclose(
            cross,
            joint[:5, 5:],
            rtol=tol(dtype, "contraction"),
            atol=tol(dtype, "contraction") * np.abs(joint).max(),
        )
        np.testing.assert_allclose(joint, joint.T, rtol=1e-5, atol=1e-6 * np.abs(joint).max())

    def test_full_outputs_trace_to_the_mean(self, make, dtype):
        model, theta, x1, x2 = self._setup(make)
        for est in ("unbiased", "sketch"):
            full = _np(
                nk.nntk(
                    model,
                    theta,
                    x1,
                    x2,
                    sigma=0.2,
                    samples=40,
                    seed=5,
                    estimator=est,
                    outputs="full",
                )
            )
            mean = _np(
                nk.nntk(
                    model,
                    theta,
                    x1,
                    x2,
                    sigma=0.2,
                    samples=40,
                    seed=5,
                    estimator=est,
                    variance_reduction="none",  # the full block of two outputs has none
                )
            )
            assert full.shape == (5, 3, 2, 2)
            np.testing.assert_allclose(
                np.trace(full, axis1=2, axis2=3) / 2,
                mean,
                rtol=tol(dtype, "contraction"),
                atol=1e-6,
            )

    def test_explicit_samples_give_the_same_estimate_on_every_backend(self, make, dtype):
        model, theta, x1, _ = self._setup(make)
        u = np.random.default_rng(11).standard_normal((30, model.num_params))
        k = nk.nntk(model, theta, x1, sigma=0.2, samples=make(u), variance_reduction="none")
        th, x = _np(theta), _np(x1)
        u = _np(make(u))
        a = (model.apply(th[None, :] + 0.2 * u, x) - model.apply(th, x)[None]).transpose(1, 2, 0)
        g = u @ u.T
        g -= np.diag(np.diag(g))
        ref = np.einsum("iom,mn,kon->ik", a, g, a) / (2 * 30 * 29 * 0.04)
        np.testing.assert_allclose(
            _np(k),
            ref,
            rtol=tol(dtype, "contraction"),
            atol=tol(dtype, "contraction") * np.abs(ref).max(),
        )

    def test_float64_accumulation(self, make, dtype, xp, device):
        model, theta, x1, _ = self._setup(make)
        info = getattr(xp, "__array_namespace_info__", None)
        if info is not None and "float64" not in info().dtypes(device=device):
            # a clear error at validation, before anything is evaluated
            with pytest.raises(ValueError, match=r"accumulate='float64' needs .*float64"):
                nk.nntk(model, theta, x1, sigma=0.2, samples=40, seed=6, accumulate="float64")
            return
        k = nk.nntk(model, theta, x1, sigma=0.2, samples=40, seed=6, accumulate="float64")
        ref = nk.nntk(model, theta, x1, sigma=0.2, samples=40, seed=6)
        assert k.dtype == dtype
        np.testing.assert_allclose(
            _np(k), _np(ref), rtol=tol(dtype, "contraction"), atol=1e-6 * np.abs(_np(ref)).max()
        )


class TestNonDifferentiableModels:
    @ALL_ON_NUMPY
    @FLOAT32
    def test_stochastic_model(self, make, dtype, xp, device):
        """Noise inside f: unbiased for the noiseless kernel, through the plain callable path."""
        x = _features()
        noise = Generator(123, xp=xp, device=device)

        def noisy(thetas: object, xs: object) -> object:
            out = _linear(thetas, xs)
            return out + 0.05 * noise.normal(tuple(out.shape), dtype=out.dtype)

        k, se = nk.nntk(
            noisy, make(np.zeros(12)), make(x), sigma=0.5, samples=4000, seed=12, return_stderr=True
        )
        _within(k, se, x @ x.T, dtype)

    @ALL_ON_NUMPY
    @FLOAT32
    def test_quantized_weights(self, make, dtype):
        """f = x·q(θ), q rounding to steps Δ: ∇f_σ = x ⊙ c, c_p = Σ_k Δ ϕ_σ(Δ(k+½) − θ_p)."""
        x = _features()
        theta = np.random.default_rng(2).uniform(-1, 1, 12)
        step, sigma = 0.25, 0.2

        def quantized(thetas: object, xs: object) -> object:
            xq = array_namespace(thetas)
            return _linear(xq.round(thetas / step) * step, xs)

        ks = np.arange(-40, 40)
        jumps = step * (ks[None, :] + 0.5) - theta[:, None]
        c = (step / sigma * np.exp(-((jumps / sigma) ** 2) / 2) / math.sqrt(2 * math.pi)).sum(1)
        truth = (x * c) @ (x * c).T
        k, se = nk.nntk(
            quantized, make(theta), make(x), sigma=sigma, samples=4000, seed=13, return_stderr=True
        )
        _within(k, se, truth, dtype)


class TestAttention:
    def _run(self, make, **kw):
        model = nk.MLP(1, (16,), activation="relu")
        theta = make(model.init(0, xp=np, dtype=np.float64))
        x = make(np.linspace(-1, 1, 4)[:, None])
        return nk.nntk(model, theta, x, sigma=0.3, samples=200, seed=14, **kw)

    @pytest.mark.parametrize("estimator", ["unbiased", "plugin", "sketch"])
    def test_infinite_temperature_is_the_fixed_kernel(self, make, dtype, estimator):
        fixed = _np(self._run(make, estimator=estimator, variance_reduction="none"))
        att = _np(
            self._run(make, estimator=estimator, attention=nk.Attention(temperature=math.inf))
        )
        np.testing.assert_allclose(att, fixed, rtol=tol(dtype, "contraction"), atol=1e-6)

    def test_score_shift_invariance_and_custom_scores(self, make, dtype, xp):
        def score(diffs: object, h_sq: object) -> object:
            return -xp.mean(diffs * diffs, axis=1)  # per input (N, M)

        def shifted(diffs: object, h_sq: object) -> object:
            return score(diffs, h_sq) + 7.0

        a = _np(self._run(make, attention=nk.Attention(score=score, temperature=0.01)))
        b = _np(self._run(make, attention=nk.Attention(score=shifted, temperature=0.01)))
        np.testing.assert_allclose(a, b, rtol=tol(dtype, "contraction"), atol=1e-6)

    @pytest.mark.parametrize("score", ["distance", "output", "loss"])
    def test_builtin_scores_are_finite_and_weighted(self, make, dtype, score):
        targets = make(np.sign(np.linspace(-1, 1, 4)))
        att = nk.Attention(score=score, targets=targets if score == "loss" else None)
        k = _np(self._run(make, attention=att, estimator="plugin"))
        fixed = _np(self._run(make, estimator="plugin"))
        assert np.all(np.isfinite(k)) and not np.allclose(k, fixed)
        np.testing.assert_allclose(k, k.T, rtol=1e-5, atol=1e-6 * np.abs(k).max())
        # Against the formulas of the Mathematics page, in NumPy, from explicit samples at a
        # fixed temperature: α = softmax(s / τ) over the M perturbations (one row shared by
        # all inputs for the built-in scores), G f(x_i) = Σ_m α_m D_im u_m / σ, and the
        # plug-in kernel G f(x_i) · G f(x_k).
        model = nk.MLP(1, (16,), activation="relu")
        sigma, tau = 0.3, 0.5
        theta = _np(make(model.init(0, xp=np, dtype=np.float64)))
        x = _np(make(np.linspace(-1, 1, 4)[:, None]))
        u = _np(make(np.random.default_rng(21).standard_normal((200, model.num_params))))
        d = (model.apply(theta[None] + sigma * u, x) - model.apply(theta, x)[None])[..., 0]
        resid = model.apply(theta, x)[:, 0] - _np(targets)
        s = {
            "distance": -np.sum(u * u, axis=1) / 2,  # -|h|² / (2σ²), h = σu
            "output": -np.mean(d * d, axis=1),
            "loss": -(d @ resid + 0.5 * np.sum(d * d, axis=1)),
        }[score] / tau
        alpha = np.exp(s - s.max()) / np.exp(s - s.max()).sum()
        g = (alpha[:, None] * d).T @ u / sigma  # (N, P)
        att = nk.Attention(
            score=score, temperature=tau, targets=targets if score == "loss" else None
        )
        k = nk.nntk(
            model,
            make(theta),
            make(x),
            sigma=sigma,
            samples=make(u),
            estimator="plugin",
            attention=att,
        )
        want = g @ g.T
        np.testing.assert_allclose(
            _np(k),
            want,
            rtol=tol(dtype, "contraction"),
            atol=tol(dtype, "contraction") * np.abs(want).max(),
        )


def test_stderr_memory_grows_like_the_differences_not_m_squared():
    # Standard errors add nothing that grows with M beyond what the kernel alone holds (the
    # N × O × M differences): the old jackknife held M × M Grams (400 MB at M = 4096).
    model = nk.MLP(1, (4,))
    theta, x = model.init(0, xp=np), np.linspace(-1.0, 1.0, 4)[:, None]
    budget = 2**20

    def peak(m: int, stderr: bool) -> int:
        tracemalloc.start()
        nk.nntk(
            model,
            theta,
            x,
            sigma=0.1,
            samples=m,
            seed=0,
            memory_budget=budget,
            return_stderr=stderr,
        )
        size = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return size

    for m in (4096, 65536):
        assert peak(m, True) <= peak(m, False) + budget


class TestErrors:
    def test_bad_arguments(self, make):
        model = nk.MLP(1, (4,))
        theta, x = make(model.init(0, xp=np)), make(np.zeros((3, 1)))
        bad = [
            ({"sigma": 0.0}, ValueError, "sigma"),
            ({"sigma": -1.0}, ValueError, "sigma"),
            ({"sigma": math.nan}, ValueError, "sigma"),
            ({"samples": 0}, ValueError, "samples"),
            ({"samples": 1}, ValueError, "2 independent"),
            ({"samples": True}, TypeError, "samples"),
            ({"samples": 8.0}, TypeError, "samples"),
            ({"samples": "8"}, TypeError, "samples"),
            ({"estimator": "exact"}, ValueError, "estimator"),
            ({"sampling": "sobol"}, ValueError, "sampling"),
            ({"form": "stein"}, ValueError, "form"),
            ({"radial": "ball"}, ValueError, "radial"),
            ({"scale": "P"}, ValueError, "scale"),
            ({"outputs": "trace"}, ValueError, "outputs"),
            ({"route": "fast"}, ValueError, "route"),
            ({"accumulate": "float16"}, ValueError, "accumulate"),
            ({"samples_per_call": 0}, ValueError, "samples_per_call"),
            ({"samples_per_call": 2.0}, TypeError, "samples_per_call"),
            ({"memory_budget": -1}, ValueError, "memory_budget"),
            ({"seed": 1, "rng": np.random.default_rng(0)}, TypeError, "not both"),
            ({"seed": 1.5}, TypeError, "seed"),
            ({"seed": -1}, ValueError, "seed"),
            ({"scale": "literal"}, ValueError, "form='paper' only"),
            ({"smoothing": nk.Smoothing(0.2), "sigma": 0.1}, TypeError, "not both"),
            ({"estimator": nk.Estimator("plugin"), "sampling": "qmc"}, TypeError, "not both"),
            ({"resources": nk.Resources(), "route": "gram"}, TypeError, "not both"),
            ({"resources": {"route": "gram"}}, TypeError, "nk.Resources"),
            ({"attention": "softmax"}, TypeError, "attention"),
            ({"estimator": "directional", "sampling": "antithetic"}, ValueError, "directional"),
            ({"estimator": "directional", "quadrature": 1}, ValueError, "quadrature"),
            ({"estimator": "sketch", "route": "stream"}, ValueError, "route"),
            ({"sampling": "orthogonal", "route": "stream"}, ValueError, "route"),
            ({"return_stderr": 1}, TypeError, "return_stderr"),
        ]
        for kw, exc, match in bad:
            args = {"sigma": 0.1, "samples": 8, "seed": 0, **kw}
            with pytest.raises(exc, match=match):
                nk.nntk(model, theta, x, **args)

    def test_bad_arrays(self, make, xp, device):
        model = nk.MLP(1, (4,))
        theta, x = make(model.init(0, xp=np)), make(np.zeros((3, 1)))
        kw = {"sigma": 0.1, "samples": 8, "seed": 0}
        with pytest.raises(ValueError, match="x1"):
            nk.nntk(model, theta, make(np.zeros((3, 2))), **kw)
        with pytest.raises(ValueError, match="theta"):
            nk.nntk(model, theta[:-1], x, **kw)
        with pytest.raises(ValueError, match="NaN"):
            nk.nntk(model, theta, make(np.full((3, 1), np.nan)), **kw)
        with pytest.raises(TypeError, match="floating"):
            nk.nntk(model, theta, xp.zeros((3, 1), dtype=xp.int32, device=device), **kw)
        with pytest.raises(ValueError, match="samples"):
            nk.nntk(model, theta, x, sigma=0.1, samples=make(np.zeros((4, 3))))
        with pytest.raises(ValueError, match="f\\(thetas, x\\)"):
            nk.nntk(lambda t, xs: t, theta, x, **kw)
        with pytest.raises(TypeError, match="callable"):
            nk.nntk(3, theta, x, **kw)

    @pytest.mark.backend("torch")  # runs where torch is installed (backends/run torch)
    def test_mixed_libraries(self):
        torch = pytest.importorskip("torch")
        model = nk.MLP(1, (4,))
        with pytest.raises(TypeError, match="one array library"):
            nk.nntk(
                model,
                model.init(0, xp=np),
                torch.zeros(3, 1, dtype=torch.float64),
                sigma=0.1,
                samples=8,
            )
