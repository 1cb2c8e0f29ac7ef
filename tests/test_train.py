"""nk.train: gradient descent on the plain and the Gaussian-smoothed squared loss."""

from __future__ import annotations

import math

import numpy as np
import pytest
from array_api_compat import array_namespace, is_jax_namespace, is_torch_namespace

import nntk_array as nk
from nntk_array.testing import to_numpy, tol

from ._reference import _phi_tilde, smoothed_one_hidden_ntk


def _np(a: object) -> np.ndarray:
    return to_numpy(a).astype(np.float64)


def _data(n: int = 6, d: int = 2, n_out: int = 1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 1.0, (n, d))
    y = np.sin(np.pi * x[:, :1] + np.arange(n_out)) if n_out > 1 else np.sin(np.pi * x[:, 0])
    return x, y


def _torch_step(apply: object, theta: np.ndarray, x: np.ndarray, y: np.ndarray, lr: float):
    """θ − η ∇½‖apply(θ, x) − y‖² by torch.func in float64 on the host: the reference."""
    torch = pytest.importorskip("torch")
    from torch.func import grad

    t, xt = torch.from_numpy(theta), torch.from_numpy(x)
    yt = torch.from_numpy(y)

    def loss(p: object) -> object:
        r = apply(p, xt).reshape(yt.shape) - yt
        return 0.5 * (r * r).sum()

    return (t - lr * grad(loss)(t)).numpy()


def _tanh_unit(thetas: object, x: object) -> object:
    """A plain callable: f(θ, x) = θ₃ tanh(θ₀ x₀ + θ₁ x₁ + θ₂), outputs (B, N)."""
    xp = array_namespace(thetas, x)
    return thetas[:, 3:4] * xp.tanh(thetas[:, :2] @ xp.permute_dims(x, (1, 0)) + thetas[:, 2:3])


def _features(x: object) -> object:
    xp = array_namespace(x)
    return xp.concat([x, x * x, xp.ones_like(x[:, :1])], axis=1)


def _linear(thetas: object, x: object) -> object:
    """A model linear in θ, f = θ · Φ(x): f_σ = f and ∇f_σ = Φ, so smoothing changes nothing."""
    xp = array_namespace(thetas, x)
    return thetas @ xp.permute_dims(_features(x), (1, 0))


NETWORKS = {
    "deep-tanh-2-outputs": lambda: nk.MLP(2, (16, 8), 2, activation="tanh"),
    "relu-standard-no-bias": lambda: nk.MLP(
        2, (16,), activation="relu", bias=False, parameterization="standard", weight_std=1.5
    ),
    "erf-scaled": lambda: nk.MLP(2, (12,), activation="erf", weight_std=1.3, bias_std=0.7),
}


class TestPlainLoss:
    @pytest.mark.parametrize("name", list(NETWORKS))
    def test_mlp_step_is_autodiff_gradient_descent(self, make, dtype, name):
        # The MLP is backpropagated in array-API code on every library: one step must be
        # θ − η ∇L with ∇L from torch.func on the same (rounded) numbers in float64.
        model = NETWORKS[name]()
        x, y = _data(n_out=model.out_features)
        theta = _np(make(model.init(0, xp=np, dtype=np.float64)))
        x, y = _np(make(x)), _np(make(y))
        run = nk.train(model, make(theta), make(x), make(y), steps=1, learning_rate=0.05)
        assert run.theta.dtype == dtype and run.outputs.dtype == dtype
        assert array_namespace(run.theta) is array_namespace(make(theta))
        want = _torch_step(model.apply, theta, x, y, 0.05)
        scale = np.abs(theta).max()
        np.testing.assert_allclose(_np(run.theta), want, atol=tol(dtype, "contraction") * scale)
        np.testing.assert_allclose(
            _np(run.outputs[0, ...]),
            model.apply(theta, x).reshape(y.shape),
            atol=tol(dtype, "contraction") * np.abs(y).max(),
        )

    def test_mlp_loss_decreases(self, make, dtype):
        model = nk.MLP(2, (32,), activation="erf")
        x, y = _data()
        theta = make(model.init(1, xp=np))
        # η below 2/λ_max(NTK): each step decreases the loss of a near-linear model
        lam = float(np.linalg.eigvalsh(_np(nk.ntk(model, theta, make(x))))[-1])
        run = nk.train(
            model, theta, make(x), make(y), steps=30, learning_rate=1.0 / lam, record_every=1
        )
        losses = _np(run.losses)
        assert run.steps == tuple(range(31)) and losses.shape == (31,)
        assert np.all(np.diff(losses) < 0) and losses[-1] < 0.5 * losses[0]

    def test_callable_uses_the_library_autodiff(self, xp, make, dtype):
        if not (is_torch_namespace(xp) or is_jax_namespace(xp)):
            pytest.skip("a plain callable needs torch's or JAX's autodiff")
        x, y = _data()
        theta = _np(make(np.array([0.8, -0.5, 0.1, 1.2])))
        x, y = _np(make(x)), _np(make(y))

        def torch_unit(p: object, xt: object) -> object:
            return _tanh_unit(p[None, :], xt)[0]

        one = nk.train(_tanh_unit, make(theta), make(x), make(y), steps=1, learning_rate=0.1)
        want = _torch_step(torch_unit, theta, x, y, 0.1)
        np.testing.assert_allclose(_np(one.theta), want, atol=tol(dtype, "contraction"))
        run = nk.train(_tanh_unit, make(theta), make(x), make(y), steps=20, learning_rate=0.1)
        assert _np(run.losses)[-1] < _np(run.losses)[0]

    def test_callable_without_autodiff_is_refused(self, xp, make):
        if is_torch_namespace(xp) or is_jax_namespace(xp):
            pytest.skip("torch and JAX have autodiff")
        x, y = _data()
        with pytest.raises(TypeError, match="no autodiff"):
            nk.train(_tanh_unit, make(np.ones(4)), make(x), make(y), steps=1, learning_rate=0.1)


class TestSmoothedLoss:
    def test_linear_model_follows_plain_gradient_descent(self, make, dtype):
        # For f = θ·Φ(x): f_σ = f, so the antithetic f̂_σ is exact and the nonlocal gradient is
        # Ŝ ∇L with Ŝ = (1/M) Σ u uᵀ, E Ŝ = I. Per step the deviation from plain gradient descent
        # gains η(Ŝ − I)g, with E‖(Ŝ − I)g‖² = (P + 1)‖g‖²/M, and the linear map I − ηΦᵀΦ
        # (η < 2/λ_max) does not grow it: ‖θ_K − θ_K^GD‖ <= 5 η √(Σ_k (P + 1)‖g_k‖²/M).
        x, y = _data(n=8)
        x, y = _np(make(x)), _np(make(y))
        phi = _np(_features(make(x)))
        p, m, steps = phi.shape[1], 2000, 20
        eta = 0.5 / np.linalg.eigvalsh(phi.T @ phi)[-1]
        theta0 = _np(make(np.array([0.3, -0.2, 0.5, 0.1, -0.4])))
        theta, noise = theta0.copy(), 0.0
        for _ in range(steps):
            g = phi.T @ (phi @ theta - y)
            noise += (p + 1) * (g @ g) / m
            theta = theta - eta * g
        run = nk.train(
            _linear,
            make(theta0),
            make(x),
            make(y),
            steps=steps,
            learning_rate=eta,
            loss="smoothed",
            sigma=0.5,
            samples=m,
            seed=0,
        )
        bound = 5.0 * eta * math.sqrt(noise)
        assert np.linalg.norm(_np(run.theta) - theta) <= bound
        assert bound < 0.2 * np.linalg.norm(theta - theta0)  # the test can tell them apart
        # the recorded smoothed outputs are the exact f(θ_K) (antithetic pairs)
        np.testing.assert_allclose(
            _np(run.outputs[-1, ...]), phi @ _np(run.theta), atol=tol(dtype, "contraction")
        )

    @pytest.mark.parametrize("activation", ["relu", "erf", "sign"])
    def test_exact_step_is_the_closed_form_smoothed_gradient(self, make, dtype, activation):
        # Reference J_σ (N, P) from the Mathematics page's closed forms, in float64.
        model = nk.MLP(2, (24,), activation=activation, weight_std=1.3, bias_std=0.7)
        x, y = _data()
        theta = _np(make(model.init(2, xp=np, dtype=np.float64)))
        x, y = _np(make(x)), _np(make(y))
        f_ref, jac = _smoothed_one_hidden(model, theta, x, 0.4)
        run = nk.train(
            model,
            make(theta),
            make(x),
            make(y),
            steps=1,
            learning_rate=0.05,
            loss="smoothed",
            sigma=0.4,
            exact=True,
        )
        assert run.seed is None
        atol = tol(dtype, "contraction") * np.abs(theta).max()
        np.testing.assert_allclose(_np(run.outputs[0, ...]), f_ref, atol=atol)
        np.testing.assert_allclose(_np(run.theta), theta - 0.05 * jac.T @ (f_ref - y), atol=atol)

    @pytest.mark.parametrize("activation", ["relu", "erf", "sign"])
    def test_reference_jacobian_gives_the_smoothed_ntk(self, activation):
        # The reference above against the test suite's other oracle of J_σ J_σᵀ.
        model = nk.MLP(2, (24,), activation=activation)
        x, _ = _data()
        theta = model.init(2, xp=np, dtype=np.float64)
        _, jac = _smoothed_one_hidden(model, theta, x, 0.4)
        np.testing.assert_allclose(
            jac @ jac.T, smoothed_one_hidden_ntk(model, theta, x, x, 0.4), rtol=1e-12
        )

    @pytest.mark.slow_unless(backend="numpy")  # 20 runs of 2 x 4096 evaluations
    def test_monte_carlo_is_unbiased_for_the_exact_gradient(self, make, dtype):
        # R independent Monte Carlo steps of a sign network against the closed form. For θ: the
        # mean's squared error is Σ_p Var_p / R in expectation, a χ² with ~27 effective degrees
        # of freedom here (from the covariance's spectrum), so its ratio to the estimated
        # Σ_p Var_p / R stays below 3; a gradient 10% off (a bias) brings it to ~7. For f̂_σ,
        # whose N = 5 entries move together (~4 degrees of freedom), entrywise 5 standard errors.
        model = nk.MLP(1, (16,), activation="sign")
        x = np.linspace(-1.0, 1.0, 5)[:, None]
        y = np.sin(np.pi * x[:, 0])
        theta = make(model.init(0, xp=np))
        kw = {"steps": 1, "learning_rate": 0.1, "loss": "smoothed", "sigma": 0.3}
        exact = nk.train(model, theta, make(x), make(y), exact=True, **kw)
        runs = [
            nk.train(
                model, theta, make(x), make(y), samples=4096, seed=s, sampling="antithetic", **kw
            )
            for s in range(20)
        ]
        thetas = np.stack([_np(r.theta) for r in runs])
        var = thetas.var(axis=0, ddof=1).sum() / len(runs)
        assert np.sum((thetas.mean(axis=0) - _np(exact.theta)) ** 2) <= 3.0 * var
        outputs = np.stack([_np(r.outputs[0, ...]) for r in runs])
        se = outputs.std(axis=0, ddof=1) / math.sqrt(len(runs))
        assert np.all(np.abs(outputs.mean(axis=0) - _np(exact.outputs[0, ...])) <= 5.0 * se)

    def test_same_seed_same_run(self, make, dtype):
        model = nk.MLP(1, (8,), activation="sign")
        x = make(np.linspace(-1.0, 1.0, 4)[:, None])
        y = make(np.array([1.0, -1.0, 1.0, -1.0]))
        theta = make(model.init(0, xp=np))
        kw = {"steps": 3, "learning_rate": 0.1, "loss": "smoothed", "sigma": 0.3, "samples": 16}
        a = nk.train(model, theta, x, y, seed=3, record_every=1, **kw)
        b = nk.train(model, theta, x, y, seed=3, record_every=1, **kw)
        c = nk.train(model, theta, x, y, seed=4, **kw)
        assert a.seed == b.seed == 3
        np.testing.assert_array_equal(_np(a.theta), _np(b.theta))
        np.testing.assert_array_equal(_np(a.outputs), _np(b.outputs))
        assert not np.array_equal(_np(a.theta), _np(c.theta))
        drawn = nk.train(model, theta, x, y, **kw)
        again = nk.train(model, theta, x, y, seed=drawn.seed, **kw)
        assert isinstance(drawn.seed, int)
        np.testing.assert_array_equal(_np(drawn.theta), _np(again.theta))


def _smoothed_one_hidden(
    model: nk.MLP, theta: np.ndarray, x: np.ndarray, sigma: float
) -> tuple[np.ndarray, np.ndarray]:
    """f_σ (N,) and J_σ (N, P) of a one-hidden-layer, one-output nk.MLP in NTK
    parameterization with biases (docs: Mathematics, 'One hidden layer, finite width')."""
    d, m = model.in_features, model.hidden[0]
    sw, sb = model.weight_std, model.bias_std
    w, b = theta[: d * m].reshape(d, m), theta[d * m : d * m + m]
    v, bo = theta[d * m + m : d * m + 2 * m], theta[-1]
    cw, cv = sw / math.sqrt(d), sw / math.sqrt(m)
    z = cw * x @ w + sb * b
    s = sigma * np.sqrt(cw**2 * np.sum(x * x, axis=1) + sb**2)[:, None]
    phi, dphi = _phi_tilde(model.activation, z, s)
    f = cv * phi @ v + sb * bo
    back = cv * v * dphi  # ∂f_σ/∂z (N, m)
    jac = np.concatenate(
        [
            (cw * x[:, :, None] * back[:, None, :]).reshape(len(x), d * m),
            sb * back,
            cv * phi,
            np.full((len(x), 1), sb),
        ],
        axis=1,
    )
    return f, jac


class TestLazyRegime:
    # Wide one-hidden-layer networks trained for a fixed time T follow kernel gradient flow with
    # the kernel at initialization, up to O(1/√m): from m = 128 to 2048 the error should fall
    # about 4-fold; the tests ask for 2-fold. ηλ_max·steps = 20 with 200 steps keeps the
    # discretization error (gradient descent vs flow, ~3e-4 relative) below the width error.
    X = np.linspace(-1.0, 1.0, 8)[:, None]
    Y = np.sin(np.pi * X[:, 0])

    def _gap(self, make, model, kernel, **kw):
        theta = make(model.init(1, xp=np))
        x, y = make(self.X), make(self.Y)
        k = kernel(model, theta)
        steps = 200
        eta = 20.0 / float(np.linalg.eigvalsh(_np(k))[-1]) / steps
        run = nk.train(model, theta, x, y, steps=steps, learning_rate=eta, **kw)
        f0 = run.outputs[0, ...]
        flow, _ = nk.gradient_flow(k, y, t=steps, learning_rate=eta, f0_train=f0)
        err = np.linalg.norm(_np(run.outputs[-1, ...]) - _np(flow)) / np.linalg.norm(_np(f0 - y))
        return err, theta, run

    def test_plain_training_follows_the_ntk_flow(self, make, dtype):
        def ntk(model, theta):
            return nk.ntk(model, theta, make(self.X))

        errs, changes = [], []
        for width in (128, 2048):
            model = nk.MLP(1, (width,), activation="relu")
            err, theta, run = self._gap(make, model, ntk)
            track = nk.track_kernel(model, [theta, run.theta], make(self.X))
            errs.append(err)
            changes.append(float(_np(track.relative_change)[-1]))
        assert errs[1] < errs[0] / 2 and changes[1] < changes[0] / 2
        assert errs[1] < 0.01

    def test_exact_smoothed_training_follows_the_nntk_flow(self, make, dtype):
        # The noise-free version for a sign network, whose NTK has no first-layer term:
        # f_σ follows the flow of the exact smoothed NTK J_σ J_σᵀ at initialization.
        def nntk(model, theta):
            return make(smoothed_one_hidden_ntk(model, _np(theta), self.X, self.X, 0.3))

        errs = []
        for width in (128, 2048):
            model = nk.MLP(1, (width,), activation="sign")
            err, _, _ = self._gap(make, model, nntk, loss="smoothed", sigma=0.3, exact=True)
            errs.append(err)
        assert errs[1] < errs[0] / 2 and errs[1] < 0.01


class TestRecording:
    def test_recorded_steps_and_shapes(self, make, dtype):
        model = nk.MLP(2, (8,), 2)
        x, y = _data(n=5, n_out=2)
        run = nk.train(
            model,
            make(model.init(0, xp=np)),
            make(x),
            make(y),
            steps=5,
            learning_rate=0.1,
            record_every=2,
        )
        assert run.steps == (0, 2, 4, 5)
        assert run.outputs.shape == (4, 5, 2) and run.losses.shape == (4,)
        res = _np(run.outputs) - _np(make(y))[None]
        np.testing.assert_allclose(
            _np(run.losses), 0.5 * np.sum(res * res, axis=(1, 2)), rtol=tol(dtype, "elementwise")
        )
        single = nk.MLP(2, (8,))
        x, y = _data(n=5)
        for targets, shape in ((y, (2, 5)), (y[:, None], (2, 5, 1))):
            run = nk.train(
                single,
                make(single.init(0, xp=np)),
                make(x),
                make(targets),
                steps=3,
                learning_rate=0.1,
            )
            assert run.steps == (0, 3) and run.outputs.shape == shape


def _never_called(thetas: object, x: object) -> object:
    raise AssertionError("validation must come before any evaluation")


class TestValidation:
    MODEL = nk.MLP(1, (4,))
    X = np.linspace(-1.0, 1.0, 3)[:, None]
    Y = np.zeros(3)

    def _call(self, **kw):
        args = {
            "f": self.MODEL,
            "theta": self.MODEL.init(0, xp=np),
            "x": self.X,
            "y": self.Y,
            "steps": 2,
            "learning_rate": 0.1,
        }
        args.update(kw)
        return nk.train(**args)

    @pytest.mark.parametrize(
        ("kw", "error", "match"),
        [
            ({"steps": 0}, ValueError, "steps"),
            ({"steps": 1.5}, TypeError, "steps"),
            ({"steps": True}, TypeError, "steps"),
            ({"learning_rate": 0.0}, ValueError, "learning_rate"),
            ({"learning_rate": -0.1}, ValueError, "learning_rate"),
            ({"learning_rate": math.inf}, ValueError, "learning_rate"),
            ({"learning_rate": math.nan}, ValueError, "learning_rate"),
            ({"learning_rate": "0.1"}, TypeError, "learning_rate"),
            ({"loss": "mse"}, ValueError, "loss"),
            ({"loss": "smoothed", "samples": 8}, TypeError, "sigma"),
            ({"loss": "smoothed", "sigma": 0.0, "samples": 8}, ValueError, "sigma"),
            ({"loss": "smoothed", "sigma": -1.0, "samples": 8}, ValueError, "sigma"),
            ({"loss": "smoothed", "sigma": math.nan, "samples": 8}, ValueError, "sigma"),
            ({"loss": "smoothed", "sigma": 0.1}, TypeError, "samples"),
            ({"loss": "smoothed", "sigma": 0.1, "samples": 1}, ValueError, "samples"),
            ({"loss": "smoothed", "sigma": 0.1, "samples": 0}, ValueError, "samples"),
            ({"loss": "smoothed", "sigma": 0.1, "samples": 8.0}, TypeError, "samples"),
            ({"loss": "smoothed", "sigma": 0.1, "samples": 8, "seed": -1}, ValueError, "seed"),
            ({"loss": "smoothed", "sigma": 0.1, "samples": 8, "seed": 1.5}, TypeError, "seed"),
            (
                {"loss": "smoothed", "sigma": 0.1, "samples": 8, "seed": np.random.default_rng()},
                TypeError,
                "seed",
            ),
            (
                {"loss": "smoothed", "sigma": 0.1, "samples": 8, "sampling": "x"},
                ValueError,
                "sampl",
            ),
            (
                {"loss": "smoothed", "sigma": 0.1, "samples": 8, "memory_budget": 0},
                ValueError,
                "memory_budget",
            ),
            (
                {"loss": "smoothed", "sigma": 0.1, "samples": 8, "samples_per_call": "a"},
                TypeError,
                "samples_per_call",
            ),
            ({"sigma": 0.1}, ValueError, "sigma"),
            ({"samples": 8}, ValueError, "samples"),
            ({"seed": 0}, ValueError, "seed"),
            ({"sampling": "antithetic"}, ValueError, "sampling"),
            ({"exact": True}, ValueError, "exact"),
            ({"exact": 1}, TypeError, "exact"),
            (
                {"loss": "smoothed", "sigma": 0.1, "exact": True, "samples": 8},
                ValueError,
                "samples",
            ),
            ({"loss": "smoothed", "sigma": 0.1, "exact": True, "seed": 0}, ValueError, "seed"),
            ({"record_every": 0}, ValueError, "record_every"),
            ({"record_every": 1.0}, TypeError, "record_every"),
        ],
    )
    def test_bad_options_fail_before_any_evaluation(self, kw, error, match):
        with pytest.raises(error, match=match):
            self._call(f=_never_called, **kw)

    @pytest.mark.parametrize(
        "model",
        [nk.MLP(1, (4, 4), activation="sign"), nk.MLP(1, (4,), activation="tanh"), _linear],
    )
    def test_exact_needs_a_one_hidden_layer_mlp(self, model):
        with pytest.raises(ValueError, match="one-hidden-layer"):
            self._call(f=model, loss="smoothed", sigma=0.1, exact=True)

    def test_exact_needs_smoothed_inputs(self):
        model = nk.MLP(1, (4,), bias=False)
        with pytest.raises(ValueError, match="x = 0"):
            self._call(f=model, theta=model.init(0, xp=np), loss="smoothed", sigma=0.1, exact=True)

    @pytest.mark.parametrize(
        ("kw", "error", "match"),
        [
            ({"f": "model"}, TypeError, "`f`"),
            ({"theta": np.zeros((2, 13))}, ValueError, "theta"),
            ({"theta": np.zeros(12)}, ValueError, "theta"),
            ({"theta": np.zeros(13, dtype=np.int64)}, TypeError, "theta"),
            ({"theta": np.full(13, np.nan)}, ValueError, "theta"),
            ({"theta": [0.0] * 13}, TypeError, "theta"),
            ({"x": np.zeros((3, 2))}, ValueError, "`x`"),
            ({"x": np.zeros((0, 1)), "y": np.zeros(0)}, ValueError, "`x`"),
            ({"x": np.full((3, 1), np.inf)}, ValueError, "`x`"),
            ({"y": np.zeros(4)}, ValueError, "`y`"),
            ({"y": np.zeros((3, 2))}, ValueError, "`y`"),
            ({"y": np.zeros((3, 1, 1))}, ValueError, "`y`"),
            ({"y": np.array([0.0, np.nan, 0.0])}, ValueError, "`y`"),
            ({"y": np.zeros(3, dtype=np.int64)}, TypeError, "`y`"),
        ],
    )
    def test_bad_arrays(self, kw, error, match):
        with pytest.raises(error, match=match):
            self._call(**kw)

    def test_targets_must_match_the_outputs(self):
        model = nk.MLP(1, (4,), 2)
        with pytest.raises(ValueError, match=r"`y` must have shape \(3, 2\)"):
            self._call(f=model, theta=model.init(0, xp=np))

    def test_mixed_libraries(self):
        torch = pytest.importorskip("torch")
        theta = torch.from_numpy(self.MODEL.init(0, xp=np))
        with pytest.raises(TypeError, match="one array library"):
            self._call(theta=theta)
