"""Attention over perturbations: scores from the evaluations already made, and weights.

The attention-weighted nonlocal gradient replaces the uniform Monte Carlo weights 1/M by
α_im = softmax_m(s_im / τ). The scores are this library's construction (docs: Mathematics,
'Attention'); each is computed from the perturbed evaluations already made:

- ``"distance"``: s_m = −‖h_m‖²/(2σ²);
- ``"output"``: s_m = −mean over the reference inputs and outputs of D[i, o, m]²;
- ``"loss"``: s_m = −[Σ_i D[i, m]·r_i + ½ Σ_i ‖D[i, m]‖²] over the reference inputs with
  residuals r = f(θ, x_ref) − targets, which is −(L(θ+h_m) − L(θ)) for L = ½‖f − y‖²;
- a callable ``score(differences, h_sq)`` over all inputs of the call.

The built-in scores are sums over the reference inputs, so the shares of blocks of inputs
add up (that is how Dask inputs are weighted block by block).
"""

from __future__ import annotations

import math
from typing import Any

from array_api_compat import device

from .._typing import Array, Namespace

__all__ = ["normalize", "scores", "softmax", "temperature_for_ess"]

_BISECTION_STEPS = 60
_LOG_BETA_RANGE = (-30.0, 12.0)  # inverse temperature exp(t) / spread(scores)


def scores(
    att: Any,
    xp: Namespace,
    raw: Array,
    h_sq: Array,
    sigma: float,
    *,
    ref: slice,
    num_ref: int,
    base_ref: Array | None = None,
    targets: Array | None = None,
) -> Array | None:
    """Scores s, (M,) or (N, M), of an attention spec ``att`` for differences ``raw``
    (N, O, M); the built-in data scores read the rows ``ref`` (this block's share of the
    ``num_ref`` reference inputs) and return ``None`` when the block holds none of them."""
    n, o, m = raw.shape
    if callable(att.score):
        s = att.score(raw, h_sq)
        if tuple(s.shape) not in ((m,), (n, m)):
            raise ValueError(
                f"the attention score must return shape ({m},) or ({n}, {m}); got {tuple(s.shape)}"
            )
    elif att.score == "distance":
        s = -h_sq / (2.0 * sigma * sigma)
    else:
        d = raw[ref, ...]
        if d.shape[0] == 0:
            return None
        if att.score == "output":
            s = -xp.sum(d * d, axis=(0, 1)) / float(num_ref * o)
        else:
            assert base_ref is not None  # the loss score has its base outputs and targets
            assert targets is not None
            resid = base_ref - targets
            s = -(xp.sum(d * resid[:, :, None], axis=(0, 1)) + 0.5 * xp.sum(d * d, axis=(0, 1)))
    return xp.astype(s, raw.dtype, copy=False)


def normalize(att: Any, xp: Namespace, s: Array, n: int) -> Array:
    """α (N, M) = softmax over samples of ``s`` / τ, for scores (M,) or (N, M); τ is the
    spec's temperature or the one that reaches its target effective sample size."""
    m = s.shape[-1]
    s = s[None, :] if s.ndim == 1 else s  # one row shared by all inputs: weigh it once
    if att.temperature is not None:
        alpha = softmax(xp, s, float(att.temperature), -1, None, False)
    else:
        tau = temperature_for_ess(xp, s, att.target_ess or 0.5)
        alpha = softmax(xp, s, tau, -1, None, False)
    return xp.broadcast_to(alpha, (n, m)) if alpha.shape[0] == 1 else alpha


def softmax(
    xp: Namespace,
    scores: Array,
    temperature: float | Array,
    axis: int,
    mask: Array | None,
    log: bool,
) -> Array:
    """Softmax of ``scores / temperature`` along ``axis`` by log-sum-exp, without validation;
    ``temperature`` a float or an array of the scores' dtype; ``mask`` False entries get 0."""
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


def temperature_for_ess(xp: Namespace, s: Array, target: float) -> Array:
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
        w = softmax(xp, s * (xp.exp(mid) / spread), 1.0, -1, None, False)
        ess = 1.0 / xp.sum(w * w, axis=-1, keepdims=True)
        too_peaked = ess < target * m
        hi = xp.where(too_peaked, mid, hi)
        lo = xp.where(too_peaked, lo, mid)
    return spread / xp.exp(0.5 * (lo + hi))
