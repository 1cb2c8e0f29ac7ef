"""Kernel estimators and their error bars, as objects with one interface.

With D (N × M) the model differences under M shared perturbations, w_m the per-row gradient
weights, α (N × M) the sample weights (1/M, or attention) and ã = α ⊙ D ⊙ w, every estimator
is a ratio of two bilinear forms,

    K(x_i, x_k) = ã_i W ã_kᵀ / α_i V α_kᵀ,

with (W, V) = (G, 11ᵀ) for :class:`PlugIn`, (G off-group, 11ᵀ off-group) for
:class:`UStatistic`, (diag d, I) for :class:`Sketch` and :class:`Directional`; G = U Uᵀ is
the Gram matrix of the directions. For uniform α this is exactly the U-statistic, plug-in and
sketch kernels; for attention weights the denominator renormalizes over the pairs kept;
dropping a batch of samples from both forms gives the delete-a-batch :class:`Jackknife`
standard error. (docs: Mathematics, 'Kernel estimators'.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from array_api_compat import array_namespace, device

from .._typing import Array, Namespace
from ..backends.linalg import gram
from .differences import Differences
from .directions import COL_TILE, Directions
from .moments import RunningMoments

__all__ = [
    "Directional",
    "Estimator",
    "Jackknife",
    "PlugIn",
    "Sketch",
    "UStatistic",
    "estimator",
    "quad",
    "ratio",
]

Groups = Sequence[tuple[int, int]]


class Estimator:
    """The interface: the weight matrix W, the pair weights α V αᵀ, and the kernel."""

    name: str
    #: W is diagonal: no Gram of the directions is needed
    diagonal: bool = False
    #: independent groups of samples the estimator needs at least
    min_groups: int = 1

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

    def kernel(
        self, a1: Array, al1: Array, a2: Array, al2: Array, w: Array, groups: Groups, full: bool
    ) -> Array:
        """The kernel block of two blocks of weighted differences ã (n, O, M)."""
        xp = array_namespace(a1, a2, w)
        return ratio(xp, quad(xp, a1, w, a2, full), self.denominator(xp, al1, al2, groups), full)


class PlugIn(Estimator):
    """The Gram of estimated gradients: PSD, mean (1 + (P+1)/M)·Θ for linear f."""

    name = "plugin"

    def weight_matrix(
        self, xp: Namespace, dirs: Directions, diffs: Differences | None, acc: Any, rows: int
    ) -> Array:
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
        g = _gram(xp, dirs, acc, rows)
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


@dataclass(frozen=True)
class Jackknife:
    """Delete-a-batch jackknife over up to ``batches`` batches of whole groups: each batch
    is dropped from both bilinear forms in turn, and the spread of the ratios is the error."""

    batches: int

    def stderr(
        self,
        est: Estimator,
        a1: Array,
        al1: Array,
        a2: Array,
        al2: Array,
        w: Array,
        groups: Groups,
        full: bool,
    ) -> Array:
        """Entrywise standard error of ``est.kernel`` on these blocks."""
        xp = array_namespace(a1, a2, w)
        n_batches = min(len(groups), self.batches)
        bounds = [groups[(len(groups) * b) // n_batches][0] for b in range(n_batches)]
        bounds.append(groups[-1][1])
        col = xp.arange(a1.shape[-1], device=device(a1))
        moments = RunningMoments()
        for b in range(n_batches):
            keep = xp.astype((col < bounds[b]) | (col >= bounds[b + 1]), a1.dtype, copy=False)
            moments.add(
                xp, est.kernel(a1 * keep, al1 * keep, a2 * keep, al2 * keep, w, groups, full)
            )
        return xp.sqrt(moments.m2 * ((n_batches - 1) / n_batches))


def quad(xp: Namespace, a1: Array, w: Array | None, a2: Array, full: bool) -> Array:
    """Σ_{m,n} a1[i, o, m] W[m, n] a2[k, o', n]: averaged over o = o', or all (o, o').

    ``w`` is an (M, M) matrix, an (M,) diagonal, or ``None`` for the identity.
    """
    n1, o, _ = a1.shape
    n2 = a2.shape[0]
    y = a1 if w is None else (a1 * w if w.ndim == 1 else xp.matmul(a1, w))
    if full:
        k = xp.matmul(
            xp.reshape(y, (n1 * o, -1)), xp.permute_dims(xp.reshape(a2, (n2 * o, -1)), (1, 0))
        )
        return xp.permute_dims(xp.reshape(k, (n1, o, n2, o)), (0, 2, 1, 3))
    k = xp.matmul(xp.reshape(y, (n1, -1)), xp.permute_dims(xp.reshape(a2, (n2, -1)), (1, 0)))
    return k / o if o > 1 else k


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
    """G = U Uᵀ from column blocks (one regeneration of U) or from row-block pairs."""
    m, p = dirs.num_rows, dirs.num_params
    if dirs.has_columns:
        g = None
        for c0 in range(0, p, COL_TILE):  # M x COL_TILE numbers at a time: flat in P
            part = gram(xp, xp.astype(dirs.columns(c0, min(c0 + COL_TILE, p)), acc, copy=False))
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


def stream_numerator(
    xp: Namespace,
    dirs: Directions,
    a1: Array,
    a2: Array,
    acc: Any,
    rows: int,
    full: bool,
    symmetric: bool,
) -> tuple[Array, Array]:
    """Σ over column tiles c of (ã1 U_c)(ã2 U_c)ᵀ, i.e. ã U Uᵀ ãᵀ without the M × M Gram,
    and the squared row norms |u_m|² gathered on the way. U_c is consumed ``rows`` rows at a
    time, so memory does not grow with M."""
    p = dirs.num_params
    num: Array = None
    sq: Array = None
    for c0 in range(0, p, COL_TILE):
        c1 = min(c0 + COL_TILE, p)
        b1: Array = None
        b2: Array = None
        norms = []
        for r0, r1, u in dirs.column_blocks(c0, c1, rows):
            u = xp.astype(u, acc, copy=False)
            part1 = xp.matmul(a1[..., r0:r1], u)
            b1 = part1 if b1 is None else b1 + part1
            if not symmetric:
                part2 = xp.matmul(a2[..., r0:r1], u)
                b2 = part2 if b2 is None else b2 + part2
            norms.append(xp.sum(u * u, axis=1))
        part = quad(xp, b1, None, b1 if symmetric else b2, full)
        num = part if num is None else num + part
        col_sq = norms[0] if len(norms) == 1 else xp.concat(norms)
        sq = col_sq if sq is None else sq + col_sq
    return num, sq
