"""Kernels of Dask arrays: a lazy graph of block tasks that run the engine's code.

Dask is an array library of its own (``array_api_compat`` wraps it), but the kernels need
whole rows of inputs and random perturbations that every block shares, so they are not
written against ``dask.array`` elementwise. Instead each task receives NumPy (or CuPy)
blocks and calls the same engine functions as an in-memory call (:mod:`nntk_array._mc`);
the perturbations are regenerated from the seed inside every task (counter-based streams),
so nothing of size M x P is ever shipped. This module sits above the engine and below no
one: the entry points import it lazily, only for Dask inputs.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from array_api_compat import array_namespace, is_dask_array

from .._mc import kernel
from .._mc.local import block_terms, contract_blocks
from .._mc.plan import DEFAULT_BUDGET, GRAM_MATRICES, streamable
from .._typing import Array
from .._xp import resolve
from ..models.protocol import bind
from ..options import Estimate

__all__ = ["nntk_graph", "ntk_graph"]


def _dask() -> Any:
    import dask
    import dask.array as da

    return dask, da


def _as_rows(x: Any, name: str) -> Any:
    """``x`` as a Dask array chunked along its first axis only (whole rows per block)."""
    _, da = _dask()
    if not is_dask_array(x):
        x = da.from_array(x, chunks=x.shape, asarray=False)
    if x.ndim < 1:
        raise ValueError(f"`{name}` must have a leading batch axis; got shape {x.shape}")
    return x.rechunk(dict.fromkeys(range(1, x.ndim), -1))


def _concrete(x: Any) -> Any:
    """Small arguments (parameters, explicit samples) are computed on the client."""
    return x.compute() if is_dask_array(x) else x


def _proxy(x: Any, rows: int = 2) -> Any:
    """A few concrete leading rows, to validate arguments before any block runs."""
    return x[: min(rows, x.shape[0]), ...].compute()


def _blocks(x: Any) -> list[Any]:
    return list(x.to_delayed().ravel())


def _assemble(
    tasks: dict[tuple[int, int], Any],
    rows1: Sequence[int],
    rows2: Sequence[int],
    tail: tuple[int, ...],
    meta: Array,
    transpose: Callable[[Array], Array] | None,
) -> Any:
    """One lazy array from a grid of delayed blocks; with ``transpose`` only the upper
    triangle (i <= j) was computed and the rest mirrors it."""
    dask, da = _dask()
    grid = []  # not da.block: it would join the trailing (O, O) axes of outputs='full'
    for i, n_i in enumerate(rows1):
        row = []
        for j, n_j in enumerate(rows2):
            task = tasks[(i, j)] if (i, j) in tasks else dask.delayed(transpose)(tasks[(j, i)])
            row.append(da.from_delayed(task, shape=(n_i, n_j, *tail), meta=meta))
        grid.append(da.concatenate(row, axis=1))
    return da.concatenate(grid, axis=0)


def _mirror(k: Array) -> Array:
    xp = array_namespace(k)
    return xp.permute_dims(k, (1, 0, 3, 2) if k.ndim == 4 else (1, 0))


def ntk_graph(
    ntk: Callable[..., Array], f: Any, theta: Any, x1: Any, x2: Any, **options: Any
) -> Any:
    """Lazy local NTK of Dask inputs: one task per row block forms that block's per-layer
    factors (for the MLP, a few numbers per unit and input), one task per pair of blocks
    (the upper triangle when ``x2`` is None) contracts two blocks' factors."""
    dask, _ = _dask()
    theta = _concrete(theta)
    x1 = _as_rows(x1, "x1")
    x2 = None if x2 is None else _as_rows(x2, "x2")
    # Validate everything on a few rows (and learn the output shape and dtype) first.
    p1 = _proxy(x1)
    probe = ntk(f, theta, p1, None if x2 is None else _proxy(x2), **options)
    xp, (theta_c, p1) = resolve(theta=theta, x1=p1)
    n_out = bind(f, xp, theta_c, p1).num_outputs
    full = options["outputs"] == "full"
    f_d, theta_d = dask.delayed(f), dask.delayed(theta)
    t1 = [dask.delayed(block_terms)(f_d, theta_d, xb) for xb in _blocks(x1)]
    t2 = t1 if x2 is None else [dask.delayed(block_terms)(f_d, theta_d, xb) for xb in _blocks(x2)]
    tasks = {}
    for i, ti in enumerate(t1):
        for j, tj in enumerate(t2):
            if x2 is None and j < i:
                continue
            tasks[(i, j)] = dask.delayed(contract_blocks)(ti, tj, n_out=n_out, full=full)
    rows2 = x1.chunks[0] if x2 is None else x2.chunks[0]
    transpose = _mirror if x2 is None else None
    return _assemble(tasks, x1.chunks[0], rows2, tuple(probe.shape[2:]), probe[:0, :0], transpose)


def _problem(f: Any, theta: Array, x: Array, spec: kernel.KernelSpec) -> kernel.Problem:
    """The problem a task runs, on its block of inputs. The attention (validated on the
    client) is applied by the tasks themselves: a block's position in the concatenated
    inputs says which of its rows are reference rows."""
    return kernel.setup(f, theta, x, None, replace(spec, attention=None))


def _rows_task(
    f: Any,
    theta: Array,
    x: Array,
    targets: Array | None,
    spec: kernel.KernelSpec,
    ref: tuple[int, int],
    num_ref: int,
) -> tuple[Array, Array | None, Any]:
    """One block of inputs: its weighted differences D ⊙ w (n, O, M), its share of the
    attention scores (its rows ``ref`` are reference inputs), and the differences record
    without the differences (the per-sample vectors, the same in every block)."""
    problem, att = _problem(f, theta, x, spec), spec.attention
    diffs = kernel.rows(problem, x, attention=att is not None)
    score = None
    if att is not None:
        score = kernel.scores(problem, att, diffs, x, slice(*ref), num_ref, targets)
    return diffs.raw * diffs.weights, score, replace(diffs, raw=diffs.raw[:0, ...])


def _sample_weights(
    f: Any, theta: Array, x: Array, spec: kernel.KernelSpec, scores: list[Array | None]
) -> Array:
    """α as one (1, M) row: uniform, or the attention of the summed block scores."""
    problem = _problem(f, theta, x, spec)
    parts = [s for s in scores if s is not None]
    total = None
    if parts:  # "distance" depends on the perturbations only: every block has the same
        total = parts[0] if spec.attention.score == "distance" else sum(parts[1:], parts[0])
    return kernel.sample_weights(problem, spec.attention, total, 1)


def _weight_task(f: Any, theta: Array, x: Array, spec: kernel.KernelSpec, diffs: Any) -> Array:
    """The M x M (or diagonal) weight matrix W, from directions regenerated from the seed."""
    return kernel.weight_matrix(_problem(f, theta, x, spec), diffs)


def _pair_task(
    c: kernel.Contraction, a1: Array, a2: Array, alpha: Array, w: Array
) -> Array | tuple[Array, Array]:
    xp = array_namespace(a1, alpha)
    al1 = xp.broadcast_to(alpha, (a1.shape[0], alpha.shape[1]))
    al2 = xp.broadcast_to(alpha, (a2.shape[0], alpha.shape[1]))
    return kernel.contract(c, a1 * alpha[:, None, :], al1, a2 * alpha[:, None, :], al2, w)


def _stream_pair_task(
    f: Any,
    theta: Array,
    x: Array,
    spec: kernel.KernelSpec,
    c: kernel.Contraction,
    a1: Array,
    a2: Array,
    alpha: Array,
    symmetric: bool,
) -> Array | tuple[Array, Array]:
    """A kernel block on the stream route: memory independent of M beyond the differences."""
    problem = _problem(f, theta, x, spec)
    xp = array_namespace(a1, alpha)
    al1 = xp.broadcast_to(alpha, (a1.shape[0], alpha.shape[1]))
    al2 = xp.broadcast_to(alpha, (a2.shape[0], alpha.shape[1]))
    return kernel.stream(
        problem, c, a1 * alpha[:, None, :], al1, a2 * alpha[:, None, :], al2, symmetric=symmetric
    )


def _streams(spec: kernel.KernelSpec) -> bool:
    """Whether the graph takes the stream route: asked for, or the Gram's M x M matrices
    would exceed the memory budget where streaming is possible (else the plan's error)."""
    if spec.resources.route != "auto":
        return bool(spec.resources.route == "stream")
    est, samples = spec.estimator, spec.samples
    explicit = not isinstance(samples, int)
    m = samples if isinstance(samples, int) else samples.shape[0]
    gram = GRAM_MATRICES * m * m * 8  # float64 accumulation: the larger case
    budget = spec.resources.memory_budget or DEFAULT_BUDGET
    return streamable(est.name, est.sampling, explicit=explicit) and gram > budget


def nntk_graph(f: Any, theta: Any, x1: Any, x2: Any, spec: kernel.KernelSpec) -> Any:
    """Lazy nonlocal NTK of Dask inputs.

    Each block of inputs evaluates the model for all M perturbations (regenerated from the
    seed inside the task) and keeps its rows of the weighted difference matrix (n, O, M);
    the attention scores are summed over the blocks of reference inputs; the weight matrix
    W is one task; each kernel block contracts two blocks of rows with W. Same seed, same
    numbers as in memory.
    """
    dask, da = _dask()
    if spec.seed is not None and not isinstance(spec.seed, int):
        raise TypeError(
            "a native generator cannot be shared with Dask workers; pass an int `seed` (the "
            "workers regenerate the perturbations from it)"
        )
    att = spec.attention
    if att is not None and callable(att.score):
        raise ValueError(
            "a callable attention score sees all inputs at once; with Dask inputs use a "
            "built-in score ('distance', 'output', 'loss') or compute the arrays first"
        )
    if not isinstance(spec.samples, int):
        spec = replace(spec, samples=_concrete(spec.samples))
    elif spec.seed is None:  # one seed for every task, drawn here
        spec = replace(spec, seed=secrets.randbits(63))
    # One route for every task, chosen here for the whole M (a task's plan would pick it
    # from its block's size): the Gram unless its M x M matrices exceed the budget.
    route = "stream" if _streams(spec) else "gram"
    spec = replace(spec, resources=replace(spec.resources, route=route))
    theta = _concrete(theta)
    x1 = _as_rows(x1, "x1")
    x2 = None if x2 is None else _as_rows(x2, "x2")
    ref_x = None if att is None else att.reference
    ref_x = None if ref_x is None else _as_rows(ref_x, "attention.reference")
    targets = (
        None if att is None or att.targets is None else _as_rows(att.targets, "attention.targets")
    )
    # Validate everything (shapes, dtypes, options) on a few rows before building the graph.
    proxy_att = att
    if att is not None:
        proxy_att = replace(
            att,
            reference=None if ref_x is None else _proxy(ref_x),
            targets=None if targets is None else _proxy(targets),
        )
    p1 = _proxy(x1)
    problem = kernel.setup(
        f, theta, p1, None if x2 is None else _proxy(x2), replace(spec, attention=proxy_att)
    )
    theta = problem.theta  # promoted to the common dtype: every task draws in that dtype

    pieces = [x1] + ([] if x2 is None else [x2]) + ([] if ref_x is None else [ref_x])
    x_all = pieces[0] if len(pieces) == 1 else da.concatenate(pieces, axis=0)
    n1 = x1.shape[0]
    n_rows = n1 + (0 if x2 is None else x2.shape[0])
    ref_lo, ref_hi = (n_rows, x_all.shape[0]) if ref_x is not None else (0, n1)
    if targets is not None:  # align the targets' blocks with the reference blocks
        starts = [0, *_cumsum(x_all.chunks[0])]
        ref_chunks = tuple(
            min(e, ref_hi) - max(s, ref_lo)
            for s, e in itertools.pairwise(starts)
            if s < ref_hi and e > ref_lo
        )
        targets = targets.rechunk({0: ref_chunks})
    f_d, theta_d = dask.delayed(f), dask.delayed(theta)
    blocks = _blocks(x_all)
    t_blocks = iter(_blocks(targets)) if targets is not None else None
    row_tasks = []
    start = 0
    for xb, size in zip(blocks, x_all.chunks[0], strict=True):
        lo, hi = max(ref_lo, start), min(ref_hi, start + size)
        ref = (lo - start, hi - start) if lo < hi else (0, 0)
        tb = next(t_blocks) if t_blocks is not None and lo < hi else None
        row_tasks.append(
            dask.delayed(_rows_task, nout=3)(f_d, theta_d, xb, tb, spec, ref, ref_hi - ref_lo)
        )
        start += size
    first = blocks[0]
    alpha = dask.delayed(_sample_weights)(f_d, theta_d, first, spec, [r[1] for r in row_tasks])
    # The Gram needs only the directions, so it runs beside the row tasks, not after them.
    diffs = row_tasks[0][2] if problem.est.diagonal else None
    w = None if route == "stream" else dask.delayed(_weight_task)(f_d, theta_d, first, spec, diffs)

    nb1 = len(x1.chunks[0])
    nb2 = 0 if x2 is None else len(x2.chunks[0])
    second = range(nb1) if x2 is None else range(nb1, nb1 + nb2)
    nout = 2 if spec.stderr else None
    c = kernel.contraction(problem)
    tasks: dict[tuple[int, int], Any] = {}
    for i in range(nb1):
        for jj, j in enumerate(second):
            if x2 is None and j < i:
                continue
            a1, a2 = row_tasks[i][0], row_tasks[j][0]
            if w is None:  # regenerates the directions in column tiles, as in memory
                tasks[(i, jj)] = dask.delayed(_stream_pair_task, nout=nout)(
                    f_d, theta_d, first, spec, c, a1, a2, alpha, i == j and x2 is None
                )
            else:
                tasks[(i, jj)] = dask.delayed(_pair_task, nout=nout)(c, a1, a2, alpha, w)
    rows2 = x1.chunks[0] if x2 is None else x2.chunks[0]
    n_out = problem.model.num_outputs
    tail = (n_out, n_out) if spec.full else ()
    meta = problem.xp.reshape(theta[:0], (0,) * (2 + len(tail)))
    transpose = _mirror if x2 is None else None
    if not spec.stderr:
        return _assemble(tasks, x1.chunks[0], rows2, tail, meta, transpose)
    kern, se = (
        _assemble({k: t[s] for k, t in tasks.items()}, x1.chunks[0], rows2, tail, meta, transpose)
        for s in (0, 1)
    )
    return Estimate(kern, se, samples=problem.dirs.num_rows)


def _cumsum(sizes: Sequence[int]) -> list[int]:
    out, total = [], 0
    for s in sizes:
        total += s
        out.append(total)
    return out
