"""The batched perturbed evaluations shared by nonlocal gradients and nonlocal kernels.

One loop: directions are drawn a block of rows at a time, turned into perturbations by the
smoothing form, and the model is evaluated for a chunk of perturbations in one batched call.
:func:`chunks` yields each chunk's differences while its perturbations are in memory (the
nonlocal gradient accumulates there); :func:`collect` keeps the differences of all M
perturbations for a kernel.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from array_api_compat import device, is_writeable_array

from .._typing import Array, DType, Namespace
from ..backends.compile import program
from ..models.protocol import Bound, bind
from .directions import ROW_TILE, Directions
from .smoothing import Form, Shifted, Stein

__all__ = ["Chunk", "Differences", "chunks", "collect", "evaluator", "shifting", "swept"]


@dataclass(frozen=True)
class Chunk:
    """Perturbations ``start:stop``: h (B, P) (``None`` where not kept), differences d
    (B, N, O) and the weights w (B,) against the directions u = h / t, in the accumulation
    dtype; |u|² (B,) where asked."""

    start: int
    stop: int
    h: Array | None
    t: float | Array
    d: Array
    w: Array
    u_sq: Array | None


@dataclass(frozen=True)
class Norms:
    """Per-sample squared norms of the directions |u_m|² and perturbations |h_m|², (M,)."""

    u_sq: Array
    h_sq: Array


@dataclass(frozen=True)
class Differences:
    """All M perturbations: ``raw`` (N, O, M) differences D, ``weights`` (M,) w_m,
    ``norms`` when they were asked for, and the directions' Gram U Uᵀ when it came with the
    differences (:func:`swept`)."""

    raw: Array
    weights: Array
    norms: Norms | None
    gram: Array | None = None


def shifting(evaluate: Callable[[Array], Array]) -> Shifted:
    """The model at shifted parameters, f(θ + scale·h), from its evaluation at a batch of
    parameter rows (B, P) ↦ (B, N, O); with ``spend`` the rows are formed in the place of h."""

    def at(theta: Array, h: Array | None, scale: float = 1.0, *, spend: bool = False) -> Array:
        if h is None:
            return evaluate(theta[None, :])
        if not spend:
            return evaluate(theta + (h if scale == 1.0 else scale * h))
        if scale != 1.0:
            h *= scale
        h += theta
        return evaluate(h)

    return at


def evaluator(model: Bound, xp: Namespace, x: Array) -> tuple[Shifted, bool]:
    """The model at shifted parameters θ + scale·h (:class:`~.smoothing.Shifted`) at the
    inputs ``x``, and whether it is compiled: on JAX one compiled program per model
    (:func:`~nntk_array.backends.compile.program`; XLA fuses the shift and the layers of the
    forward pass), reused by every chunk, seed and call; elsewhere the model itself."""

    def build(owner: Callable[[], Any]) -> Callable[[Array, Array, float, Array], Array]:
        def run(theta: Array, h: Array, scale: float, x: Array) -> Array:
            return bind(owner(), xp, theta, x).evaluate(theta[None, :] + scale * h, x)

        return run

    compiled = program(("shifted",), build)
    if compiled is None:
        return shifting(lambda thetas: model.evaluate(thetas, x)), False

    def at(theta: Array, h: Array | None, scale: float = 1.0, *, spend: bool = False) -> Array:
        if h is None:  # f(θ) as θ + 0·0: the same program
            h, scale = xp.zeros((1, theta.shape[0]), dtype=theta.dtype, device=device(theta)), 0.0
        return compiled(theta, h, scale, x)

    return at, True


def chunks(
    evaluate: Shifted,
    theta: Array,
    dirs: Directions,
    form: Form,
    *,
    chunk: int,
    draw: int,
    acc: DType,
    norms: bool = False,
    keep_h: bool = True,
) -> Iterator[Chunk]:
    """Evaluate the model for all M perturbations, ``chunk`` at a time.

    Directions are drawn ``draw`` rows (whole tiles) at a time; ``norms`` asks for |u|².
    Without ``keep_h`` the chunks' ``h`` is not returned (``None``): the perturbed parameters
    are formed in its place, so a chunk needs one (B, P) array less (the kernels).
    """
    xp = dirs.xp
    base = evaluate(theta, None) if form.needs_base else None
    # whole tiles, unless the directions give any rows cheaply: then a chunk's own rows
    group = chunk if dirs.any_rows else max(draw, -(-chunk // ROW_TILE) * ROW_TILE)
    for g0 in range(0, dirs.num_rows, group):
        g1 = min(g0 + group, dirs.num_rows)
        block = form.perturb(dirs, g0, g1, norms=norms)
        for b0 in range(g0, g1, chunk):
            b1 = min(b0 + chunk, g1)
            rows = slice(b0 - g0, b1 - g0)
            h = block.h[rows, :]
            spend = not keep_h and is_writeable_array(h)
            d = form.difference(evaluate, theta, h, base, scale=block.scale, spend=spend)
            d = xp.astype(d, acc, copy=False)
            if keep_h and block.scale != 1.0:
                h = block.scale * h
            w = block.w
            if isinstance(w, float):
                w = xp.full((b1 - b0,), w, dtype=acc, device=device(d))
            else:
                w = xp.astype(w[rows], acc, copy=False)
            t = block.t if isinstance(block.t, float) else block.t[rows]
            u_sq = None if block.u_sq is None else block.u_sq[rows]
            yield Chunk(b0, b1, h if keep_h else None, t, d, w, u_sq)


def collect(parts: Iterable[Chunk], *, xp: Namespace, acc: DType, norms: bool) -> Differences:
    """The differences of all M perturbations (the chunks of :func:`chunks`) as one
    (N, O, M) array, with the weights and, if ``norms``, the squared norms."""
    raw, weights, u_sq, h_sq = [], [], [], []
    for c in parts:
        raw.append(xp.permute_dims(c.d, (1, 2, 0)))
        weights.append(c.w)
        if norms:
            assert c.u_sq is not None  # asked for
            u_sq.append(xp.astype(c.u_sq, acc, copy=False))
            h_sq.append(xp.astype(c.u_sq * (c.t * c.t), acc, copy=False))

    def cat(pieces: list[Array], axis: int = 0) -> Array:
        return pieces[0] if len(pieces) == 1 else xp.concat(pieces, axis=axis)

    return Differences(
        raw=cat(raw, axis=2),
        weights=cat(weights),
        norms=Norms(cat(u_sq), cat(h_sq)) if norms else None,
    )


def swept(
    model: Bound, theta: Array, x: Array, dirs: Directions, form: Form, *, acc: DType, block: int
) -> Differences:
    """The one-sided differences of all M perturbations θ + σu_m from one sweep of U's
    columns by the model's ``apply_by_columns`` (blocks of at most ``block`` numbers), with
    U's Gram in ``acc`` from the same blocks: each random number is drawn once.

    Raises
    ------
    ValueError
        The model's ``apply_by_columns`` left columns of U unread.
    """
    xp = dirs.xp
    assert model.apply_by_columns is not None
    assert isinstance(form, Stein)
    sweep = dirs.sweep(acc)
    m = dirs.num_rows
    base = model.evaluate(theta[None, :], x)
    out = model.apply_by_columns(theta, x, sweep, form.sigma, sets=m, block=block)
    if not sweep.done:
        raise ValueError(
            f"the model's `apply_by_columns` must read every column of the directions, up to "
            f"P = {dirs.num_params}; it stopped at {sweep.position}"
        )
    d = xp.astype(out - base, acc, copy=False)
    weights = xp.full((m,), 1.0 / form.sigma, dtype=acc, device=device(d))
    return Differences(xp.permute_dims(d, (1, 2, 0)), weights, None, sweep.gram)
