"""The perturbed model evaluations shared by nonlocal gradients and nonlocal kernels.

For perturbations h_m = t_m u_m (u_m the rows of :class:`~nntk_array.sampling.Directions`)
this evaluates the model for a chunk of perturbations in one batched call and returns the
differences D[i, o, m] = f(θ + h_m, x_i)_o − f(θ, x_i)_o (or the antithetic or Gauss–Hermite
combinations), together with the per-row weight w_m that turns them into a nonlocal
gradient: ĝ(x_i) = Σ_m α_im D[i, :, m] w_m u_m with α_im = 1/M for the fixed kernel.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ._typing import Array, DType, Namespace
from ._validate import check_choice, check_ndim, check_positive_float, check_positive_int
from .backends.random import Generator
from .sampling import ROW_TILE, SAMPLINGS, Directions, explicit_directions
from .sampling import make_directions as sampler

__all__ = [
    "DEFAULT_BUDGET",
    "Differences",
    "Smoothing",
    "check_resources",
    "check_samples_array",
    "check_seed",
    "chunk_rows",
    "drawn_rows",
    "evaluate_differences",
    "gauss_hermite",
    "make_directions",
    "make_smoothing",
]

Evaluate = Callable[[Array], Array]  # (B, P) -> (B, N, O)
OnChunk = Callable[[int, int, Array, Array, Array], None]


@dataclass(frozen=True)
class Smoothing:
    """How perturbations are formed and weighted (math.md §2–4).

    ``form="gaussian"``: h = σu, w = 1/σ (Stein). ``form="paper"``: w = c/|h|² · t, with
    ``radial="gaussian"`` (h = σu) or ``"ball"`` (h uniform in the ball of radius σ).
    ``nodes``: Gauss–Hermite (radius multiplier, coefficient) pairs for directional smoothing.
    """

    sigma: float
    form: str = "gaussian"
    radial: str = "gaussian"
    scale: float = 1.0
    antithetic: bool = False
    nodes: tuple[tuple[float, float], ...] | None = None


def gauss_hermite(order: int, sigma: float) -> tuple[tuple[float, float], ...]:
    """Pairs (√2 v_q, √2 w_q v_q / (√π σ)) over the positive Gauss–Hermite nodes v_q.

    D_k f = Σ_q coef_q [f(θ + σ r_q ξ_k) − f(θ − σ r_q ξ_k)] is the directional Gaussian
    smoothing derivative (math.md §3) with ``order`` nodes; the node at 0 has no weight.
    """
    v, w = np.polynomial.hermite.hermgauss(order)
    return tuple(
        (math.sqrt(2.0) * float(vq), math.sqrt(2.0) * float(wq * vq) / (math.sqrt(math.pi) * sigma))
        for vq, wq in zip(v, w, strict=True)
        if vq > 0
    )


@dataclass
class Differences:
    """Result of :func:`evaluate_differences`.

    ``raw``: (N, O, M) differences D; ``weights``: (M,) w_m; ``sq_norms``: (M,) |u_m|² and
    ``h_sq``: (M,) |h_m|², or ``None`` when not computed.
    """

    raw: Array  # each of these may be None (see above)
    weights: Array
    sq_norms: Array
    h_sq: Array


def _row_factors(
    xp: Namespace,
    dirs: Directions,
    start: int,
    stop: int,
    u: Array,
    sm: Smoothing,
    norms: bool,
) -> tuple[float | Array, float | Array, Array | None]:
    """(t, w, |u|²) per row: the perturbation is t·u, the gradient row is w·u.

    The Gaussian form has constant t and w and skips the norms unless ``norms`` is set.
    """
    sigma = sm.sigma
    if sm.form == "gaussian" and sm.nodes is None:
        return sigma, 1.0 / sigma, xp.sum(u * u, axis=1) if norms else None
    sq = xp.sum(u * u, axis=1)
    if sm.nodes is not None:  # unit directions ξ = u/|u|; the nodes carry σ and weights
        return sigma / xp.sqrt(sq), xp.ones_like(sq), sq
    uniforms = dirs.radial_uniforms(start, stop) if sm.radial == "ball" else None
    if uniforms is None:  # Gaussian radial density, or explicit rows used as given
        t: float | Array = sigma
        return t, sm.scale / (sigma * sq), sq
    # uniform in the σ-ball: radius σ V^{1/P} along u/|u|
    t = sigma * uniforms ** (1.0 / u.shape[1]) / xp.sqrt(sq)
    return t, sm.scale / (t * sq), sq


def _dev(x: Array) -> object:
    from array_api_compat import device

    return device(x)


def evaluate_differences(
    evaluate: Evaluate,
    theta: Array,
    dirs: Directions,
    sm: Smoothing,
    *,
    chunk: int,
    acc_dtype: DType,
    on_chunk: OnChunk | None = None,
    keep: bool = True,
    norms: bool = False,
    draw: int = ROW_TILE,
) -> Differences:
    """Evaluate the model for all M perturbations, ``chunk`` at a time.

    ``on_chunk(start, stop, u, d, w)`` sees each chunk's rows u (B, P), differences d
    (B, N, O) in ``acc_dtype`` and weights w (B,) while u is in memory (nonlocal gradients
    accumulate there). With ``keep=False`` the differences are not collected; ``norms``
    asks for |u|² and |h|² also where the weights do not need them. Directions are drawn
    ``draw`` rows at a time (a multiple of the tile height).
    """
    xp = dirs.xp
    base = None if (sm.antithetic or sm.nodes is not None) else evaluate(theta[None, :])
    raw, weights, sq_norms, h_sq = [], [], [], []

    def collect(b0: int, b1: int, u: Array | None, d: Array, w: float | Array) -> None:
        d = xp.astype(d, acc_dtype, copy=False)
        if isinstance(w, float):
            w = xp.full((b1 - b0,), w, dtype=acc_dtype, device=_dev(d))
        w = xp.astype(w * 0.5 if sm.antithetic else w, acc_dtype, copy=False)
        if on_chunk is not None:
            on_chunk(b0, b1, u, d, w)
        if keep:
            raw.append(xp.permute_dims(d, (1, 2, 0)))
        weights.append(w)

    # Rows are drawn ``draw`` (whole tiles) at a time and evaluated ``chunk`` at a time.
    group = max(draw, -(-chunk // ROW_TILE) * ROW_TILE)
    fast = sm.form == "gaussian" and sm.nodes is None and not norms and on_chunk is None
    for g0 in range(0, dirs.num_rows, group):
        g1 = min(g0 + group, dirs.num_rows)
        pieces = [(b0, min(b0 + chunk, g1)) for b0 in range(g0, g1, chunk)]
        if fast:  # θ ± σu with one full-size temporary (two for antithetic pairs)
            plus = dirs.rows(g0, g1, fresh=True)
            minus: Array = theta - sm.sigma * plus if sm.antithetic else None
            plus *= sm.sigma  # the standard's in-place operators; JAX rebinds
            plus += theta
            for b0, b1 in pieces:
                rows = slice(b0 - g0, b1 - g0)
                d = evaluate(plus[rows, :])
                d = d - (evaluate(minus[rows, :]) if sm.antithetic else base)
                collect(b0, b1, None, d, 1.0 / sm.sigma)
            continue
        u = dirs.rows(g0, g1)
        t, w, sq = _row_factors(xp, dirs, g0, g1, u, sm, norms)
        h = u * (t if isinstance(t, float) else t[:, None])
        if sq is not None:
            sq_norms.append(sq)
            h_sq.append(sq * (t * t))
        for b0, b1 in pieces:
            hb = h[b0 - g0 : b1 - g0, :]
            if sm.nodes is not None:
                d = None
                for radius, coef in sm.nodes:
                    term = evaluate(theta + radius * hb) - evaluate(theta - radius * hb)
                    d = coef * term if d is None else d + coef * term
            elif sm.antithetic:
                d = evaluate(theta + hb) - evaluate(theta - hb)
            else:
                d = evaluate(theta + hb) - base
            wb = w if isinstance(w, float) else w[b0 - g0 : b1 - g0]
            collect(b0, b1, u[b0 - g0 : b1 - g0, :], d, wb)

    def cat(parts: list[Array], axis: int = 0) -> Array:
        return parts[0] if len(parts) == 1 else xp.concat(parts, axis=axis)

    return Differences(
        raw=cat(raw, axis=2) if keep else None,
        weights=cat(weights),
        sq_norms=xp.astype(cat(sq_norms), acc_dtype, copy=False) if sq_norms else None,
        h_sq=xp.astype(cat(h_sq), acc_dtype, copy=False) if h_sq else None,
    )


FORMS = ("gaussian", "paper")
RADIALS = ("gaussian", "ball")
SCALES = ("gradient-consistent", "literal")
DEFAULT_BUDGET = 384 * 2**20


def check_seed(seed: object, rng: object) -> object:
    """The seed-like object to build the generator from (``seed`` or a native ``rng``)."""
    if seed is not None and rng is not None:
        raise ValueError("give `seed` (an int) or `rng` (a native generator), not both")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
        raise TypeError(
            f"`seed` must be an int (pass generators as `rng=`); got {type(seed).__name__}"
        )
    return rng if rng is not None else seed


def make_smoothing(
    sigma: object,
    form: str,
    radial: str,
    scale: str,
    *,
    num_params: int,
    antithetic: bool,
    quadrature: int | None = None,
) -> Smoothing:
    """Validate the smoothing options and build a :class:`Smoothing`."""
    sigma = check_positive_float("sigma", sigma)
    check_choice("form", form, FORMS)
    check_choice("radial", radial, RADIALS)
    check_choice("scale", scale, SCALES)
    if form == "gaussian" and radial != "gaussian":
        raise ValueError("`radial` applies to form='paper' only; leave it 'gaussian'")
    c = float(num_params) if scale == "gradient-consistent" else 1.0
    nodes = None if quadrature is None else gauss_hermite(quadrature, sigma)
    return Smoothing(sigma, form, radial, c, antithetic, nodes)


def make_directions(
    xp: Namespace,
    samples: object,
    sampling: str,
    seedlike: object,
    *,
    num_params: int,
    dtype: DType,
    dev: object,
    group_size: Callable[[int], int],
    cache_bytes: int,
) -> Directions:
    """Explicit (M, P) rows or a sampler for ``samples`` rows; ``group_size(M)`` for
    structured samplers."""
    check_choice("sampling", sampling, SAMPLINGS)
    if hasattr(samples, "shape"):
        if sampling not in ("iid", "antithetic"):
            raise ValueError(
                "explicit `samples` are used as given: `sampling` must be 'iid' or 'antithetic'"
            )
        if seedlike is not None:
            raise ValueError("explicit `samples` need no `seed` or `rng`")
        return explicit_directions(samples)
    m = check_positive_int("samples", samples)
    gen = Generator(seedlike, xp=xp, device=dev)
    return sampler(
        sampling, gen, m, num_params, dtype, group_size=group_size(m), cache_bytes=cache_bytes
    )


def check_samples_array(samples: Array, num_params: int) -> None:
    """Raise ``ValueError`` unless explicit samples have shape (M, P)."""
    check_ndim("samples", samples, (2,), f"(M, {num_params})")
    if samples.shape[1] != num_params or samples.shape[0] < 1:
        raise ValueError(
            f"`samples` must have shape (M, {num_params}) with M >= 1; got {tuple(samples.shape)}"
        )


def check_resources(
    memory_budget: object, batch_size: object, return_stderr: object
) -> tuple[int, int | None]:
    """Validate the options shared by the Monte Carlo functions; return (budget, batch_size)."""
    if not isinstance(return_stderr, bool):
        raise TypeError("`return_stderr` must be a bool")
    budget = (
        DEFAULT_BUDGET
        if memory_budget is None
        else check_positive_int("memory_budget", memory_budget)
    )
    batch = None if batch_size is None else check_positive_int("batch_size", batch_size)
    return budget, batch


def chunk_rows(batch_size: int | None, budget: int, per_set: int, num_rows: int) -> int:
    """Parameter sets per batched evaluation: ``batch_size``, or a quarter of the budget's
    worth of evaluation temporaries, rounded to divide or fill whole row tiles."""
    if batch_size is not None:
        return min(batch_size, num_rows)
    rows = max(1, (budget // 4) // max(per_set, 1))
    if rows >= ROW_TILE:
        rows -= rows % ROW_TILE
    else:  # a power of two divides the tile height
        rows = 1 << (rows.bit_length() - 1)
    return min(rows, num_rows)


def drawn_rows(budget: int, row_bytes: int) -> int:
    """Rows of directions drawn at once: whole tiles, about an eighth of the budget (rows of
    ``row_bytes`` including their transient copies), at least one tile."""
    return ROW_TILE * max(1, (budget // 8) // max(row_bytes * ROW_TILE, 1))
