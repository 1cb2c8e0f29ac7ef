"""Attention weights over parameter perturbations (math.md §5).

The attention-weighted nonlocal gradient replaces the uniform Monte Carlo weights 1/M by
α_im = softmax_m(s_im / τ). **The paper's exact score is not known** (its full text could not
be retrieved): the scores below are this library's reconstruction, chosen so that τ → ∞
gives back the fixed-kernel estimator exactly.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass

from array_api_compat import device

from ._typing import Array, Namespace
from ._validate import check_finite
from ._xp import resolve
from .backends.tracing import is_concrete

__all__ = ["SCORES", "Attention", "attention_weights", "effective_sample_size"]

SCORES = ("distance", "output", "loss")
_BISECTION_STEPS = 60
_LOG_BETA_RANGE = (-30.0, 12.0)  # inverse temperature exp(t) / spread(scores)

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
    return _weights(xp, scores, _temperature(xp, temperature, scores), axis, mask, log)


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


def _weights(
    xp: Namespace,
    scores: Array,
    temperature: float | Array,
    axis: int,
    mask: Array | None,
    log: bool,
) -> Array:
    """Softmax without validation; ``temperature`` a float or an array of scores' dtype."""
    z = scores / temperature  # finite / inf = 0: τ = ∞ is the uniform limit exactly
    if mask is not None:
        z = xp.where(mask, z, -math.inf)
    top = xp.max(z, axis=axis, keepdims=True)
    valid = xp.isfinite(top)  # False only for fully masked rows
    top = xp.where(valid, top, 0.0)
    shifted = z - top
    total = xp.sum(xp.exp(shifted), axis=axis, keepdims=True)
    logw = xp.where(valid, shifted - xp.log(xp.where(valid, total, 1.0)), -math.inf)
    return logw if log else xp.exp(logw)


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

    The scores are this library's reconstruction (the paper's are not published in a form
    we could read); each is computed from the perturbed evaluations already made, with no
    extra model calls. With h_m the perturbations, D the differences f(θ+h_m, x) − f(θ, x):

    ``"distance"``
        s_m = −‖h_m‖²/(2σ²): favours small perturbations, a narrower fixed kernel in disguise.
    ``"output"`` (output geometry)
        s_m = −mean_{i,o} D[i, o, m]² over all inputs: perturbations that move the outputs
        less get more weight.
    ``"loss"`` (loss-aware, Boltzmann / Entropy-SGD-like)
        s_m = −[Σ_i D[i, m]·r_i + ½ Σ_i ‖D[i, m]‖²] over the inputs ``x1`` with residuals
        r = f(θ, x1) − ``targets``: equals −(L(θ+h_m) − L(θ)) for L = ½‖f − y‖².
    callable
        ``score(differences, h_sq)`` with differences (N, O, M) for the inputs x1 then x2 and
        h_sq (M,) = ‖h_m‖²; returns (M,) or (N, M) scores.

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
        (N1,) or (N1, O) targets for ``score="loss"``.

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
    >>> fixed = nk.nntk(model, theta, x, **opts)          # τ = ∞ is the fixed kernel
    >>> uniform = nk.nntk(model, theta, x, attention=nk.Attention(temperature=math.inf), **opts)
    >>> bool(np.allclose(uniform, fixed))
    True
    """

    score: str | ScoreFn = "output"
    temperature: float | None = None
    target_ess: float | None = None
    targets: Array | None = None

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
            raise ValueError("score='loss' needs `targets` (the training targets for x1)")
        if self.score != "loss" and self.targets is not None:
            raise ValueError("`targets` is only used by score='loss'")

    def weights(
        self,
        xp: Namespace,
        raw: Array,
        h_sq: Array,
        sigma: float,
        base1: Array,
        targets: Array,
    ) -> Array:
        """α of shape (N, M) for differences ``raw`` (N, O, M) (inputs x1 then x2).

        Called by :func:`nntk_array.nntk` with its perturbed evaluations; no validation.

        Parameters
        ----------
        xp : namespace
            The array-API namespace of the arrays.
        raw : array, shape (N, O, M)
            Differences f(θ + h_m, x_i) − f(θ, x_i), inputs x1 then x2.
        h_sq : array, shape (M,)
            Squared norms ‖h_m‖² of the perturbations.
        sigma : float
            The perturbation scale σ.
        base1 : array, shape (N1, O), or None
            f(θ, x1); used by the loss score only.
        targets : array, shape (N1, O), or None
            The validated targets; used by the loss score only.

        Returns
        -------
        array, shape (N, M)
            Rows of non-negative weights summing to 1.

        Raises
        ------
        ValueError
            A callable score returns a shape other than (M,) or (N, M).

        Examples
        --------
        >>> import numpy as np
        >>> from array_api_compat import array_namespace
        >>> raw = np.array([[[0.1, -0.2, 0.3]], [[0.0, 0.5, -0.1]]])   # N = 2, O = 1, M = 3
        >>> h_sq = np.array([1.0, 2.0, 3.0])
        >>> att = Attention(score="distance", temperature=1.0)      # s_m = -‖h_m‖²/(2σ²)
        >>> np.round(att.weights(array_namespace(raw), raw, h_sq, 1.0, None, None), 3)
        array([[0.506, 0.307, 0.186],
               [0.506, 0.307, 0.186]])
        """
        return self._normalize(xp, self._scores(xp, raw, h_sq, sigma, base1, targets), raw.shape[0])

    def _scores(
        self,
        xp: Namespace,
        raw: Array,
        h_sq: Array,
        sigma: float,
        base1: Array,
        targets: Array,
        *,
        num_inputs: int | None = None,
    ) -> Array:
        """Scores s of shape (M,) or (N, M) for the differences ``raw`` (N, O, M).

        The built-in scores are sums over inputs: the scores of a partition of the inputs
        into blocks (``num_inputs`` the total N, for the "output" mean) add up to the
        scores of all of them, which is how Dask inputs are weighted block by block.
        """
        n, o, m = raw.shape
        if callable(self.score):
            s = self.score(raw, h_sq)
            if tuple(s.shape) not in ((m,), (n, m)):
                raise ValueError(
                    f"the attention score must return shape ({m},) or ({n}, {m}); got "
                    f"{tuple(s.shape)}"
                )
        elif self.score == "distance":
            s = -h_sq / (2.0 * sigma * sigma)
        elif self.score == "output":
            s = -xp.sum(raw * raw, axis=(0, 1)) / float((num_inputs or n) * o)
        else:
            n1 = base1.shape[0]
            resid = base1 - targets
            d1 = raw[:n1, ...]
            s = -(xp.sum(d1 * resid[:, :, None], axis=(0, 1)) + 0.5 * xp.sum(d1 * d1, axis=(0, 1)))
        return xp.astype(s, raw.dtype, copy=False)

    def _normalize(self, xp: Namespace, s: Array, n: int) -> Array:
        """α (N, M) = softmax over samples of ``s`` / τ, for scores (M,) or (N, M)."""
        m = s.shape[-1]
        s = s[None, :] if s.ndim == 1 else s  # one row shared by all inputs: weigh it once
        if self.temperature is not None:
            alpha = _weights(xp, s, float(self.temperature), -1, None, False)
        else:
            tau = _temperature_for_ess(xp, s, self.target_ess or 0.5)
            alpha = _weights(xp, s, tau, -1, None, False)
        return xp.broadcast_to(alpha, (n, m)) if alpha.shape[0] == 1 else alpha


def _temperature_for_ess(xp: Namespace, s: Array, target: float) -> Array:
    """Per-row τ with ESS/M ≈ ``target``, by bisection on log(1/τ) (fixed steps, jit-safe).

    ESS falls monotonically from M (τ = ∞) as τ decreases; ties at the maximum bound it below.
    """
    m = s.shape[-1]
    spread = xp.max(s, axis=-1, keepdims=True) - xp.min(s, axis=-1, keepdims=True)
    spread = xp.where(spread > 0, spread, 1.0)
    lo = xp.full(spread.shape, _LOG_BETA_RANGE[0], dtype=s.dtype, device=device(s))
    hi = xp.full(spread.shape, _LOG_BETA_RANGE[1], dtype=s.dtype, device=device(s))
    for _ in range(_BISECTION_STEPS):
        mid = 0.5 * (lo + hi)
        w = _weights(xp, s * (xp.exp(mid) / spread), 1.0, -1, None, False)
        ess = 1.0 / xp.sum(w * w, axis=-1, keepdims=True)
        too_peaked = ess < target * m
        hi = xp.where(too_peaked, mid, hi)
        lo = xp.where(too_peaked, lo, mid)
    return spread / xp.exp(0.5 * (lo + hi))
