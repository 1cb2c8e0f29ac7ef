"""Kernels of Dask arrays: a lazy graph of block tasks that run the in-memory code.

Dask is an array library of its own (``array_api_compat`` wraps it), but the kernels need
whole rows of inputs and random perturbations that every block shares, so they are not
written against ``dask.array`` elementwise. Instead each task receives NumPy (or CuPy)
blocks and calls the same array-API code as an in-memory call; the perturbations are
regenerated from the seed inside every task (counter-based streams, see
:mod:`nntk_array.backends.random`), so nothing of size M x P is ever shipped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from array_api_compat import is_dask_array

from .._typing import Array

__all__ = ["is_dask", "nntk_graph", "ntk_graph"]


def is_dask(*arrays: object) -> bool:
    """Whether any argument is a Dask array (``None`` and non-arrays are not)."""
    return any(a is not None and is_dask_array(a) for a in arrays)


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
    from array_api_compat import array_namespace

    xp = array_namespace(k)
    return xp.permute_dims(k, (1, 0, 3, 2) if k.ndim == 4 else (1, 0))


def ntk_graph(
    ntk: Callable[..., Array], f: Any, theta: Any, x1: Any, x2: Any, options: dict[str, Any]
) -> Any:
    """Lazy local NTK of Dask inputs: one task per row block forms that block's per-layer
    factors (for the MLP, a few numbers per unit and input), one task per pair of blocks
    (the upper triangle when ``x2`` is None) contracts two blocks' factors."""
    from ..local_ntk import block_terms, contract_blocks, num_outputs

    dask, _ = _dask()
    theta = _concrete(theta)
    x1 = _as_rows(x1, "x1")
    x2 = None if x2 is None else _as_rows(x2, "x2")
    # Validate everything on a few rows (and learn the output shape and dtype) first.
    p1 = _proxy(x1)
    probe = ntk(f, theta, p1, None if x2 is None else _proxy(x2), **options)
    full, n_out = options["outputs"] == "full", num_outputs(f, theta, p1)
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


def _rows_task(
    f: Any, theta: Array, x: Array, targets: Array | None, options: dict[str, Any], n_all: int
) -> tuple[Array, Array | None, Any]:
    """One block of inputs: its weighted differences D ⊙ w (n, O, M), its share of the
    attention scores, and the per-sample vectors (the same in every block)."""
    from dataclasses import replace

    from ..nonlocal_ntk import attention_scores, evaluate_rows, prepare

    att = options["attention"]
    if att is not None and att.score == "loss":  # only x1 rows (with targets) carry loss
        att = None if targets is None else replace(att, targets=targets)
    run = prepare(f, theta, x, None, **{**options, "attention": att})
    diffs = evaluate_rows(run)
    score = None if att is None else attention_scores(run, diffs, num_inputs=n_all)
    vectors = replace(diffs, raw=None)
    return diffs.raw * diffs.weights, score, vectors


def _sample_weights(attention: Any, scores: list[Array | None], vectors: Any) -> Array:
    """α as one (1, M) row: uniform, or the attention of the summed block scores."""
    from array_api_compat import array_namespace, device

    xp = array_namespace(vectors.weights)
    m = vectors.weights.shape[0]
    if attention is None:
        return xp.full((1, m), 1.0 / m, dtype=vectors.weights.dtype, device=device(vectors.weights))
    parts = [s for s in scores if s is not None]
    # "distance" depends on the perturbations only: every block computed the same scores.
    total = parts[0] if attention.score == "distance" else sum(parts[1:], parts[0])
    return attention._normalize(xp, total, 1)


def _weight_task(
    f: Any, theta: Array, x: Array, options: dict[str, Any], vectors: Any | None
) -> Array:
    """The M x M (or diagonal) weight matrix W, from directions regenerated from the seed."""
    from ..nonlocal_ntk import prepare, weight_matrix

    return weight_matrix(prepare(f, theta, x, None, **{**options, "attention": None}), vectors)


def _pair_task(
    contraction: Any, a1: Array, a2: Array, alpha: Array, w: Array
) -> Array | tuple[Array, Array]:
    from array_api_compat import array_namespace

    from ..nonlocal_ntk import contract_pair

    xp = array_namespace(a1, alpha)
    al1 = xp.broadcast_to(alpha, (a1.shape[0], alpha.shape[1]))
    al2 = xp.broadcast_to(alpha, (a2.shape[0], alpha.shape[1]))
    return contract_pair(contraction, a1 * alpha[:, None, :], al1, a2 * alpha[:, None, :], al2, w)


def nntk_graph(f: Any, theta: Any, x1: Any, x2: Any, options: dict[str, Any]) -> Any:
    """Lazy nonlocal NTK of Dask inputs.

    Each block of inputs evaluates the model for all M perturbations (regenerated from the
    seed inside the task) and keeps its rows of the weighted difference matrix (n, O, M);
    the attention scores are summed over blocks; the weight matrix W is one task; each
    kernel block contracts two blocks of rows with W. Same seed, same numbers as in memory.
    """
    import secrets

    from ..nonlocal_ntk import DIAGONAL, prepare

    dask, da = _dask()
    if options["rng"] is not None:
        raise TypeError(
            "`rng` cannot be shared with Dask workers; pass an int `seed` (the workers "
            "regenerate the perturbations from it)"
        )
    att = options["attention"]
    if att is not None and callable(att.score):
        raise ValueError(
            "a callable attention score sees all inputs at once; with Dask inputs use a "
            "built-in score ('distance', 'output', 'loss') or compute the arrays first"
        )
    options = dict(options)
    samples = options["samples"]
    if hasattr(samples, "shape"):
        options["samples"] = _concrete(samples)
    elif options["seed"] is None:  # one seed for every task, drawn here
        options["seed"] = secrets.randbits(63)
    theta = _concrete(theta)
    x1 = _as_rows(x1, "x1")
    x2 = None if x2 is None else _as_rows(x2, "x2")
    targets = None if att is None or att.targets is None else att.targets
    if targets is not None:
        targets = _as_rows(targets, "attention.targets").rechunk({0: x1.chunks[0]})
    # Validate everything (shapes, dtypes, options) on a few rows before building the graph.
    p1 = _proxy(x1)
    proxy_att = att
    if targets is not None:
        from dataclasses import replace

        proxy_att = replace(att, targets=targets[: p1.shape[0], ...].compute())
    run = prepare(
        f, theta, p1, None if x2 is None else _proxy(x2), **{**options, "attention": proxy_att}
    )
    c = run.contraction
    theta = run.theta  # promoted to the common dtype: every task draws in that dtype
    if options["route"] == "stream":
        raise ValueError("Dask inputs contract through the Gram matrix; use route='auto'")

    x_all = x1 if x2 is None else da.concatenate([x1, x2], axis=0)
    n_all = x_all.shape[0]
    f_d, theta_d = dask.delayed(f), dask.delayed(theta)
    blocks = _blocks(x_all)
    t_blocks = _blocks(targets) if targets is not None else []
    rows = []
    for b, xb in enumerate(blocks):
        tb = t_blocks[b] if b < len(t_blocks) else None
        rows.append(dask.delayed(_rows_task, nout=3)(f_d, theta_d, xb, tb, options, n_all))
    alpha = dask.delayed(_sample_weights)(att, [r[1] for r in rows], rows[0][2])
    # The Gram needs only the directions, so it runs beside the row tasks, not after them.
    vectors = rows[0][2] if options["estimator"] in DIAGONAL else None
    w = dask.delayed(_weight_task)(f_d, theta_d, blocks[0], options, vectors)

    nb1 = len(x1.chunks[0])
    second = range(nb1) if x2 is None else range(nb1, len(blocks))
    nout = 2 if c.stderr else None
    tasks: dict[tuple[int, int], Any] = {}
    for i in range(nb1):
        for jj, j in enumerate(second):
            if x2 is None and j < i:
                continue
            tasks[(i, jj)] = dask.delayed(_pair_task, nout=nout)(
                c, rows[i][0], rows[j][0], alpha, w
            )
    rows2 = x1.chunks[0] if x2 is None else x2.chunks[0]
    tail = (run.n_out, run.n_out) if c.full else ()
    meta = run.xp.reshape(theta[:0], (0,) * (2 + len(tail)))
    transpose = _mirror if x2 is None else None
    if not c.stderr:
        return _assemble(tasks, x1.chunks[0], rows2, tail, meta, transpose)
    return tuple(
        _assemble({k: t[s] for k, t in tasks.items()}, x1.chunks[0], rows2, tail, meta, transpose)
        for s in (0, 1)
    )
