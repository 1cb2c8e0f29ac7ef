"""The exact local neural tangent kernel Θ(x, x') = J(x) J(x')ᵀ."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial

from array_api_compat import array_namespace, device

from ._typing import Array, Namespace
from ._validate import check_choice, check_finite, check_ndim, check_positive_int
from ._xp import resolve
from .backends.autodiff import jacobian
from .backends.dask import is_dask
from .models import MLP, NTKTerm

__all__ = ["ntk"]

OUTPUTS = ("mean", "full")
_BLOCK_BUDGET_BYTES = 256 * 2**20
_MAX_BLOCK = 4096
# Symmetric kernels (x2=None) are split into up to 4 row blocks of at least 256 rows: the
# mirrored lower blocks save contraction flops while the block products stay large enough
# to run at full matmul speed.
_SYMMETRIC_BLOCKS = 4
_MIN_SYMMETRIC_BLOCK = 256

Model = Callable[[Array, Array], Array]


def ntk(
    f: MLP | Model,
    theta: Array,
    x1: Array,
    x2: Array | None = None,
    *,
    outputs: str = "mean",
    batch_size: int | None = None,
) -> Array:
    """Exact local NTK Θ(x, x') = Σ_p ∂f(x)/∂θ_p ∂f(x')/∂θ_p at ``theta``.

    For the built-in :class:`MLP` the per-layer structured contraction is used, in pure
    array-API code: any backend (NumPy, array-api-strict, CuPy, torch, JAX), no autodiff and
    no (N, P) Jacobian. For any other callable the Jacobian comes from ``torch.func`` or
    ``jax`` autodiff, one input block at a time.

    Parameters
    ----------
    f : MLP or callable
        A model ``f(theta, x)`` mapping parameters of shape (B, P) and inputs of shape
        (N, ...) to outputs of shape (B, N) or (B, N, O).
    theta : array, shape (P,)
        Parameters at which the kernel is taken.
    x1 : array, shape (N1, ...)
    x2 : array, shape (N2, ...), optional
        Defaults to ``x1``; the symmetric kernel is then computed once per block pair.
    outputs : {"mean", "full"}, default "mean"
        ``"mean"`` averages the kernel over the O outputs (neural-tangents'
        ``trace_axes=(-1,)``); ``"full"`` returns every output pair.
    batch_size : int, optional
        Inputs per block. By default blocks are sized so the temporaries of one block pair
        stay near 256 MiB; the result is the same for any block size.

    Returns
    -------
    array, shape (N1, N2), or (N1, N2, O, O) for ``outputs="full"``
        In the inputs' (common) floating dtype, namespace and device.

    Raises
    ------
    TypeError
        Mixed array libraries; integer, boolean or complex inputs; a user callable on a
        library without autodiff (NumPy, CuPy, array-api-strict).
    ValueError
        Wrong shapes, mixed devices, NaN/inf inputs, bad ``outputs`` or ``batch_size``.

    Notes
    -----
    Dask arrays ``x1``/``x2`` (NumPy or CuPy chunks) give a lazy Dask kernel, one task per
    pair of row blocks (the upper triangle when ``x2`` is None); each task is this function
    on the blocks, so the numbers equal the in-memory call's.

    Examples
    --------
    >>> import numpy as np
    >>> import nntk_array as nk
    >>> model = nk.MLP(1, (64,), activation="relu")
    >>> theta = model.init(0, xp=np)
    >>> x = np.linspace(-1.0, 1.0, 5)[:, None]
    >>> K = nk.ntk(model, theta, x)
    >>> K.shape, bool(np.allclose(K, K.T))
    ((5, 5), True)
    """
    if is_dask(theta, x1, x2):
        from .backends.dask import ntk_graph

        return ntk_graph(ntk, f, theta, x1, x2, {"outputs": outputs, "batch_size": batch_size})
    xp, (theta, x1, x2) = resolve(theta=theta, x1=x1, x2=x2)
    check_choice("outputs", outputs, OUTPUTS)
    if batch_size is not None:
        batch_size = check_positive_int("batch_size", batch_size)
    features, n_out, per_input = _model_terms(f, xp, theta, x1, x2)
    check_finite(xp, theta=theta, x1=x1, x2=x2)

    full = outputs == "full"
    itemsize = 4 if x1.dtype == xp.float32 else 8
    if batch_size is None:
        pair = (n_out * n_out if full else 1) * 4 * itemsize
        batch_size = max(
            1,
            min(
                _MAX_BLOCK,
                math.isqrt(_BLOCK_BUDGET_BYTES // pair),
                _BLOCK_BUDGET_BYTES // (per_input * itemsize),
            ),
        )
        if x2 is None:  # only the upper block triangle is computed: 10/16 of it at 4 blocks
            quarter = -(-x1.shape[0] // _SYMMETRIC_BLOCKS)
            batch_size = min(batch_size, max(_MIN_SYMMETRIC_BLOCK, quarter))
    contract = partial(_contract, xp, n_out=n_out, full=full)
    n_total = x1.shape[0] + (0 if x2 is None else x2.shape[0])
    cache = n_total * per_input * itemsize <= _BLOCK_BUDGET_BYTES
    return _blockwise(xp, features, contract, x1, x2, batch_size, cache=cache)


def _model_terms(
    f: MLP | Model, xp: Namespace, theta: Array, x1: Array, x2: Array | None
) -> tuple[Callable[[Array], list[NTKTerm]], int, int]:
    """Validate the model and inputs; (features of a block of inputs, O, numbers per input)."""
    if isinstance(f, MLP):
        f.check_theta(theta, batched=False)
        f.check_x("x1", x1)
        if x2 is not None:
            f.check_x("x2", x2)
        n_out = f.out_features
        features: Callable[[Array], list[NTKTerm]] = partial(f.ntk_terms, xp, theta)
        per_input = _mlp_features_per_input(f)
    elif callable(f):
        check_ndim("theta", theta, (1,), "(P,)")
        check_ndim("x1", x1, tuple(range(1, 33)), "(N1, ...)")
        if x2 is not None and tuple(x2.shape[1:]) != tuple(x1.shape[1:]):
            raise ValueError(
                f"`x2` must have shape (N2, {', '.join(map(str, x1.shape[1:]))}) to match "
                f"`x1`; got shape {tuple(x2.shape)}"
            )
        probe = _outputs(f, theta, x1[:1, ...])
        n_out = probe.shape[1]
        features = partial(_jacobian_terms, xp, f, theta)
        per_input = n_out * theta.shape[0]
    else:
        raise TypeError(f"`f` must be an nk.MLP or a callable f(theta, x); got {type(f).__name__}")
    return features, n_out, per_input


def block_terms(f: MLP | Model, theta: Array, x: Array) -> list[NTKTerm]:
    """The per-layer NTK factors of one block of inputs (a task of the Dask graph)."""
    xp, (theta, x) = resolve(theta=theta, x=x)
    return _model_terms(f, xp, theta, x, None)[0](x)


def num_outputs(f: MLP | Model, theta: Array, x: Array) -> int:
    """The number O of model outputs for inputs like ``x``."""
    xp, (theta, x) = resolve(theta=theta, x=x)
    return _model_terms(f, xp, theta, x, None)[1]


def contract_blocks(ti: list[NTKTerm], tj: list[NTKTerm], *, n_out: int, full: bool) -> Array:
    """One kernel block from two blocks' factors (a task of the Dask graph)."""
    first = ti[0].a if ti[0].a is not None else ti[0].delta
    return _contract(array_namespace(first), ti, tj, n_out=n_out, full=full)


def _mlp_features_per_input(model: MLP) -> int:
    """Numbers stored per input by `MLP.ntk_terms`: layer inputs, then O sensitivities per unit."""
    widths = (model.in_features, *model.hidden)
    return sum(widths) + model.out_features * sum(model.hidden)


def _outputs(f: Model, theta: Array, x: Array) -> Array:
    """``f`` at one parameter vector, as (N, O)."""
    out = f(theta[None, :], x)
    if out.ndim not in (2, 3) or out.shape[0] != 1 or out.shape[1] != x.shape[0]:
        raise ValueError(
            f"`f(theta[None, :], x)` must return shape (1, N) or (1, N, O) with N = "
            f"{x.shape[0]}; got shape {tuple(out.shape)}"
        )
    return out[0, ...] if out.ndim == 3 else out[0, ...][:, None]


def _jacobian_terms(xp: Namespace, f: Model, theta: Array, x: Array) -> list[NTKTerm]:
    jac = jacobian(lambda t: _outputs(f, t, x), theta, xp=xp)  # (N, O, P)
    return [NTKTerm(None, 0.0, jac)]


def _contract(
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
            gram = xp.matmul(p.a, xp.permute_dims(q.a, (1, 0)))
            if p.bias_sq:
                gram = gram + p.bias_sq
            if full:
                gram = gram[:, :, None, None]
            term = gram if sens is None else gram * sens
        total = term if total is None else total + term
    return total


def _sensitivity_gram(xp: Namespace, di: Array, dj: Array, *, n_out: int, full: bool) -> Array:
    """Σ_k δ_i[o, k] δ_j[o', k]: all output pairs (``full``) or the mean over o = o'."""
    ni, nj = di.shape[0], dj.shape[0]
    rows = (ni * n_out, -1) if full else (ni, -1)
    cols = (nj * n_out, -1) if full else (nj, -1)
    d = xp.matmul(xp.reshape(di, rows), xp.permute_dims(xp.reshape(dj, cols), (1, 0)))
    if full:
        return xp.permute_dims(xp.reshape(d, (ni, n_out, nj, n_out)), (0, 2, 1, 3))
    return d / n_out if n_out > 1 else d


def _blockwise(
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
