"""A root R with R Rᵀ = the NNTK estimate, for the estimators that are Gram matrices.

With ã = D ⊙ w / M the weighted differences (N, O, M) of one estimate (uniform sample weights
1/M), the engine's estimators are K = ã W ãᵀ / den, averaged over the O outputs
(:mod:`nntk_array._mc.estimators`):

- ``"sketch"`` and ``"directional"``: W diagonal and ≥ 0, den = 1/M, so R = ã √(W M / O),
  rank ≤ O·M (M perturbations: low rank when M < N);
- ``"plugin"``: W = U Uᵀ (the directions' Gram), den = 1, so R = ã U / √O: the plug-in
  nonlocal gradients, rank ≤ O·P;
- ``"unbiased"`` drops the m = n terms of W and is not positive semidefinite: no root.

The differences come from the same engine calls as :func:`nntk_array.nntk` (same seed, same
directions), so R Rᵀ equals its kernel up to rounding.
"""

from __future__ import annotations

from .._mc import kernel
from .._typing import Array
from ..options import sample_count
from ._kernel import KernelFn

__all__ = ["ROOTED", "nntk_root"]

#: estimators whose estimate is R Rᵀ for an R computed from the same differences
ROOTED = ("plugin", "sketch", "directional")


def nntk_root(fn: KernelFn, x: Array) -> Array:
    """R (N, r) with R Rᵀ = ``fn(x)`` for an NNTK ``fn`` with an estimator of :data:`ROOTED`.

    In ``x``'s library, dtype and device; r = O·M for the diagonal estimators, O·P for the
    plug-in.
    """
    options = fn.options
    assert options is not None  # an NNTK; callers check the estimator is one of ROOTED
    samples = options["samples"]
    count = sample_count(samples)
    spec = kernel.KernelSpec(
        smoothing=options["smoothing"],
        estimator=options["estimator"],
        resources=options["resources"],
        samples=samples if count is None else count,
        seed=options["seed"],
        attention=None,
        full=False,
        stderr=False,
    )
    problem = kernel.setup(fn.model, fn.params, x, None, spec)
    xp, dirs = problem.xp, problem.dirs
    diffs = kernel.rows(problem, problem.inputs.x, attention=False)
    m = dirs.num_rows
    a = diffs.raw * diffs.weights / m  # ã with the uniform sample weights 1/M
    n, o = a.shape[0], a.shape[1]
    if problem.est.diagonal:
        root = a * xp.sqrt(kernel.weight_matrix(problem, diffs) * (m / o))
    else:  # ã U, from row blocks of U sized by the plan (memory flat in M)
        step = max(dirs.group_size, problem.plan.gram_rows)
        root = None
        for r0 in range(0, m, step):
            r1 = min(r0 + step, m)
            u = xp.astype(dirs.rows(r0, r1), problem.acc, copy=False)
            part = xp.matmul(a[..., r0:r1], u)
            root = part if root is None else root + part
        root = root / (o**0.5)
    return xp.astype(xp.reshape(root, (n, -1)), problem.theta.dtype, copy=False)
