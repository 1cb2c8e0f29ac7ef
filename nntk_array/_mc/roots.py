"""A root R with R Rᵀ = the NNTK estimate, for the estimators that are Gram matrices.

With ã = D ⊙ w / M the weighted differences (N, O, M) of one estimate (uniform sample weights
1/M), the engine's estimators are K = ã W ãᵀ / den, averaged over the O outputs
(:mod:`.estimators`):

- ``"sketch"`` and ``"directional"``: W diagonal and ≥ 0, den = 1/M, so R = ã √(W M / O),
  rank ≤ O·M (M perturbations: low rank when M < N);
- ``"plugin"``: W = U Uᵀ (the directions' Gram), den = 1, so R = ã U / √O: the plug-in
  nonlocal gradients, rank ≤ O·P;
- ``"unbiased"`` drops the m = n terms of W and is not positive semidefinite: no root.

Each row of R depends only on its own input's differences (the directions are regenerated
from the seed in fixed tiles), so R is computed a block of rows at a time, from the same
engine calls as :func:`nntk_array.nntk`: R Rᵀ equals its kernel up to rounding.
"""

from __future__ import annotations

from .._typing import Array
from . import kernel
from .kernel import Problem

__all__ = ["ROOTED", "block_rows", "rank", "root"]

#: estimators whose estimate is R Rᵀ for an R computed from the same differences
ROOTED = ("plugin", "sketch", "directional")

#: a row block's differences, root rows and their temporaries take a quarter of the budget
ROOT_SHARE = 4
ROOT_COPIES = 3  # the differences, their weighted copy and the root rows being formed


def rank(problem: Problem) -> int:
    """r, the root's number of columns: O·M for the diagonal estimators, O·P for the plug-in."""
    width = problem.dirs.num_rows if problem.est.diagonal else problem.model.num_params
    return problem.model.num_outputs * width


def block_rows(problem: Problem, budget: int) -> int:
    """Inputs per row block: their differences (O·M numbers each) and root rows (r numbers)
    in :data:`ROOT_COPIES` copies within a quarter of ``budget``; at least one."""
    acc = 4 if problem.acc == problem.xp.float32 else 8
    per_row = (
        ROOT_COPIES * acc * (problem.model.num_outputs * problem.dirs.num_rows + rank(problem))
    )
    return max(1, (budget // ROOT_SHARE) // per_row)


def root(problem: Problem, x: Array) -> Array:
    """The rows (n, r) of R for the inputs ``x`` (a block), in ``theta``'s dtype.

    ``problem`` must have an estimator of :data:`ROOTED`, no attention and no standard errors.
    """
    xp, dirs = problem.xp, problem.dirs
    diffs = kernel.rows(problem, x, attention=False)
    m = dirs.num_rows
    a = diffs.raw * diffs.weights / m  # ã with the uniform sample weights 1/M
    n, o = a.shape[0], a.shape[1]
    if problem.est.diagonal:
        out = a * xp.sqrt(kernel.weight_matrix(problem, diffs) * (m / o))
    else:  # ã U, from row blocks of U sized by the plan (memory flat in M)
        step = max(dirs.group_size, problem.plan.gram_rows)
        out = None
        for r0 in range(0, m, step):
            r1 = min(r0 + step, m)
            u = xp.astype(dirs.rows(r0, r1), problem.acc, copy=False)
            part = xp.matmul(a[..., r0:r1], u)
            out = part if out is None else out + part
        assert out is not None  # M >= 1
        out = out / (o**0.5)
    return xp.astype(xp.reshape(out, (n, -1)), problem.theta.dtype, copy=False)
