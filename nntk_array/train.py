"""Gradient descent on a network's squared loss, plain or Gaussian-smoothed.

The plain loss L(θ) = ½ Σ_i ‖f(θ, x_i) − y_i‖² is differentiated exactly: by backpropagation
through the built-in :class:`~nntk_array.MLP` (any array library), else by the library's
autodiff (torch, JAX). The smoothed loss L_σ(θ) = ½ Σ_i ‖f_σ(θ, x_i) − y_i‖², with
f_σ(θ, x) = E f(θ + σu, x), u ~ N(0, I), is what the nonlocal NTK describes: its gradient
flow moves the smoothed outputs by df_σ/dt = −η Θ_NL(θ_t)(f_σ − y) (docs: Mathematics, 'What
the NNTK's dynamics describe'). Its gradient ∇L_σ = Σ_i J_σ(x_i)ᵀ (f_σ(x_i) − y_i) is
estimated from parameter perturbations for any model, or taken in closed form for a
one-hidden-layer MLP.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from array_api_compat import device

from ._mc.plan import DEFAULT_BUDGET
from ._typing import Array, Namespace
from ._validate import (
    check_choice,
    check_finite,
    check_ndim,
    check_positive_float,
    check_positive_int,
)
from ._xp import resolve
from .analytic import ACTIVATIONS as EXACT_ACTIVATIONS
from .analytic import smoothed_activation
from .backends.autodiff import has_autodiff, residual_grad
from .backends.random import Generator
from .models.protocol import Bound, LastLayer, Model, bind
from .nonlocal_grad import nonlocal_grad
from .options import Estimator, Resources, check_seed

__all__ = ["TrainResult", "train"]

LOSSES = ("plain", "smoothed")
#: activations whose Gaussian expectations E φ(μ + s g) have the closed forms of the
#: Mathematics page ('One hidden layer, finite width')

# Per step: the outputs (N, O) at θ and, unless told not to, the gradient (P,) of the loss.
_Step = Callable[[Array, int, bool], tuple[Array, Array | None]]
_Activation = Callable[[Namespace, Array], Array]


@dataclass(frozen=True)
class TrainResult:
    """A gradient-descent run of :func:`train`.

    Parameters
    ----------
    theta : array, shape (P,)
        The parameters after the last step.
    steps : tuple of int
        The step numbers recorded, increasing from 0 to the number of steps taken.
    outputs : array, shape (R, N) or (R, N, O)
        The outputs on the training inputs at each recorded step (R = ``len(steps)``), of
        the shape of the targets: f(θ_t, x) for the plain loss, f_σ(θ_t, x) for the
        smoothed one (its Monte Carlo estimate unless ``exact=True``).
    losses : array, shape (R,)
        ½ Σ_i ‖outputs − y‖² at each recorded step. For the Monte Carlo smoothed loss this
        overestimates L_σ by ½ Σ Var f̂_σ, i.e. by O(1/samples).
    seed : int or None
        The seed of the Monte Carlo smoothed loss (drawn once when none was given); ``None``
        otherwise.

    Examples
    --------
    >>> import numpy as np
    >>> import nntk_array as nk
    >>> model = nk.MLP(1, (8,))
    >>> run = nk.train(model, model.init(0, xp=np), np.ones((3, 1)), np.zeros(3),
    ...                steps=4, learning_rate=0.1, record_every=2)
    >>> run.steps, run.outputs.shape, run.losses.shape
    ((0, 2, 4), (3, 3), (3,))
    """

    theta: Array
    steps: tuple[int, ...]
    outputs: Array
    losses: Array
    seed: int | None


def train(
    f: Model | Callable[[Array, Array], Array],
    theta: Array,
    x: Array,
    y: Array,
    *,
    steps: int,
    learning_rate: float,
    loss: str = "plain",
    sigma: float | None = None,
    samples: int | None = None,
    seed: int | None = None,
    exact: bool = False,
    record_every: int | None = None,
    sampling: str = "iid",
    memory_budget: int | None = None,
    samples_per_call: int | None = None,
) -> TrainResult:
    """Full-batch gradient descent θ ← θ − η ∇L(θ) on a squared loss, plain or smoothed.

    The loss is the *sum* L(θ) = ½ Σ_i ‖f(θ, x_i) − y_i‖² over the N training inputs (not the
    mean), the convention of :func:`nntk_array.gradient_flow`: in the lazy (wide) regime
    ``steps`` steps of size η follow ``nk.gradient_flow(K, y, t=steps, learning_rate=η,
    f0_train=f0)`` (equivalently ``t=η·steps``) with K the kernel at initialization, up to
    the discretization error of O(η λ_max) per unit time; gradient descent is stable for
    η < 2/λ_max(K). For a mean loss, pass η/N.

    ``loss="plain"``: f itself, with K the NTK (:func:`nntk_array.ntk`). The gradient is
    exact: backpropagation through the built-in :class:`~nntk_array.MLP` on every array
    library, one vector-Jacobian product of torch's or JAX's autodiff for any other model.

    ``loss="smoothed"``: the Gaussian-smoothed network f_σ(θ, x) = E f(θ + σu, x),
    u ~ N(0, I_P), with K the Gaussian-form NNTK Θ_NL = J_σ J_σᵀ (:func:`nntk_array.nntk`);
    exactly, df_σ/dt = −η Θ_NL(θ_t)(f_σ − y) along the flow. The gradient
    ∇L_σ = Σ_i J_σ(x_i)ᵀ (f_σ(x_i) − y_i) is estimated per step from two independent
    streams of perturbations, both derived from ``seed`` and the step number:

    1. f̂_σ(X), the mean of f over ⌊samples/2⌋ antithetic pairs θ ± σu (exact for f linear
       in θ);
    2. the nonlocal gradient (:func:`nntk_array.nonlocal_grad`, ``samples`` perturbations
       shared by all inputs) of θ ↦ Σ_i r_i · f(θ, x_i), with the residuals
       r = f̂_σ(X) − y held fixed: J_σᵀ r with no (N, P) Jacobian.

    The two streams are independent, so the estimate is unbiased:
    E[Ĵ_σᵀ (f̂_σ − y)] = J_σᵀ (f_σ − y) = ∇L_σ. (Reusing one stream for both would add a
    bias of O(1/samples).) The run is then stochastic gradient descent on L_σ, with gradient
    noise of O(1/√samples). With ``exact=True`` (a one-hidden-layer :class:`~nntk_array.MLP`
    with activation relu, erf or sign) f_σ and J_σ are the closed forms of the Mathematics
    page ('One hidden layer, finite width'): the same run without Monte Carlo noise.

    Parameters
    ----------
    f : model or callable
        A model (:class:`nntk_array.Model`) or a batched ``f(thetas, x)``: parameters
        (B, P) and inputs (N, ...) to outputs (B, N) or (B, N, O).
    theta : array, shape (P,)
        The initial parameters.
    x : array, shape (N, ...)
        The training inputs.
    y : array, shape (N,) or (N, O)
        The targets; (N,) for a single-output model.
    steps : int
        Number of gradient steps, >= 1.
    learning_rate : float
        The step size η > 0.
    loss : {"plain", "smoothed"}, default "plain"
    sigma : float, optional
        σ > 0 of the smoothed loss; required for ``loss="smoothed"``, refused otherwise.
    samples : int, optional
        Perturbations per step of the Monte Carlo smoothed loss (>= 2), each for the
        gradient and for f̂_σ: about 2·``samples`` + 2 evaluations of f per step. Required for
        ``loss="smoothed"`` unless ``exact=True``.
    seed : int, optional
        Root seed (>= 0) of the perturbations: step t draws from streams derived from
        ``seed`` and t, so the same arguments give the same run on each library and device.
        Drawn once and reported in the result when omitted.
    exact : bool, default False
        Closed-form smoothed loss (see above); ``samples``, ``seed`` and the Monte Carlo
        options are then refused.
    record_every : int, optional
        Record the outputs and the loss every this many steps; the first (0) and the last
        step are always recorded. By default only those two.
    sampling : {"iid", "antithetic", "orthogonal", "qmc"}, default "iid"
        How the nonlocal gradient's directions are drawn (:func:`nntk_array.nonlocal_grad`).
    memory_budget, samples_per_call : int, optional
        As in :class:`nntk_array.Resources`, for the Monte Carlo smoothed loss: bytes for
        perturbations and model activations (default 384 MiB), and perturbations per batched
        model call (by default as many as fit in a quarter of the budget).

    Returns
    -------
    TrainResult
        ``theta`` (P,) after the last step, the recorded ``steps``, ``outputs`` (R, N) or
        (R, N, O) and ``losses`` (R,), and the Monte Carlo ``seed``. Arrays are in the
        inputs' common floating dtype, namespace and device.

    Raises
    ------
    TypeError
        Mixed array libraries or non-floating inputs; a non-integer ``steps``, ``samples``,
        ``seed`` or ``record_every``; a non-real ``learning_rate`` or ``sigma``; a non-bool
        ``exact``; ``sigma``/``samples`` missing for the smoothed loss; ``loss="plain"`` for
        a model that is not an :class:`~nntk_array.MLP` on a library without autodiff
        (NumPy, CuPy, array-api-strict).
    ValueError
        Shapes (``theta`` not (P,), ``x`` not inputs of ``f``, ``y`` not (N,) or (N, O) for
        the model's N and O), NaN/inf, ``steps < 1``, ``learning_rate`` or ``sigma`` not
        finite and > 0, ``samples < 2``, a negative ``seed``, an unknown ``loss`` or
        ``sampling``, options of the smoothed loss with ``loss="plain"``, ``exact=True`` for
        anything but a one-hidden-layer MLP with relu, erf or sign activation.

    Examples
    --------
    >>> import numpy as np
    >>> import nntk_array as nk
    >>> model = nk.MLP(1, (64,), activation="erf")
    >>> theta = model.init(0, xp=np)
    >>> x = np.linspace(-1.0, 1.0, 8)[:, None]
    >>> y = np.sin(3.0 * x[:, 0])
    >>> run = nk.train(model, theta, x, y, steps=200, learning_rate=0.1)
    >>> run.steps, run.outputs.shape
    ((0, 200), (2, 8))
    >>> bool(run.losses[1] < 0.1 * run.losses[0])
    True

    The smoothed loss of a sign network, whose plain gradient vanishes in the first layer:

    >>> sign_net = nk.MLP(1, (64,), activation="sign")
    >>> theta = sign_net.init(0, xp=np)
    >>> mc = nk.train(sign_net, theta, x, y, steps=50, learning_rate=0.1, loss="smoothed",
    ...               sigma=0.3, samples=256, seed=0)
    >>> exact = nk.train(sign_net, theta, x, y, steps=50, learning_rate=0.1,
    ...                  loss="smoothed", sigma=0.3, exact=True)
    >>> bool(exact.losses[1] < 0.1 * exact.losses[0] and mc.losses[1] < 0.1 * mc.losses[0])
    True
    """
    steps = check_positive_int("steps", steps)
    learning_rate = check_positive_float("learning_rate", learning_rate)
    check_choice("loss", loss, LOSSES)
    if not isinstance(exact, bool):
        raise TypeError(f"`exact` must be a bool; got {type(exact).__name__}")
    if record_every is not None:
        record_every = check_positive_int("record_every", record_every)
    smoothed = loss == "smoothed"
    _check_loss_options(
        smoothed,
        exact,
        sigma=sigma,
        samples=samples,
        seed=seed,
        sampling=sampling,
        memory_budget=memory_budget,
        samples_per_call=samples_per_call,
    )
    sigma_value = check_positive_float("sigma", sigma) if smoothed else 0.0
    net = _exact_network(f) if exact else None
    mc = (
        _monte_carlo_options(samples, seed, sampling, memory_budget, samples_per_call)
        if smoothed and not exact
        else None
    )
    xp, (theta, x, y) = resolve(theta=theta, x=x, y=y)
    _check_x(f, x)
    model = bind(f, xp, theta, x)
    check_finite(xp, theta=theta, x=x, y=y)
    targets = _targets(y, x.shape[0], model.num_outputs)
    step: _Step
    if net is not None:
        step = _exact_step(xp, net, x, targets, sigma_value)
    elif mc is not None:
        step = _monte_carlo_step(xp, model, x, targets, sigma_value, mc)
    elif model.jacobian_mode is None:  # the model's own NTK factors: backpropagation
        step = _factors_step(xp, model, x, targets)
    elif has_autodiff(xp):
        step = _autodiff_step(xp, model, x, targets)
    else:
        raise TypeError(
            f"loss='plain' needs the gradient of `f`: {xp.__name__} arrays have no autodiff. "
            "Pass torch or JAX arrays, use the built-in nk.MLP (backpropagated on every "
            "library), or train the smoothed loss (loss='smoothed'), which needs no derivatives"
        )
    recorded = _recorded_steps(steps, record_every)
    outputs, losses = [], []
    for t in range(steps + 1):
        out, grad = step(theta, t, t < steps)
        if t in recorded:
            res = out - targets
            outputs.append(out)
            losses.append(0.5 * xp.sum(res * res))
        if grad is not None:
            theta = theta - learning_rate * grad
    stacked = xp.stack(outputs)
    return TrainResult(
        theta=theta,
        steps=tuple(sorted(recorded)),
        outputs=stacked[..., 0] if y.ndim == 1 else stacked,
        losses=xp.stack(losses),
        seed=None if mc is None else mc.seed,
    )


def _check_loss_options(smoothed: bool, exact: bool, **options: Any) -> None:
    """Refuse options that the chosen loss would ignore (and require ``sigma``)."""
    given = [
        name
        for name, value in options.items()
        if value is not None and not (name == "sampling" and value == "iid")
    ]
    if not smoothed:
        if exact:
            raise ValueError("`exact=True` applies to loss='smoothed' only")
        if given:
            raise ValueError(f"{', '.join(f'`{n}`' for n in given)} apply to loss='smoothed' only")
        return
    if options["sigma"] is None:
        raise TypeError("`sigma` is required for loss='smoothed'")
    if exact:
        mc_only = [n for n in given if n != "sigma"]
        if mc_only:
            raise ValueError(
                f"{', '.join(f'`{n}`' for n in mc_only)} apply to the Monte Carlo smoothed "
                "loss only, not with exact=True"
            )
    elif options["samples"] is None:
        raise TypeError("`samples` is required for loss='smoothed' (or pass exact=True)")


@dataclass(frozen=True)
class _MonteCarlo:
    """The validated options of the Monte Carlo smoothed loss."""

    samples: int
    seed: int
    sampling: str
    resources: Resources


def _monte_carlo_options(
    samples: object,
    seed: object,
    sampling: str,
    memory_budget: int | None,
    samples_per_call: int | None,
) -> _MonteCarlo:
    count = check_positive_int("samples", samples)
    if count < 2:
        raise ValueError(f"`samples` must be >= 2 (f_σ is estimated from pairs); got {count}")
    Estimator(sampling=sampling)  # validates `sampling` before any work
    return _MonteCarlo(
        count,
        _root_seed(seed),
        sampling,
        Resources(memory_budget=memory_budget, samples_per_call=samples_per_call),
    )


def _root_seed(seed: object) -> int:
    """The run's root seed: ``seed``, or fresh entropy when it is ``None``."""
    checked = check_seed(seed)
    if checked is None:
        return secrets.randbits(32)
    if not isinstance(checked, int):  # a native generator would advance with every step
        raise TypeError(
            f"`seed` must be an int (each step derives its streams from it); got "
            f"{type(seed).__name__}"
        )
    return checked


def _stream_seed(root: int, step: int, stream: int) -> int:
    """An independent seed per (step, stream), the same on every library: 32 bits, since
    JAX keys keep only 32 bits of a larger int without 64-bit mode."""
    state = np.random.SeedSequence(root, spawn_key=(step, stream)).generate_state(1)
    return int(state[0])


def _check_x(f: Any, x: Array) -> None:
    """``x`` as inputs of ``f`` (its own ``check_x`` where it has one), named ``x``."""
    check_x = getattr(f, "check_x", None)
    if check_x is not None:
        check_x("x", x)
    else:
        check_ndim("x", x, tuple(range(1, 33)), "(N, ...)")
    if x.shape[0] == 0:
        raise ValueError(f"`x` must hold at least one input; got shape {tuple(x.shape)}")


def _targets(y: Array, n: int, n_out: int) -> Array:
    """``y`` as (N, O), checked against the model's N inputs and O outputs."""
    want = f"({n},) or ({n}, {n_out})" if n_out == 1 else f"({n}, {n_out})"
    if y.ndim == 1 and n_out == 1 and y.shape[0] == n:
        return y[:, None]
    if y.ndim == 2 and tuple(y.shape) == (n, n_out):
        return y
    raise ValueError(
        f"`y` must have shape {want} for {n} inputs and a model with {n_out} outputs; got "
        f"shape {tuple(y.shape)}"
    )


def _recorded_steps(steps: int, every: int | None) -> set[int]:
    return set(range(0, steps, every or steps)) | {steps}


def _autodiff_step(xp: Namespace, model: Bound, x: Array, targets: Array) -> _Step:
    def step(theta: Array, t: int, want_grad: bool) -> tuple[Array, Array | None]:
        if not want_grad:
            return model.evaluate(theta[None, :], x)[0, ...], None
        return residual_grad(model.evaluate, theta, x, targets, xp=xp)

    return step


def _monte_carlo_step(
    xp: Namespace, model: Bound, x: Array, targets: Array, sigma: float, mc: _MonteCarlo
) -> _Step:
    n = x.shape[0]
    p = model.num_params
    budget = mc.resources.memory_budget or DEFAULT_BUDGET
    itemsize = 4 if targets.dtype == xp.float32 else 8
    # a set's evaluation, its direction and the shifted copies θ ± h
    per_set = model.eval_bytes_per_set(n, itemsize) + 3 * p * itemsize
    per_call = mc.resources.samples_per_call or max(2, budget // 4 // per_set)

    def step(theta: Array, t: int, want_grad: bool) -> tuple[Array, Array | None]:
        pairs, stream = mc.samples // 2, _stream_seed(mc.seed, t, 0)
        out = _smoothed_outputs(xp, model.evaluate, theta, x, sigma, pairs, stream, per_call)
        if not want_grad:
            return out, None
        residual = out - targets

        def weighted(thetas: Array) -> Array:
            return xp.sum(model.evaluate(thetas, x) * residual, axis=(1, 2))

        grad = nonlocal_grad(
            weighted,
            theta,
            sigma=sigma,
            samples=mc.samples,
            seed=_stream_seed(mc.seed, t, 1),
            sampling=mc.sampling,
            memory_budget=mc.resources.memory_budget,
            samples_per_call=mc.resources.samples_per_call,
        )
        return out, grad

    return step


def _smoothed_outputs(
    xp: Namespace,
    evaluate: Callable[[Array, Array], Array],
    theta: Array,
    x: Array,
    sigma: float,
    pairs: int,
    seed: int,
    per_call: int,
) -> Array:
    """f̂_σ(X) (N, O): the mean of ½(f(θ + σu) + f(θ − σu)) over ``pairs`` directions u,
    ``per_call`` evaluations at a time. The antithetic pairs cancel f's odd part in the
    perturbation: exact for f linear in θ, and no first-order noise otherwise."""
    gen = Generator(seed, xp=xp, device=device(theta))
    chunk = max(1, per_call // 2)
    total: Array = 0.0  # becomes an (N, O) array with the first chunk
    for start in range(0, pairs, chunk):
        h = sigma * gen.normal((min(chunk, pairs - start), theta.shape[0]), dtype=theta.dtype)
        part = xp.sum(evaluate(xp.concat([theta + h, theta - h]), x), axis=0)
        total = total + part
    return total / (2 * pairs)


def _factors_step(xp: Namespace, model: Bound, x: Array, targets: Array) -> _Step:
    """Jᵀ(f − y) from the model's per-layer NTK factors, J = a ⊗ δ per layer (weights
    row-major (fan_in, fan_out), then c_b δ for the bias): the backward pass they hold."""

    def step(theta: Array, t: int, want_grad: bool) -> tuple[Array, Array | None]:
        out = model.evaluate(theta[None, :], x)[0, ...]
        if not want_grad:
            return out, None
        r = out - targets  # (N, O)
        blocks = []
        for term in model.ntk_terms(xp, theta, x):
            assert term.a is not None  # structured factors, not an autodiff Jacobian
            rd = r if term.delta is None else xp.sum(r[:, :, None] * term.delta, axis=1)
            blocks.append(xp.reshape(xp.matmul(xp.permute_dims(term.a, (1, 0)), rd), (-1,)))
            if term.bias_sq:
                blocks.append(math.sqrt(term.bias_sq) * xp.sum(rd, axis=0))
        return out, xp.concat(blocks)

    return step


def _exact_network(f: Any) -> LastLayer:
    last: LastLayer | None = getattr(f, "last_layer", None)
    if last is None or last.w_start != 0 or last.activation not in EXACT_ACTIVATIONS:
        raise ValueError(
            "`exact=True` needs a one-hidden-layer nk.MLP with activation "
            f"{', '.join(map(repr, EXACT_ACTIVATIONS))} (the closed forms of f_σ); got "
            f"{f!r}. Use the Monte Carlo smoothed loss (`samples=`) for other models"
        )
    return last


def _exact_step(xp: Namespace, last: LastLayer, x: Array, targets: Array, sigma: float) -> _Step:
    """The smoothed one-hidden-layer network is the same network with φ replaced by
    φ̃_s(μ) = E φ(μ + s g): every parameter's perturbation shifts unit j's pre-activation by
    independent noise of scale s(x) = σ √(c_w² ‖x‖² + c_b²), the readout's averages out.
    Backpropagating through φ̃_s with its derivative in μ gives J_σᵀ(f_σ − y) exactly."""
    sq = last.c_w**2 * xp.sum(x * x, axis=1, keepdims=True) + last.c_b**2
    s = sigma * xp.sqrt(sq)  # (N, 1): per input, shared by the units
    if not bool(xp.all(s > 0)):
        raise ValueError(
            "`exact=True` needs every input smoothed, s(x) > 0: a network without biases "
            "leaves the input x = 0 unperturbed"
        )
    fn, deriv = smoothed_activation(xp, last.activation, s)
    d, m, o = last.fan_in, last.width, targets.shape[1]

    def step(theta: Array, t: int, want_grad: bool) -> tuple[Array, Array | None]:
        w = xp.reshape(theta[: d * m], (d, m))
        z = last.c_w * xp.matmul(x, w)
        if last.b_start is not None:
            z = z + last.c_b * theta[last.b_start : last.b_start + m]
        v = xp.reshape(theta[last.v_start : last.v_start + m * o], (m, o))
        out = last.c_v * xp.matmul(fn(xp, z), v)
        if last.bo_start is not None:
            out = out + last.c_o * theta[last.bo_start :]
        if not want_grad:
            return out, None
        r = out - targets
        dz = last.c_v * xp.matmul(r, xp.permute_dims(v, (1, 0))) * deriv(xp, z)  # (N, m)
        blocks = [xp.reshape(last.c_w * xp.matmul(xp.permute_dims(x, (1, 0)), dz), (-1,))]
        if last.b_start is not None:
            blocks.append(last.c_b * xp.sum(dz, axis=0))
        blocks.append(
            xp.reshape(last.c_v * xp.matmul(xp.permute_dims(fn(xp, z), (1, 0)), r), (-1,))
        )
        if last.bo_start is not None:
            blocks.append(last.c_o * xp.sum(r, axis=0))
        return out, xp.concat(blocks)

    return step
