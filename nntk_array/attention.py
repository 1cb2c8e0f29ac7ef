"""Attention weights over parameter perturbations (docs: Mathematics, 'Attention').

The attention-weighted nonlocal gradient replaces the uniform Monte Carlo weights 1/M by
α_im = softmax_m(s_im / τ). The paper does not publish its score in a form we could use: the
scores here are this library's own construction, chosen so that τ → ∞ gives back the
fixed-kernel estimator exactly.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass

from ._mc.attention import softmax
from ._typing import Array, Namespace
from ._validate import check_finite
from ._xp import resolve
from .backends.tracing import is_concrete

__all__ = ["SCORES", "Attention", "attention_weights", "effective_sample_size"]

SCORES = ("distance", "output", "loss")

ScoreFn = Callable[[Array, Array], Array]


def attention_weights(
    scores: Array,
    *,
    temperature: float | Array = 1.0,
    axis: int = -1,
    mask: Array | None = None,
    log: bool = False,
) -> Array:
    """Softmax of ``scores / temperature`` along ``axis``, computed with log-sum-exp.

    Parameters
    ----------
    scores : array
        Real floating scores s (any shape).
    temperature : float or array, default 1.0
        τ > 0; ``math.inf`` gives uniform weights. An array broadcasts against ``scores``
        with ``axis`` kept (one temperature per row, say).
    axis : int, default -1
        The axis the weights sum to 1 over.
    mask : bool array, optional
        Broadcastable to ``scores``; ``False`` entries get weight 0 (log-weight -inf). A row
        with every entry masked gets all-zero weights (not NaN).
    log : bool, default False
        Return log-weights (computed without forming the weights, so tiny weights keep
        their precision).

    Returns
    -------
    array, the shape, dtype, namespace and device of ``scores``

    Raises
    ------
    TypeError
        Non-floating ``scores``, a non-boolean ``mask``, a non-real ``temperature``.
    ValueError
        ``temperature`` <= 0 or NaN, NaN/inf scores, an out-of-range ``axis``.

    Examples
    --------
    >>> import numpy as np
    >>> import nntk_array as nk
    >>> w = nk.attention_weights(np.array([[0.0, 1.0, 2.0], [5.0, 5.0, 5.0]]), temperature=2.0)
    >>> np.round(w, 3)
    array([[0.186, 0.307, 0.506],
           [0.333, 0.333, 0.333]])
    >>> nk.attention_weights(np.zeros(3), mask=np.array([False, False, False]))
    array([0., 0., 0.])
    """
    xp, (scores,) = resolve(scores=scores)
    if not -scores.ndim <= axis < max(scores.ndim, 1):
        raise ValueError(f"`axis` must index a dimension of `scores` (ndim {scores.ndim})")
    check_finite(xp, scores=scores)
    if mask is not None and not (hasattr(mask, "dtype") and mask.dtype == xp.bool):
        raise TypeError(f"`mask` must be a boolean array of {xp.__name__}")
    return softmax(xp, scores, _temperature(xp, temperature, scores), axis, mask, log)


def _temperature(xp: Namespace, temperature: object, scores: Array) -> float | Array:
    if isinstance(temperature, bool) or (
        not hasattr(temperature, "dtype") and not isinstance(temperature, numbers.Real)
    ):
        raise TypeError(
            f"`temperature` must be a positive real number or array; got "
            f"{type(temperature).__name__}"
        )
    if isinstance(temperature, numbers.Real):
        t = float(temperature)
        if not t > 0.0:  # also catches NaN
            raise ValueError(f"`temperature` must be > 0 (math.inf for uniform); got {t!r}")
        return t
    _, (temp, _) = resolve(temperature=temperature, scores=scores)
    check_finite(xp, temperature=xp.where(xp.isinf(temp), 1.0, temp))
    if is_concrete(temp) and not bool(xp.all(temp > 0)):
        raise ValueError("`temperature` must be > 0 everywhere")
    return xp.astype(temp, scores.dtype, copy=False)


def effective_sample_size(weights: Array, *, axis: int = -1) -> Array:
    """Kish's effective sample size 1 / Σ α² of normalized weights, in [1, M].

    Parameters
    ----------
    weights : array, shape (..., M, ...)
        Non-negative weights that sum to 1 along ``axis`` (as from :func:`attention_weights`).
    axis : int, default -1
        The axis of the M samples.

    Returns
    -------
    array, the shape of ``weights`` without ``axis``
        M for uniform weights, 1 when one weight is 1; ``0`` for an all-zero row.

    Raises
    ------
    TypeError
        Non-floating or non-array ``weights``.

    Examples
    --------
    >>> import numpy as np
    >>> import nntk_array as nk
    >>> float(nk.effective_sample_size(np.full(8, 1 / 8)))
    8.0
    """
    xp, (weights,) = resolve(weights=weights)
    total = xp.sum(weights * weights, axis=axis)
    return 1.0 / xp.where(total > 0, total, math.inf)


@dataclass(frozen=True, eq=False)
class Attention:
    """Attention weighting of the nonlocal gradient: α_im = softmax_m(s_im / τ).

    The scores are this library's own construction (the paper does not publish its score
    in a form we could use); each is computed from perturbed evaluations, with no extra
    model calls beyond the reference inputs'. With h_m the perturbations and D the
    differences f(θ+h_m, x) − f(θ, x):

    ``"distance"``
        s_m = −‖h_m‖²/(2σ²): favours small perturbations, a narrower fixed kernel in disguise.
    ``"output"`` (output geometry)
        s_m = −mean_{i,o} D[i, o, m]² over the **reference inputs**: perturbations that move
        the outputs less get more weight.
    ``"loss"`` (loss-aware, Boltzmann / Entropy-SGD-like)
        s_m = −[Σ_i D[i, m]·r_i + ½ Σ_i ‖D[i, m]‖²] over the reference inputs with residuals
        r = f(θ, x_ref) − ``targets``: equals −(L(θ+h_m) − L(θ)) for L = ½‖f − y‖². It needs
        one-sided differences, so antithetic sampling is refused.
    callable
        ``score(differences, h_sq)`` with differences (N, O, M) for the inputs x1 then x2 and
        h_sq (M,) = ‖h_m‖²; returns (M,) or (N, M) scores.

    The reference inputs are ``reference`` when given, else the call's ``x1``. The weights,
    and so the kernel, depend on them: to compute train and test blocks in separate calls
    with one set of weights, pass the training inputs as ``reference`` (and the same seed);
    ``nk.nntk(f, θ, x_train, x_test, attention=...)`` uses ``x_train`` by default. With
    antithetic sampling D is f(θ+h_m) − f(θ−h_m), and ``"output"`` then scores the odd part
    of the move.

    Parameters
    ----------
    score : str or callable, default "output"
    temperature : float, optional
        τ > 0; ``math.inf`` gives the fixed-kernel estimator exactly.
    target_ess : float, optional
        Choose τ per input by bisection so that the effective sample size 1/Σ_m α_im² is
        this fraction of M. Scores' units vary between problems, so this is the default
        (0.5) when neither ``temperature`` nor ``target_ess`` is given.
    targets : array, optional
        (N_ref,) or (N_ref, O) targets of the reference inputs, for ``score="loss"``.
    reference : array, optional
        (N_ref, ...) the inputs the ``"output"`` and ``"loss"`` scores average over (the
        training inputs); the call's ``x1`` when omitted.

    Raises
    ------
    ValueError
        Unknown score, both or bad ``temperature``/``target_ess``, ``"loss"`` without targets.

    Examples
    --------
    >>> import math
    >>> import numpy as np
    >>> import nntk_array as nk
    >>> model = nk.MLP(1, (16,), activation="sign")
    >>> theta = model.init(0, xp=np)
    >>> x = np.linspace(-1.0, 1.0, 4)[:, None]
    >>> opts = dict(sigma=0.3, samples=256, seed=0)
    >>> K = nk.nntk(model, theta, x, attention=nk.Attention(score="output"), **opts)
    >>> K.shape
    (4, 4)
    >>> x_test = np.array([[0.25]])                       # test rows, same weights:
    >>> att = nk.Attention(score="output", reference=x)
    >>> K_test = nk.nntk(model, theta, x_test, x, attention=att, **opts)
    >>> K_both = nk.nntk(model, theta, np.concatenate([x, x_test]), attention=att, **opts)
    >>> bool(np.allclose(K_test, K_both[4:, :4]))
    True
    >>> fixed = nk.nntk(model, theta, x, variance_reduction="none", **opts)  # τ = ∞: fixed
    >>> uniform = nk.nntk(model, theta, x, attention=nk.Attention(temperature=math.inf), **opts)
    >>> bool(np.allclose(uniform, fixed))
    True
    """

    score: str | ScoreFn = "output"
    temperature: float | None = None
    target_ess: float | None = None
    targets: Array | None = None
    reference: Array | None = None

    def __post_init__(self) -> None:
        if not callable(self.score) and self.score not in SCORES:
            options = ", ".join(repr(s) for s in SCORES)
            raise ValueError(f"`score` must be one of {options} or a callable; got {self.score!r}")
        if self.temperature is not None and self.target_ess is not None:
            raise ValueError("give `temperature` or `target_ess`, not both")
        if self.temperature is not None:
            t: object = self.temperature
            if isinstance(t, bool) or not isinstance(t, numbers.Real) or not float(t) > 0:
                raise ValueError(f"`temperature` must be > 0 (math.inf allowed); got {t!r}")
        if self.target_ess is not None:
            e: object = self.target_ess
            if isinstance(e, bool) or not isinstance(e, numbers.Real) or not 0 < float(e) <= 1:
                raise ValueError(f"`target_ess` must be a fraction in (0, 1]; got {e!r}")
        if self.score == "loss" and self.targets is None:
            raise ValueError("score='loss' needs `targets` (the targets of the reference inputs)")
        if self.score != "loss" and self.targets is not None:
            raise ValueError("`targets` is only used by score='loss'")
        if self.reference is not None and self.score not in ("output", "loss"):
            raise ValueError("`reference` is only used by the scores 'output' and 'loss'")
