"""The exact local NTK in blocks: per-block factors from the model, contracted pairwise.

A model's :meth:`ntk_terms` (structured per-layer factors, or one Jacobian term from
autodiff) are computed per block of inputs; each kernel block is Σ over terms of
(a a'ᵀ + c) ⊙ (δ·δ'). The in-memory :func:`nntk_array.ntk` assembles all blocks; the Dask
graph runs :func:`block_terms` and :func:`contract_blocks` as tasks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from array_api_compat import array_namespace, device

from .._typing import Array, Namespace
from .._xp import resolve
from ..models.protocol import NTKTerm, bind

__all__ = ["block_terms", "blockwise", "contract", "contract_blocks"]


def block_terms(f: Any, theta: Array, x: Array) -> list[NTKTerm]:
    """The NTK factors of one block of inputs (a task of the Dask graph)."""
    xp, (theta, x) = resolve(theta=theta, x=x)
    return bind(f, xp, theta, x).ntk_terms(xp, theta, x)


def contract_blocks(ti: list[NTKTerm], tj: list[NTKTerm], *, n_out: int, full: bool) -> Array:
    """One kernel block from two blocks' factors (a task of the Dask graph)."""
    first = ti[0].a if ti[0].a is not None else ti[0].delta
    return contract(array_namespace(first), ti, tj, n_out=n_out, full=full)


def contract(
    xp: Namespace, ti: list[NTKTerm], tj: list[NTKTerm], *, n_out: int, full: bool
) -> Array:
    """Σ over terms of (a a'ᵀ + c) ⊙ (δ·δ'), for one block pair."""
    total = None
    for p, q in zip(ti, tj, strict=True):
        if p.delta is not None and q.delta is not None:
            sens = _sensitivity_gram(xp, p.delta, q.delta, n_out=n_out, full=full)
        elif full and p.a is not None:  # output layer: δ is the identity
            sens = xp.eye(n_out, dtype=p.a.dtype, device=device(p.a))
        else:
            sens = None
        if p.a is None:
            term = sens
        else:
            gram = _inner(xp, p.a, q.a)
            if p.bias_sq:
                gram = gram + p.bias_sq
            if full:
                gram = gram[:, :, None, None]
            term = gram if sens is None else gram * sens
        total = term if total is None else total + term
    return total


def _inner(xp: Namespace, a: Array, b: Array) -> Array:
    """a bᵀ for (n, k) and (m, k): ``tensordot`` over k, which eager JAX runs as one
    ``dot_general`` (``matmul`` with a transposed operand first copies it: 1.5x slower for a
    256 × 50,500 Jacobian)."""
    return xp.tensordot(a, b, axes=((1,), (1,)))


def _sensitivity_gram(xp: Namespace, di: Array, dj: Array, *, n_out: int, full: bool) -> Array:
    """Σ_k δ_i[o, k] δ_j[o', k]: all output pairs (``full``) or the mean over o = o'."""
    ni, nj = di.shape[0], dj.shape[0]
    rows = (ni * n_out, -1) if full else (ni, -1)
    cols = (nj * n_out, -1) if full else (nj, -1)
    d = _inner(xp, xp.reshape(di, rows), xp.reshape(dj, cols))
    if full:
        return xp.permute_dims(xp.reshape(d, (ni, n_out, nj, n_out)), (0, 2, 1, 3))
    return d / n_out if n_out > 1 else d


def blockwise(
    xp: Namespace,
    features: Callable[[Array], list[NTKTerm]],
    contract: Callable[[list[NTKTerm], list[NTKTerm]], Array],
    x1: Array,
    x2: Array | None,
    batch_size: int,
    *,
    cache: bool,
) -> Array:
    """Assemble the kernel from block pairs; for ``x2=None`` only the upper blocks.

    With ``cache`` the features of every block are kept (cheap for the MLP); otherwise the
    column blocks' features are recomputed per row block, so memory holds two blocks'.
    """

    def blocks(x: Array) -> list[Array]:
        n = x.shape[0]  # the standard leaves out-of-bounds slice stops unspecified
        return [x[s : min(s + batch_size, n), ...] for s in range(0, n, batch_size)]

    def lazy(xs: list[Array]) -> Callable[[int], list[NTKTerm]]:
        if not cache:
            return lambda i: features(xs[i])
        computed = [features(x) for x in xs]
        return computed.__getitem__

    b1 = blocks(x1)
    feat1 = lazy(b1)
    if x2 is not None:
        b2 = blocks(x2)
        feat2 = lazy(b2)
        return _assemble(
            xp, [[contract(feat1(i), feat2(j)) for j in range(len(b2))] for i in range(len(b1))]
        )
    rows: list[list[Array]] = [[] for _ in b1]
    for i in range(len(b1)):
        fi = feat1(i)
        for j in range(i, len(b1)):
            block = contract(fi, fi if j == i else feat1(j))
            rows[i].append(block)
            if j != i:
                rows[j].append(xp.permute_dims(block, (1, 0, 3, 2) if block.ndim == 4 else (1, 0)))
    return _assemble(xp, rows)


def _assemble(xp: Namespace, rows: Sequence[Sequence[Array]]) -> Array:
    if len(rows) == 1 and len(rows[0]) == 1:
        return rows[0][0]
    return xp.concat([xp.concat(list(r), axis=1) for r in rows], axis=0)
