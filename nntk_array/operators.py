"""Matrix-free kernels for large N: kernel operators, the local NTK as one, NNTK root factors.

A *kernel operator* is any object with

``shape``
    ``(N1, N2)``;
``dtype`` and ``device``
    those of the arrays it returns;
``matmul(v)``
    K v for ``v`` of shape (N2, j) in the operator's library, returning (N1, j);

and optionally ``diagonal()``, the (N,) diagonal of a square kernel (what
:func:`nntk_array.kernel_regression` reads to scale its ridge by tr(K)/N). Nothing else is
asked: :func:`nntk_array.kernel_regression` solves with one by conjugate gradients, and
spectra can be taken from its products. Two are built in: the exact local NTK of a model
(:func:`ntk_operator`, products in O(N·P) time without any N × N array) and a low-rank
kernel R₁ R₂ᵀ (:class:`LowRankOperator`), for instance of the root factors of an NNTK
estimate (:func:`nntk_features`), which ridge regression solves by the Woodbury identity.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from typing import Any, Protocol, runtime_checkable

from array_api_compat import device as array_device
from array_api_compat import is_writeable_array

from ._mc import kernel, roots
from ._mc.plan import DEFAULT_BUDGET, NTK_BLOCK_BYTES, ntk_blocks, ntk_temporaries
from ._typing import Array, Device, DType, Namespace
from ._validate import check_finite, check_ndim
from ._xp import resolve
from .backends.autodiff import has_autodiff
from .models.protocol import Bound, Model, NTKTerm, bind
from .options import (
    Estimator,
    Resources,
    Smoothing,
    check_seed,
    estimator_spec,
    resources_spec,
    sample_count,
    smoothing_spec,
)

__all__ = ["KernelOperator", "LowRankOperator", "NTKOperator", "nntk_features", "ntk_operator"]

ModelFn = Callable[[Array, Array], Array]
#: one NTK term's share of Jᵀv: the weight (or Jacobian) part and the bias part
Pulled = tuple[Array | None, Array | None]

#: kept factors take at most 1/KEEP_SHARE of the budget: the rest is the solver's workspace
#: (:func:`nntk_array.kernel_regression`'s Nyström sketch takes the other half), so an
#: operator and the solve on it stay within one budget together
KEEP_SHARE = 2
#: an NTK product's per-tile temporaries (the sensitivities times the vectors, and their
#: product with the pulled-back weights) take at most a sixteenth of the budget
PRODUCT_SHARE = 16
PRODUCT_COPIES = 2
#: a product tile's temporaries stay about this size (in cache); tiles have at least
#: MIN_TILE_ROWS rows so the per-tile Python overhead stays small
TILE_BYTES = 2**20
MIN_TILE_ROWS = 64
#: a product with many vectors takes them this many at a time within each tile: per column
#: a single vector's tile is fastest (0.015 s against 0.025 s at 4 and 16 columns, N = 10,000)
PRODUCT_COLUMNS = 1
#: structured factors are formed (and kept) this many inputs at a time: the model's forward
#: and backward pass over a block this size stays in cache (5x faster than 2,000 at P = 769)
STRUCTURED_BLOCK = 512


@runtime_checkable
class KernelOperator(Protocol):
    """A kernel K of shape (N1, N2) known through its products K v.

    Examples
    --------
    >>> import numpy as np
    >>> import nntk_array as nk
    >>> isinstance(nk.LowRankOperator(np.ones((3, 2))), nk.KernelOperator)
    True
    """

    @property
    def shape(self) -> tuple[int, int]:
        """(N1, N2)."""

    @property
    def dtype(self) -> DType:
        """The dtype of the products."""

    @property
    def device(self) -> Device:
        """The device of the products."""

    def matmul(self, v: Array) -> Array:
        """K v for ``v`` of shape (N2, j), in the operator's library: shape (N1, j)."""


def _vectors(xp: Namespace, v: Array, n: int, dtype: DType, where: Device) -> tuple[Array, bool]:
    """``v`` as an (n, j) array of ``dtype`` (and whether it was 1-D), checked."""
    vxp, (v,) = resolve(v=v)
    if vxp is not xp and vxp.__name__ != xp.__name__:
        raise TypeError(f"`v` must be an array of the operator's library {xp.__name__}")
    if array_device(v) != where:
        raise ValueError(f"`v` must be on the operator's device {where}; got {array_device(v)}")
    check_ndim("v", v, (1, 2), f"({n},) or ({n}, j)")
    if v.shape[0] != n:
        raise ValueError(f"`v` must have {n} rows; got shape {tuple(v.shape)}")
    flat = v.ndim == 1
    return xp.astype(v[:, None] if flat else v, dtype, copy=False), flat


class LowRankOperator:
    """The kernel K = L Rᵀ of two factors (N1, r) and (N2, r); K = L Lᵀ without ``right``.

    Products cost O((N1 + N2)·r·j) and hold only (r, j) besides the factors; nothing of size
    N1 × N2 is formed. :func:`nntk_array.kernel_regression` solves with a symmetric one
    (``right`` omitted) through the r × r matrix LᵀL (Woodbury), and takes L* Lᵀ for the
    test kernel.

    Parameters
    ----------
    left : array, shape (N1, r)
    right : array, shape (N2, r), optional
        Defaults to ``left`` (a symmetric positive semidefinite kernel).

    Raises
    ------
    TypeError
        Non-arrays, mixed libraries, non-floating dtypes.
    ValueError
        Factors that are not 2-D or differ in r, mixed devices, NaN/inf.

    Examples
    --------
    >>> import numpy as np
    >>> import nntk_array as nk
    >>> r = np.arange(6.0).reshape(3, 2)
    >>> k = nk.LowRankOperator(r)
    >>> k.shape, bool(np.allclose(k.matmul(np.eye(3)), r @ r.T))
    ((3, 3), True)
    >>> k.diagonal()
    array([ 1., 13., 41.])
    """

    def __init__(self, left: Array, right: Array | None = None) -> None:
        xp, (left, other) = resolve(left=left, right=right)
        check_ndim("left", left, (2,), "(N1, r)")
        if other is not None:
            check_ndim("right", other, (2,), f"(N2, {left.shape[1]})")
            if other.shape[1] != left.shape[1]:
                raise ValueError(
                    f"`right` must have shape (N2, {left.shape[1]}) to match `left`; "
                    f"got {tuple(other.shape)}"
                )
        check_finite(xp, left=left, right=other)
        self.xp = xp
        self.left = left
        self.right = left if other is None else other
        self.symmetric = other is None

    @property
    def shape(self) -> tuple[int, int]:
        """(N1, N2)."""
        return (self.left.shape[0], self.right.shape[0])

    @property
    def rank(self) -> int:
        """r, the factors' number of columns (an upper bound on the rank)."""
        return int(self.left.shape[1])

    @property
    def dtype(self) -> DType:
        """The factors' (common) dtype."""
        return self.left.dtype

    @property
    def device(self) -> Device:
        """The factors' device."""
        return array_device(self.left)

    def matmul(self, v: Array) -> Array:
        """K v = L (Rᵀ v) for ``v`` of shape (N2, j) or (N2,); shape (N1, j) or (N1,)."""
        xp = self.xp
        v, flat = _vectors(xp, v, self.shape[1], self.dtype, self.device)
        out = xp.matmul(self.left, xp.matmul(xp.permute_dims(self.right, (1, 0)), v))
        return out[:, 0] if flat else out

    def diagonal(self) -> Array:
        """The diagonal Σ_k L_ik R_ik of a square kernel, shape (N,): O(N·r).

        Raises
        ------
        ValueError
            The kernel is not square.
        """
        if self.shape[0] != self.shape[1]:
            raise ValueError(f"a diagonal needs a square kernel; this one is {self.shape}")
        return self.xp.sum(self.left * self.right, axis=1)


class NTKOperator:
    """The exact local NTK Θ(x1, x2) of a model as a kernel operator (see
    :func:`ntk_operator`)."""

    def __init__(
        self,
        model: Bound,
        xp: Namespace,
        theta: Array,
        x1: Array,
        x2: Array | None,
        *,
        block: int,
        room: int,
        budget: int,
    ) -> None:
        self.model, self.xp, self.theta = model, xp, theta
        self.x1, self.x2 = x1, x2
        self.block, self.budget = block, budget
        #: bytes of factors that may be kept between products; blocks beyond are recomputed
        self.room = room
        self._kept: dict[int, list[list[NTKTerm]]] = {}
        self._kept_bytes = 0
        #: passes over each input set: factors are kept from the second on, so an operator
        #: used once (a test kernel's single product) keeps nothing
        self._passes: dict[int, int] = {}

    @property
    def shape(self) -> tuple[int, int]:
        """(N1, N2)."""
        n1 = self.x1.shape[0]
        return (n1, n1 if self.x2 is None else self.x2.shape[0])

    @property
    def dtype(self) -> DType:
        """``theta``'s dtype."""
        return self.theta.dtype

    @property
    def device(self) -> Device:
        """``theta``'s device."""
        return array_device(self.theta)

    @property
    def kept_blocks(self) -> int:
        """Blocks of inputs whose factors are kept between products (the rest are recomputed
        per product)."""
        return sum(len(v) for v in self._kept.values())

    def _blocks(self, which: int) -> Iterator[list[NTKTerm]]:
        """The NTK factors of each block of inputs of x1 (``which`` 1) or x2 (2): from the
        second pass over them on, the first blocks' kept (in order, while they fit in
        ``room``), the others recomputed."""
        x = self.x1 if which == 1 or self.x2 is None else self.x2
        key = 1 if x is self.x1 else 2
        kept = self._kept.setdefault(key, [])
        keep = self._passes.get(key, 0) > 0
        self._passes[key] = self._passes.get(key, 0) + 1
        n = x.shape[0]
        for i, s in enumerate(range(0, n, self.block)):
            if i < len(kept):
                yield kept[i]
                continue
            terms = self.model.ntk_terms(self.xp, self.theta, x[s : min(s + self.block, n), ...])
            if keep and i == len(kept):
                size = _term_bytes(self.xp, terms)
                if self._kept_bytes + size <= self.room:
                    kept.append(terms)
                    self._kept_bytes += size
            yield terms

    def _rows(self, terms: list[NTKTerm], j: int) -> int:
        """Rows per tile of a block: the tile's product temporaries (O × widest × j numbers
        per row, twice) in about ``TILE_BYTES`` so they stay in cache, at least
        ``MIN_TILE_ROWS`` (Python overhead), at most a sixteenth of the budget."""
        widest = max((1, *(_width(t) for t in terms)))
        size = 4 if self.dtype == self.xp.float32 else 8
        per_row = PRODUCT_COPIES * size * self.model.num_outputs * widest * j
        rows = max(MIN_TILE_ROWS, TILE_BYTES // per_row)
        return max(1, min(rows, (self.budget // PRODUCT_SHARE) // per_row))

    def matmul(self, v: Array) -> Array:
        """K v = J(x1) (J(x2)ᵀ v) averaged over outputs, for ``v`` of shape (N2, j) or (N2,).

        Two passes over tiles of inputs, 2-D matrix products only: the pull-back Jᵀv per layer
        (the backpropagated weight gradient aᵀ (δ ⊙ v), O·P·j numbers in all), then its
        push-forward, the row sums of (a Jᵀv) ⊙ δ. Many vectors are taken
        :data:`PRODUCT_COLUMNS` at a time within each tile (the factors are formed once per
        product, the tiles stay large). O(N·P·O·j) time; memory O(O·P·j) plus the kept
        factors, one block's recomputed ones and one tile's products.
        """
        xp = self.xp
        v, flat = _vectors(xp, v, self.shape[1], self.dtype, self.device)
        j = v.shape[1]
        cols = [(c, min(c + PRODUCT_COLUMNS, j)) for c in range(0, j, PRODUCT_COLUMNS)]
        width = cols[0][1] - cols[0][0]
        pulled: list[list[Pulled] | None] = [None] * len(cols)
        start = 0
        for terms in self._blocks(2):
            step = self._rows(terms, width)
            n = _term_rows(terms[0])
            for s in range(0, n, step):
                e = min(s + step, n)
                tile = [_slice(t, s, e) for t in terms]
                vb = v[start + s : start + e, ...]
                for i, (c0, c1) in enumerate(cols):
                    vc = vb if len(cols) == 1 else vb[:, c0:c1]
                    parts = [_pull(xp, t, vc) for t in tile]
                    done = pulled[i]
                    pulled[i] = (
                        parts
                        if done is None
                        else [_add(p, q) for p, q in zip(done, parts, strict=True)]
                    )
            start += n
        out = []
        for terms in self._blocks(1):
            step = self._rows(terms, width)
            n = _term_rows(terms[0])
            for s in range(0, n, step):
                e = min(s + step, n)
                tile = [_slice(t, s, e) for t in terms]
                chunks = []
                for (c0, c1), g in zip(cols, pulled, strict=True):
                    assert g is not None  # at least one input
                    rows = None
                    for t, gt in zip(tile, g, strict=True):
                        part = _push(xp, t, gt, c1 - c0)
                        rows = part if rows is None else rows + part
                    assert rows is not None  # a model has at least one term
                    chunks.append(rows)
                out.append(chunks[0] if len(chunks) == 1 else xp.concat(chunks, axis=1))
        result = _join_rows(xp, iter(out), self.shape[0]) if len(out) > 1 else out[0]
        return result[:, 0] if flat else result

    def diagonal(self) -> Array:
        """Θ(x_i, x_i), shape (N,): Σ over layers (|a_i|² + c)·mean_o |δ_i,o|², O(N·P·O).

        Raises
        ------
        ValueError
            An operator built with ``x2`` (not a square kernel of one input set).
        """
        if self.x2 is not None:
            raise ValueError("a diagonal needs the symmetric operator (built without `x2`)")
        xp = self.xp
        parts = []
        for terms in self._blocks(1):
            total = None
            for t in terms:
                sens = 1.0 if t.delta is None else xp.mean(xp.sum(t.delta**2, axis=2), axis=1)
                gram = 1.0 if t.a is None else xp.sum(t.a**2, axis=1) + t.bias_sq
                term = gram * sens
                total = term if total is None else total + term
            parts.append(total)
        return parts[0] if len(parts) == 1 else xp.concat(parts, axis=0)


def _term_rows(t: NTKTerm) -> int:
    first = t.a if t.a is not None else t.delta
    assert first is not None  # a term has an input factor or sensitivities
    return int(first.shape[0])


def _width(t: NTKTerm) -> int:
    """Numbers per input and vector of a term's product temporaries (O is counted apart)."""
    if t.delta is not None:
        return int(t.delta.shape[2])
    assert t.a is not None
    return int(t.a.shape[1])


def _term_bytes(xp: Namespace, terms: list[NTKTerm]) -> int:
    """Bytes a block's factors hold."""
    total = 0
    for t in terms:
        for arr in (t.a, t.delta):
            if arr is not None:
                total += math.prod(arr.shape) * xp.finfo(arr.dtype).bits // 8
    return total


def _slice(t: NTKTerm, s: int, e: int) -> NTKTerm:
    return NTKTerm(
        None if t.a is None else t.a[s:e, ...],
        t.bias_sq,
        None if t.delta is None else t.delta[s:e, ...],
    )


def _add(p: Pulled, q: Pulled) -> Pulled:
    return (None if p[0] is None else p[0] + q[0], None if p[1] is None else p[1] + q[1])


def _pull(xp: Namespace, t: NTKTerm, v: Array) -> Pulled:
    """One term's share of Jᵀv for a tile's vectors ``v`` (n, j): the weight part (fan_in,
    O·fan_out·j) and the bias part (O·fan_out·j,) (``None`` without a bias); the readout's
    (fan_in, j) and (j,). Plain 2-D products, no temporary beyond one (n, O·fan_out·j)."""
    if t.delta is None:  # the readout: δ is the identity, the same for every output
        assert t.a is not None  # a structured output layer has its input
        gb = xp.sum(v, axis=0) if t.bias_sq else None  # (j,)
        return xp.matmul(xp.permute_dims(t.a, (1, 0)), v), gb  # (fan_in, j)
    n, o, k = t.delta.shape
    d2 = xp.reshape(t.delta, (n, o * k))
    j = v.shape[1]
    dv = d2 * v if j == 1 else xp.reshape(d2[:, :, None] * v[:, None, :], (n, o * k * j))
    summed = xp.sum(dv, axis=0)  # the bias part, or a Jacobian's whole
    if t.a is None:
        return summed, None
    gw = xp.matmul(xp.permute_dims(t.a, (1, 0)), dv)  # (fan_in, O·fan_out·j)
    return gw, summed if t.bias_sq else None


def _push(xp: Namespace, t: NTKTerm, g: Pulled, j: int) -> Array:
    """One term's share of J u for the pulled-back u = ``g``: (n, j), averaged over outputs."""
    gw, gb = g
    assert gw is not None  # every term pulls back a weight (or Jacobian) part
    if t.delta is None:
        assert t.a is not None
        out = xp.matmul(t.a, gw)
        return out if gb is None else out + t.bias_sq * gb[None, :]
    n, o, k = t.delta.shape
    h = gw[None, :] if t.a is None else xp.matmul(t.a, gw)  # (n, O·fan_out·j)
    if gb is not None:
        h = h + t.bias_sq * gb[None, :]
    d2 = xp.reshape(t.delta, (n, o * k))
    if j == 1:
        out = xp.sum(h * d2, axis=1, keepdims=True)
    else:
        out = xp.sum(xp.reshape(h, (h.shape[0], o * k, j)) * d2[:, :, None], axis=1)
    return out / o if o > 1 else out


def ntk_operator(
    f: Model | ModelFn,
    theta: Array,
    x1: Array,
    x2: Array | None = None,
    *,
    memory_budget: int | None = None,
) -> NTKOperator:
    """The exact local NTK Θ(x1, x2) (averaged over outputs, as :func:`nntk_array.ntk`) as a
    matrix-free kernel operator.

    K v = J(x1) (J(x2)ᵀ v) from the model's structured NTK factors (the ``ntk_terms``
    capability of the model protocol; the built-in :class:`MLP` has them): per layer,
    Jᵀv is the backpropagated weight gradient aᵀ (v ⊙ δ) of the layer inputs a and output
    sensitivities δ, and J u its push-forward a U δᵀ, in array-API code on any backend.
    A model without them (a torch or JAX model through :func:`from_torch`/:func:`from_jax`,
    or a plain callable on torch or JAX) gets each block's Jacobian from the library's
    autodiff instead (N_block × O × P numbers per block); a plain callable on a library
    without autodiff raises ``TypeError`` here.

    **Cost:** one product K v with v of shape (N2, j) takes O((N1 + N2)·P·O·j) time and no
    N1 × N2 array. **Memory:** the pulled-back O × P × j numbers, and one block of inputs'
    factors (the MLP's: Σ widths + O·Σ hidden numbers per input) and product temporaries
    within ``memory_budget``; blocks' factors are kept between products while they fit in
    half of it (then each product is a few GEMMs), the others recomputed per product; the
    other half is left to the solver (:func:`~nntk_array.kernel_regression`'s Nyström sketch),
    so the operator and a solve on it stay within one budget. The result K v, N1 × j, grows
    beyond it.

    Parameters
    ----------
    f : model or callable
        As in :func:`nntk_array.ntk`.
    theta : array, shape (P,)
    x1 : array, shape (N1, ...)
    x2 : array, shape (N2, ...), optional
        Defaults to ``x1`` (a symmetric kernel, with a :meth:`~NTKOperator.diagonal`).
    memory_budget : int, optional
        Bytes for the per-block factors and temporaries (default 256 MiB, as
        :func:`nntk_array.ntk`).

    Returns
    -------
    NTKOperator
        ``.shape`` (N1, N2), ``.dtype``, ``.device``, ``.matmul(v)`` and, without ``x2``,
        ``.diagonal()``.

    Raises
    ------
    TypeError
        Mixed libraries, non-floating dtypes, a model without NTK factors on a library
        without autodiff, a non-integer ``memory_budget``.
    ValueError
        Wrong shapes, no inputs, mixed devices, NaN/inf, ``memory_budget`` < 1 or too small
        for one input's factors.

    Examples
    --------
    >>> import numpy as np
    >>> import nntk_array as nk
    >>> model = nk.MLP(1, (32,))
    >>> theta = model.init(0, xp=np)
    >>> x = np.linspace(-1.0, 1.0, 6)[:, None]
    >>> K = nk.ntk_operator(model, theta, x)
    >>> v = np.ones((6, 1))
    >>> bool(np.allclose(K.matmul(v), nk.ntk(model, theta, x) @ v))
    True
    >>> bool(np.allclose(K.diagonal(), np.diag(nk.ntk(model, theta, x))))
    True
    """
    budget = Resources(memory_budget=memory_budget).memory_budget or NTK_BLOCK_BYTES
    xp, (theta, x1, x2) = resolve(theta=theta, x1=x1, x2=x2)
    model = bind(f, xp, theta, x1, x2)
    check_finite(xp, theta=theta, x1=x1, x2=x2)
    if model.jacobian_mode is not None and not has_autodiff(xp):
        raise TypeError(
            f"`f` has no structured NTK factors (ntk_terms) and {xp.__name__} has no autodiff "
            "for its Jacobian: use nk.MLP, or torch or JAX arrays"
        )
    itemsize = 4 if theta.dtype == xp.float32 else 8
    block, cache = ntk_blocks(
        None,
        x1.shape[0],
        None if x2 is None else x2.shape[0],
        n_out=model.num_outputs,
        full=False,
        per_input=model.ntk_numbers_per_input,
        itemsize=itemsize,
        mode=model.jacobian_mode,
        budget=budget,
    )
    if model.jacobian_mode is None:
        block = min(block, STRUCTURED_BLOCK)
    share = budget // KEEP_SHARE
    if cache:
        room = share
    else:  # keep the first blocks in what one recomputed block and a tile's products leave
        mode = model.jacobian_mode
        scratch = ntk_temporaries(mode) * (block if mode == "batch" else 1)
        held = model.ntk_numbers_per_input * itemsize
        room = max(0, share - block * held * (2 + scratch) - budget // PRODUCT_SHARE)
    return NTKOperator(model, xp, theta, x1, x2, block=block, room=room, budget=budget)


def nntk_features(
    f: Model | ModelFn,
    theta: Array,
    x: Array,
    *,
    sigma: float | None = None,
    samples: int | Array,
    seed: Any = None,
    estimator: str | Estimator = "sketch",
    smoothing: Smoothing | None = None,
    form: str = "gaussian",
    radial: str = "gaussian",
    scale: str = "gradient-consistent",
    sampling: str = "iid",
    quadrature: int = 5,
    accumulate: str = "input",
    resources: Resources | None = None,
    memory_budget: int | None = None,
    samples_per_call: int | None = None,
) -> Array:
    """A root R (N, r) of the NNTK estimate: R Rᵀ equals ``nk.nntk(f, theta, x, ...)`` with
    the same options and seed, to rounding.

    For ``estimator="sketch"`` and ``"directional"`` R is the weighted differences
    themselves, r = O·M; for ``"plugin"`` the plug-in nonlocal gradients, r = O·P (the
    ``"unbiased"`` estimator is not positive semidefinite and has no root). Rows are
    computed a block of inputs at a time, each from all M perturbations (regenerated from the
    seed per block), so features of different inputs computed with the same int ``seed``
    are columns of one estimate: R(x*) R(x)ᵀ is its test-train kernel. Wrap the factors in
    :class:`LowRankOperator` to solve with them (:func:`nntk_array.kernel_regression` then
    works in r × r).

    **Memory:** the N × r result, plus one row block's differences and root rows in a quarter
    of ``memory_budget`` and the model evaluations and drawn directions of
    :func:`nntk_array.nntk` within it. **Time:** as :func:`nntk_array.nntk` without the N × N
    contraction: N·M model evaluations, plus N·M·P for the plug-in's product with the
    directions.

    Parameters
    ----------
    f, theta
        As in :func:`nntk_array.nntk`.
    x : array, shape (N, ...)
    sigma, samples, seed, smoothing, form, radial, scale, sampling, quadrature, accumulate, \
resources, memory_budget, samples_per_call
        As in :func:`nntk_array.nntk` (no attention, one output average).
    estimator : {"sketch", "plugin", "directional"} or Estimator, default "sketch"

    Returns
    -------
    array, shape (N, r)
        In ``theta``'s dtype, namespace and device.

    Raises
    ------
    TypeError, ValueError
        As :func:`nntk_array.nntk`; ``ValueError`` for ``estimator="unbiased"``.

    Examples
    --------
    >>> import numpy as np
    >>> import nntk_array as nk
    >>> model = nk.MLP(1, (16,), activation="sign")
    >>> theta = model.init(0, xp=np)
    >>> x = np.linspace(-1.0, 1.0, 5)[:, None]
    >>> R = nk.nntk_features(model, theta, x, sigma=0.3, samples=64, seed=0)
    >>> R.shape
    (5, 64)
    >>> K = nk.nntk(model, theta, x, sigma=0.3, samples=64, seed=0, estimator="sketch")
    >>> bool(np.allclose(R @ R.T, K))
    True
    """
    count = sample_count(samples)
    spec = kernel.KernelSpec(
        smoothing=smoothing_spec(smoothing, sigma, form, radial, scale),
        estimator=estimator_spec(estimator, sampling, quadrature, accumulate),
        resources=resources_spec(resources, memory_budget, samples_per_call, "auto"),
        samples=samples if count is None else count,
        seed=check_seed(seed),
        attention=None,
        full=False,
        stderr=False,
    )
    if spec.smoothing.perturbation != "gaussian":
        raise ValueError("nntk_features takes perturbation='gaussian' only (lowrank: nk.nntk)")
    if spec.estimator.name not in roots.ROOTED:
        raise ValueError(
            f"`estimator` must be one of {roots.ROOTED} (a positive semidefinite estimate "
            f"R Rᵀ); {spec.estimator.name!r} has no root"
        )
    whole = kernel.setup(f, theta, x, None, spec)  # validates every input, draws nothing
    xp, n = whole.xp, whole.inputs.n1
    x = whole.inputs.x
    step = roots.block_rows(whole, spec.resources.memory_budget or DEFAULT_BUDGET)
    if step >= n:
        return roots.root(whole, x)
    # the plan of one block: perturbations per model call sized for `step` inputs, not N
    problem = kernel.setup(f, whole.theta, x[:step, ...], None, spec)
    blocks = (roots.root(problem, x[s : min(s + step, n), ...]) for s in range(0, n, step))
    return _join_rows(xp, blocks, n)


def _join_rows(xp: Namespace, blocks: Iterator[Array], n: int) -> Array:
    """The row blocks as one (n, r) array: written into place where the library allows it,
    so the result is held once, else (JAX's immutable arrays) concatenated."""
    first = next(blocks)
    if not is_writeable_array(first):
        return xp.concat([first, *blocks], axis=0)
    out = xp.empty((n, first.shape[1]), dtype=first.dtype, device=array_device(first))
    s = 0
    for rows in itertools.chain([first], blocks):
        out[s : s + rows.shape[0], ...] = rows
        s += rows.shape[0]
    return out
