"""Training dynamics against width: does the trained network follow its kernel at init?

Two lazy-regime experiments (the local one of Jacot et al. 2018 and Lee et al. 2019, and its
nonlocal analogue), each for widths from 64 up:

* the plain ReLU net trained by gradient descent on the plain loss (:func:`nntk_array.train`,
  ``loss="plain"``) against the prediction of the local NTK at initialization;
* the sign net trained on the Gaussian-smoothed loss (``loss="smoothed"``, ``exact=True``:
  the closed forms of f_σ and its gradient for one hidden layer, no Monte Carlo noise)
  against the prediction of the NNTK at initialization
  (:func:`nntk_array.analytic.finite_width_nntk`): along gradient descent on L_σ the smoothed
  outputs move by f_σ ← f_σ − η Θ_NL(θ_t)(f_σ − y) to first order, so they follow the NNTK's
  kernel descent as long as Θ_NL(θ_t) stays near Θ_NL(θ_0).

Both runs take ``steps`` full-batch steps of size η = 1/λ_max of the infinite-width kernel
(the same η for every width; a choice of ours), and the kernel prediction is the same
discrete descent f_{k+1} = f_k − η K (f_k − y) with the kernel frozen at θ_0 (the exact
discrete-time counterpart of kernel gradient flow, so the gap measures the kernel's change
only). Reported per width: the RMS function-space distance between the trained network
(f or f_σ) and the kernel prediction on the test inputs, and the relative kernel change
‖K(θ_T) − K(θ_0)‖_F / ‖K(θ_0)‖_F on the training inputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from array_api_compat import array_namespace, device

from .. import analytic
from .._typing import Array, Namespace
from ..local_ntk import ntk
from ..models import MLP
from ..train import train

__all__ = ["RUNS", "kernel_descent", "smoothed_outputs", "width_sweep"]

#: (label, activation, loss) of the two experiments
RUNS = (
    ("ReLU net, plain loss, local NTK", "relu", "plain"),
    ("sign net, smoothed loss, NNTK", "sign", "smoothed"),
)


def smoothed_outputs(model: MLP, theta: Array, x: Array, *, sigma: float) -> Array:
    """f_σ(θ, x) = E f(θ + σu, x) of a one-hidden-layer MLP in closed form.

    f_σ(x) = c_v Σ_j v_j φ̃_s(z_j(x)) + c_o b_o with s(x) = σ √(c_w²‖x‖² + c_b²) and φ̃ the
    smoothed activation (:func:`nntk_array.analytic.smoothed_activation`).

    Parameters
    ----------
    model : MLP
        One hidden layer, activation relu, erf or sign, one output, biases.
    theta : array, shape (P,)
    x : array, shape (N, d)
    sigma : float

    Returns
    -------
    array, shape (N,)

    Examples
    --------
    >>> import numpy as np
    >>> import nntk_array as nk
    >>> model = nk.MLP(1, (16,), activation="sign")
    >>> theta, x = model.init(0, xp=np), np.linspace(-1.0, 1.0, 4)[:, None]
    >>> run = nk.train(model, theta, x, np.zeros(4), steps=1, learning_rate=0.1,
    ...                loss="smoothed", sigma=0.3, exact=True)
    >>> bool(np.allclose(smoothed_outputs(model, theta, x, sigma=0.3), run.outputs[0]))
    True
    """
    xp = array_namespace(theta, x)
    last = model.last_layer
    assert last is not None
    assert last.bo_start is not None
    _, z, _ = model.hidden_pass(theta[None, :], x)
    var = last.c_w**2 * xp.sum(x * x, axis=1, keepdims=True) + last.c_b**2
    fn, _ = analytic.smoothed_activation(xp, model.activation, sigma * xp.sqrt(var))
    v = theta[last.v_start : last.v_start + last.width]
    return last.c_v * xp.sum(fn(xp, z[0, ...]) * v, axis=1) + last.c_o * theta[last.bo_start]


def kernel_descent(
    k_train: Array,
    k_test: Array,
    y: Array,
    f0_train: Array,
    f0_test: Array,
    *,
    learning_rate: float,
    steps: int,
) -> tuple[Array, Array]:
    """Gradient descent of the linearized model with the kernel frozen: k steps in closed form.

    With K = V diag(λ) Vᵀ (negative eigenvalues clipped) and η the learning rate,
    f_k(X) = y + V diag((1 − ηλ)^k) Vᵀ (f₀(X) − y) and
    f_k(X*) = f₀(X*) − K* V diag((1 − (1 − ηλ)^k)/λ) Vᵀ (f₀(X) − y), with the last factor
    ηk at λ = 0: the discrete-time form of :func:`nntk_array.gradient_flow` (stable for
    η λ_max < 2).

    Parameters
    ----------
    k_train : array, shape (N, N)
    k_test : array, shape (N*, N)
    y, f0_train : array, shape (N,)
    f0_test : array, shape (N*,)
    learning_rate : float
    steps : int

    Returns
    -------
    f_train, f_test : arrays of shapes (N,) and (N*,)

    Examples
    --------
    >>> import numpy as np
    >>> K = np.array([[2.0, 0.0], [0.0, 1.0]])
    >>> f, _ = kernel_descent(K, K, np.ones(2), np.zeros(2), np.zeros(2),
    ...                       learning_rate=0.5, steps=1)
    >>> f
    array([1. , 0.5])
    """
    xp = array_namespace(k_train, k_test, y)
    lam, vecs = xp.linalg.eigh(0.5 * (k_train + xp.permute_dims(k_train, (1, 0))))
    lam = xp.maximum(lam, 0.0)
    proj = xp.matmul(xp.permute_dims(vecs, (1, 0)), f0_train - y)
    decay = xp.pow(1.0 - learning_rate * lam, float(steps))
    tiny = xp.max(lam) * 1e-12
    safe = xp.where(lam > tiny, lam, 1.0)
    gain = xp.where(lam > tiny, (1.0 - decay) / safe, learning_rate * steps)
    f_train = y + xp.matmul(vecs, decay * proj)
    f_test = f0_test - xp.matmul(k_test, xp.matmul(vecs, gain * proj))
    return f_train, f_test


def _kernel_fn(activation: str, loss: str, sigma: float) -> Callable[..., Array]:
    if loss == "plain":
        return lambda model, theta, x1, x2: ntk(model, theta, x1, x2)
    return lambda model, theta, x1, x2: analytic.finite_width_nntk(
        model, theta, x1, x2, sigma=sigma
    )


def _outputs(model: MLP, theta: Array, x: Array, loss: str, sigma: float) -> Array:
    if loss == "plain":
        return model.apply(theta, x)[:, 0]
    return smoothed_outputs(model, theta, x, sigma=sigma)


def _rms(xp: Namespace, a: Array) -> float:
    return math.sqrt(float(xp.mean(a * a)))


def width_sweep(
    x_train: Array,
    y_train: Array,
    x_test: Array,
    *,
    widths: tuple[int, ...],
    seeds: int,
    steps: int,
    sigma: float,
    advance: Callable[[str], None],
) -> list[dict[str, Any]]:
    """Train both experiments at every width and seed and measure the gaps.

    Parameters
    ----------
    x_train : array, shape (N, 1)
    y_train : array, shape (N,)
    x_test : array, shape (N*, 1)
    widths : tuple of int
    seeds : int
        Seeds 0, …, seeds − 1 initialize the networks.
    steps : int
        Gradient steps.
    sigma : float
        σ of the smoothed loss and of the NNTK.
    advance : callable
        Called with a label after each run.

    Returns
    -------
    list of dict
        One per (experiment, width, seed): ``distance`` (RMS on the test inputs),
        ``distance_train``, ``kernel_change``, ``loss_start``, ``loss_end``,
        ``learning_rate``.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.linspace(-1.0, 1.0, 8)[:, None]
    >>> rows = width_sweep(x, np.sign(x[:, 0]), x, widths=(16,), seeds=1, steps=5,
    ...                    sigma=0.3, advance=lambda label: None)
    >>> [sorted(r) for r in rows][0][:3], len(rows)
    (['activation', 'distance', 'distance_train'], 2)
    """
    xp = array_namespace(x_train, y_train, x_test)
    x_all = xp.concat([x_train, x_test], axis=0)
    n = x_train.shape[0]
    records = []
    for label, activation, loss in RUNS:
        smooth = sigma if loss == "smoothed" else 0.0
        k_inf = analytic.ntk(x_train, activation=activation, sigma=smooth)
        eta = 1.0 / float(xp.max(xp.linalg.eigvalsh(k_inf)))
        kernel = _kernel_fn(activation, loss, sigma)
        for width in widths:
            model = MLP(1, (width,), 1, activation)
            for seed in range(seeds):
                theta0 = model.init(seed, xp=xp, dtype=x_train.dtype, device=device(x_train))
                k0 = kernel(model, theta0, x_all, x_train)
                f0 = _outputs(model, theta0, x_all, loss, sigma)
                options: dict[str, Any] = {"loss": loss}
                if loss == "smoothed":
                    options.update(sigma=sigma, exact=True)
                run = train(
                    model, theta0, x_train, y_train, steps=steps, learning_rate=eta, **options
                )
                f_net = _outputs(model, run.theta, x_all, loss, sigma)
                lin_tr, lin_te = kernel_descent(
                    k0[:n, :],
                    k0[n:, :],
                    y_train,
                    f0[:n],
                    f0[n:],
                    learning_rate=eta,
                    steps=steps,
                )
                k_end = kernel(model, run.theta, x_train, x_train)
                change = _rms(xp, k_end - k0[:n, :]) / _rms(xp, k0[:n, :])
                records.append(
                    {
                        "experiment": label,
                        "activation": activation,
                        "width": width,
                        "seed": seed,
                        "distance": _rms(xp, f_net[n:] - lin_te),
                        "distance_train": _rms(xp, f_net[:n] - lin_tr),
                        "kernel_change": change,
                        "loss_start": float(run.losses[0]),
                        "loss_end": float(run.losses[-1]),
                        "learning_rate": eta,
                    }
                )
                advance(f"training, {label}, width {width}, seed {seed}")
    return records
