"""Kernel estimators and their error bars, as objects with one interface.

With D (N × M) the model differences under M shared perturbations, w_m the per-row gradient
weights, α (N × M) the sample weights (1/M, or attention) and ã = α ⊙ D ⊙ w, every estimator
is a ratio of two bilinear forms,

    K(x_i, x_k) = ã_i W ã_kᵀ / α_i V α_kᵀ,

with (W, V) = (G, 11ᵀ) for :class:`PlugIn`, (G off-group, 11ᵀ off-group) for
:class:`UStatistic`, (diag d, I) for :class:`Sketch` and :class:`Directional`; G = U Uᵀ is
the Gram matrix of the directions. For uniform α this is exactly the U-statistic, plug-in and
sketch kernels; for attention weights the denominator renormalizes over the pairs kept;
dropping a batch of samples from both forms gives the delete-a-batch jackknife standard
error (:func:`jackknife`). (docs: Mathematics, 'Kernel estimators'.)

The jackknife never re-runs the kernel: with ã_b the columns of batch b,

    ã_{-b} W ã_{-b}ᵀ = ã W ãᵀ − ã_b (W ãᵀ)_b − (ã W)_b ã_bᵀ + ã_b W_bb ã_bᵀ,

so on the Gram route the leave-one-batch-out numerators are slices of the one product ã W
(:func:`dropped_numerators`), and on the stream route each column tile's product ã U_c is
split into per-batch parts whose sum it is (:func:`stream_numerator`). The denominators drop
a batch the same way (:func:`dropped_denominators`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from array_api_compat import device

from .._typing import Array, Namespace
from ..backends.linalg import gram
from .differences import Differences
from .directions import COL_TILE, Directions
from .moments import RunningMoments

__all__ = [
    "Directional",
    "Estimator",
    "PlugIn",
    "Sketch",
    "UStatistic",
    "batch_bounds",
    "dropped_denominators",
    "dropped_numerators",
    "estimator",
    "jackknife",
    "quad",
    "ratio",
    "stream_numerator",
    "weigh",
]

Groups = Sequence[tuple[int, int]]


class Estimator:
    """The interface: the weight matrix W and the pair weights α V αᵀ; the kernel is their
    ratio (:func:`quad`, :func:`ratio`)."""

    name: str
    #: W is diagonal: no Gram of the directions is needed
    diagonal: bool = False
    #: independent groups of samples the estimator needs at least
    min_groups: int = 1
    #: V is all ones between different groups (else zero there)
    pairs_across_groups: bool = True

    def weight_matrix(
        self, xp: Namespace, dirs: Directions, diffs: Differences | None, acc: Any, rows: int
    ) -> Array:
        """W, (M, M) or its diagonal (M,); ``rows`` bounds the Gram's row blocks."""
        raise NotImplementedError

    def denominator(self, xp: Namespace, al1: Array, al2: Array, groups: Groups) -> Array:
        """α_i V α_kᵀ, (N1, N2): the weight of the sample pairs the estimator keeps."""
        raise NotImplementedError

    def stream_correction(
        self, xp: Namespace, a1: Array, u_sq: Array, a2: Array, full: bool
    ) -> Array | None:
        """What the column-streamed ã G ãᵀ must lose to be this estimator's numerator
        (only estimators whose W is a Gram can be streamed)."""
        return None


class PlugIn(Estimator):
    """The Gram of estimated gradients: PSD, mean (1 + (P+1)/M)·Θ for linear f."""

    name = "plugin"

    def weight_matrix(
        self, xp: Namespace, dirs: Directions, diffs: Differences | None, acc: Any, rows: int
    ) -> Array:
        if diffs is not None and diffs.gram is not None:  # summed as the model swept U
            return diffs.gram
        return _gram(xp, dirs, acc, rows)

    def denominator(self, xp: Namespace, al1: Array, al2: Array, groups: Groups) -> Array:
        return xp.sum(al1, axis=1)[:, None] * xp.sum(al2, axis=1)[None, :]


class UStatistic(PlugIn):
    """Pairs of different groups only: exactly unbiased for the fixed kernel; not PSD."""

    name = "unbiased"
    min_groups = 2

    def weight_matrix(
        self, xp: Namespace, dirs: Directions, diffs: Differences | None, acc: Any, rows: int
    ) -> Array:
        g = super().weight_matrix(xp, dirs, diffs, acc, rows)
        dev = device(g)
        ints = xp.__array_namespace_info__().default_dtypes(device=dev)["integral"]
        gid = xp.arange(dirs.num_rows, dtype=ints, device=dev) // dirs.group_size
        return xp.where(gid[:, None] != gid[None, :], g, 0.0)

    def denominator(self, xp: Namespace, al1: Array, al2: Array, groups: Groups) -> Array:
        g1, g2 = _group_sums(xp, al1, groups), _group_sums(xp, al2, groups)
        return super().denominator(xp, al1, al2, groups) - xp.matmul(
            g1, xp.permute_dims(g2, (1, 0))
        )

    def stream_correction(
        self, xp: Namespace, a1: Array, u_sq: Array, a2: Array, full: bool
    ) -> Array | None:
        return quad(xp, a1, u_sq, a2, full)  # the m = n terms (independent rows only)


@dataclass(frozen=True)
class Sketch(Estimator):
    """(1/(Mσ²)) Σ_m D_im D_km: PSD, variance independent of P, a different kernel for
    non-smooth f. The paper form weighs each sample by |u_m|²/P."""

    paper: bool = False
    name = "sketch"
    diagonal = True
    pairs_across_groups = False

    def weight_matrix(
        self, xp: Namespace, dirs: Directions, diffs: Differences | None, acc: Any, rows: int
    ) -> Array:
        assert diffs is not None
        if self.paper:
            assert diffs.norms is not None
            return diffs.norms.u_sq / dirs.num_params
        return xp.ones_like(diffs.weights)

    def denominator(self, xp: Namespace, al1: Array, al2: Array, groups: Groups) -> Array:
        return xp.matmul(al1, xp.permute_dims(al2, (1, 0)))


class Directional(Sketch):
    """(P/M) Σ_m D_m f(x) D_m f(x') along unit directions (directional Gaussian smoothing)."""

    name = "directional"

    def weight_matrix(
        self, xp: Namespace, dirs: Directions, diffs: Differences | None, acc: Any, rows: int
    ) -> Array:
        assert diffs is not None
        w = diffs.weights
        return xp.full(w.shape, float(dirs.num_params), dtype=acc, device=device(w))


def estimator(name: str, *, paper: bool) -> Estimator:
    """The estimator object for ``name`` (one of ``nntk_array.options.ESTIMATORS``)."""
    if name == "unbiased":
        return UStatistic()
    if name == "plugin":
        return PlugIn()
    if name == "sketch":
        return Sketch(paper=paper)
    return Directional()


def batch_bounds(groups: Groups, batches: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of up to ``batches`` contiguous jackknife batches of whole groups."""
    n = min(len(groups), batches)
    starts = [groups[(len(groups) * b) // n][0] for b in range(n)]
    return list(zip(starts, [*starts[1:], groups[-1][1]], strict=True))


def jackknife(xp: Namespace, nums: Iterable[Array], dens: Iterable[Array], full: bool) -> Array:
    """Delete-a-batch jackknife: the entrywise spread of the leave-one-batch-out ratios."""
    moments = RunningMoments()
    for num, den in zip(nums, dens, strict=True):
        moments.add(xp, ratio(xp, num, den, full))
    n = moments.count
    return xp.sqrt(moments.m2 * ((n - 1) / n))


def dropped_denominators(
    xp: Namespace,
    est: Estimator,
    al1: Array,
    al2: Array,
    groups: Groups,
    den: Array,
    bounds: Sequence[tuple[int, int]],
) -> Iterator[Array]:
    """α_{-b} V α_{-b}ᵀ for every batch b, from the full ``den``: a batch's own pairs (the
    estimator's denominator of its columns), and its pairs with the rest when V is all ones
    across groups; a batch holds whole groups, so no other pair changes."""
    s1, s2 = xp.sum(al1, axis=1), xp.sum(al2, axis=1)
    g = 0  # batches and groups are both in row order: one walk over the groups
    for b0, b1 in bounds:
        local = []
        while g < len(groups) and groups[g][0] < b1:
            local.append((groups[g][0] - b0, groups[g][1] - b0))
            g += 1
        d = den - est.denominator(xp, al1[:, b0:b1], al2[:, b0:b1], local)
        if est.pairs_across_groups:
            t1, t2 = xp.sum(al1[:, b0:b1], axis=1), xp.sum(al2[:, b0:b1], axis=1)
            d = d - t1[:, None] * (s2 - t2)[None, :] - (s1 - t1)[:, None] * t2[None, :]
        yield d


def dropped_numerators(
    xp: Namespace,
    a1: Array,
    y1: Array,
    a2: Array,
    y2: Array,
    w: Array,
    num: Array,
    bounds: Sequence[tuple[int, int]],
    full: bool,
) -> Iterator[Array]:
    """ã_{-b} W ã_{-b}ᵀ for every batch b, from ``num`` = ã1 W ã2ᵀ and the products
    y = ã W (W symmetric): N1·N2·M work over all batches, not one kernel per batch."""
    for b0, b1 in bounds:
        p1, p2 = a1[..., b0:b1], a2[..., b0:b1]
        if w.ndim == 1:  # diagonal W: a batch pairs only with itself
            yield num - quad(xp, p1, w[b0:b1], p2, full)
            continue
        rows = quad(xp, p1, None, y2[..., b0:b1], full) + quad(xp, y1[..., b0:b1], None, p2, full)
        yield num - rows + quad(xp, p1, w[b0:b1, b0:b1], p2, full)


def quad(xp: Namespace, a1: Array, w: Array | None, a2: Array, full: bool) -> Array:
    """Σ_{m,n} a1[i, o, m] W[m, n] a2[k, o', n]: averaged over o = o', or all (o, o').

    ``w`` is an (M, M) matrix, an (M,) diagonal, or ``None`` for the identity.
    """
    n1, o, _ = a1.shape
    n2 = a2.shape[0]
    y = a1 if w is None else weigh(xp, a1, w)
    if full:
        k = xp.matmul(
            xp.reshape(y, (n1 * o, -1)), xp.permute_dims(xp.reshape(a2, (n2 * o, -1)), (1, 0))
        )
        return xp.permute_dims(xp.reshape(k, (n1, o, n2, o)), (0, 2, 1, 3))
    k = xp.matmul(xp.reshape(y, (n1, -1)), xp.permute_dims(xp.reshape(a2, (n2, -1)), (1, 0)))
    return k / o if o > 1 else k


def weigh(xp: Namespace, a: Array, w: Array) -> Array:
    """ã W for an (M, M) matrix or an (M,) diagonal W."""
    return a * w if w.ndim == 1 else xp.matmul(a, w)


def ratio(xp: Namespace, num: Array, den: Array, full: bool) -> Array:
    """num / den, 0 where no pair of samples carries weight (fully concentrated attention)."""
    tiny = 1024 * float(xp.finfo(den.dtype).eps)
    ok = den > tiny * xp.max(xp.abs(den))
    if full:
        ok, den = ok[:, :, None, None], den[:, :, None, None]
    return xp.where(ok, num / xp.where(ok, den, 1.0), 0.0)


def _group_sums(xp: Namespace, alpha: Array, groups: Groups) -> Array:
    if len(groups) == alpha.shape[1]:  # groups of one sample each
        return alpha
    return xp.stack([xp.sum(alpha[:, s:e], axis=1) for s, e in groups], axis=1)


def _gram(xp: Namespace, dirs: Directions, acc: Any, rows: int) -> Array:
    """G = U Uᵀ: one product when U is held whole, else from column blocks (one regeneration
    of U) or from row-block pairs; ``rows`` rows of U bound either block (column blocks take
    half as many numbers, whole tiles)."""
    m, p = dirs.num_rows, dirs.num_params
    whole = dirs.held()
    if whole is not None and whole.dtype == acc:  # in memory already: one product
        return gram(xp, whole)
    if dirs.has_columns:
        # wide blocks: the products of few rows with one tile run far below the BLAS peak
        # (64 x 8192: a seventh of it on NumPy)
        width = COL_TILE * max(1, (rows * p) // (2 * m * COL_TILE))
        g = None
        for c0 in range(0, p, width):  # M x width numbers at a time: flat in P
            part = gram(xp, xp.astype(dirs.columns(c0, min(c0 + width, p)), acc, copy=False))
            g = part if g is None else g + part
        return g
    rows_per = max(dirs.group_size, rows)
    starts = list(range(0, m, rows_per))
    grid: list[list[Array]] = [[None] * len(starts) for _ in starts]
    for i, s in enumerate(starts):
        ui = xp.astype(dirs.rows(s, min(s + rows_per, m)), acc, copy=False)
        for j in range(i, len(starts)):
            stop = min(starts[j] + rows_per, m)
            uj = ui if j == i else xp.astype(dirs.rows(starts[j], stop), acc, copy=False)
            grid[i][j] = xp.matmul(ui, xp.permute_dims(uj, (1, 0)))
            if j != i:
                grid[j][i] = xp.permute_dims(grid[i][j], (1, 0))
    if len(starts) == 1:
        return grid[0][0]
    return xp.concat([xp.concat(r, axis=1) for r in grid], axis=0)


def _products(
    xp: Namespace,
    dirs: Directions,
    cols: tuple[int, int],
    arrays: Sequence[Array],
    spans: Sequence[tuple[int, int]],
    acc: Any,
    rows: int,
    norms: list[Array] | None,
) -> list[list[Array]]:
    """For each span of rows (contiguous, in order) and each array ã: Σ over the span's rows
    m of ã[..., m] U[m, cols]; U regenerated ``rows`` rows at a time over the spans only.
    Squared row norms of U[:, cols] are appended to ``norms`` when given."""
    out: list[list[Array]] = [[None] * len(arrays) for _ in spans]
    for r0, r1, u in dirs.column_blocks(*cols, rows, (spans[0][0], spans[-1][1])):
        u = xp.astype(u, acc, copy=False)
        if norms is not None:
            norms.append(xp.sum(u * u, axis=1))
        for slot, (s0, s1) in zip(out, spans, strict=True):
            lo, hi = max(s0, r0), min(s1, r1)
            if lo >= hi:
                continue
            for k, a in enumerate(arrays):
                # one 2-D GEMM: a 3-D ã would be N·O small products against the same block
                flat = xp.reshape(a[..., lo:hi], (-1, hi - lo))
                part = xp.reshape(xp.matmul(flat, u[lo - r0 : hi - r0, :]), (*a.shape[:-1], -1))
                slot[k] = part if slot[k] is None else slot[k] + part
    return out


def _total(parts: list[list[Array]]) -> list[Array]:
    return [sum(col[1:], col[0]) for col in zip(*parts, strict=True)]


def stream_numerator(
    xp: Namespace,
    dirs: Directions,
    a1: Array,
    a2: Array,
    acc: Any,
    rows: int,
    full: bool,
    symmetric: bool,
    bounds: Sequence[tuple[int, int]] = (),
    window: int = 1,
) -> tuple[Array, Array, list[Array]]:
    """Σ over column tiles c of (ã1 U_c)(ã2 U_c)ᵀ, i.e. ã U Uᵀ ãᵀ without the M × M Gram,
    the squared row norms |u_m|² gathered on the way, and for every jackknife batch b of
    ``bounds`` the numerator without it, Σ_c (B_c − B_{c,b})(B_c − B_{c,b})ᵀ with B_{c,b}
    the batch's part of B_c = ã U_c.

    U_c is consumed ``rows`` rows at a time and at most ``window`` batches' parts are held
    at once, so memory does not grow with M: the first pass over a tile's rows forms B_c and
    the first window's parts, each later window regenerates only its own rows.
    """
    p, m = dirs.num_params, dirs.num_rows
    arrays = [a1] if symmetric else [a1, a2]
    num: Array = None
    sq: Array = None
    dropped: list[Array] = [None] * len(bounds)
    windows = [list(bounds[i : i + window]) for i in range(0, len(bounds), window)]
    for c0 in range(0, p, COL_TILE):
        cols = (c0, min(c0 + COL_TILE, p))
        first = windows[0] if windows else []
        end = first[-1][1] if first else 0  # the rows after the first window, in one span
        spans = first + ([(end, m)] if end < m else [])
        norms: list[Array] = []
        parts = _products(xp, dirs, cols, arrays, spans, acc, rows, norms)
        total = _total(parts)
        part = quad(xp, total[0], None, total[-1], full)
        num = part if num is None else num + part
        col_sq = norms[0] if len(norms) == 1 else xp.concat(norms)
        sq = col_sq if sq is None else sq + col_sq
        b = 0
        for k, batch_spans in enumerate(windows):
            if k > 0:
                parts = _products(xp, dirs, cols, arrays, batch_spans, acc, rows, None)
            for own in parts[: len(batch_spans)]:
                left = [t - o for t, o in zip(total, own, strict=True)]
                part = quad(xp, left[0], None, left[-1], full)
                dropped[b] = part if dropped[b] is None else dropped[b] + part
                b += 1
    return num, sq, dropped
