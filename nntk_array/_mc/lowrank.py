"""Low-rank perturbations: the weighted differences and the Gram of the directions from factors.

With ``perturbation="lowrank"`` every weight matrix block W (fan_in × fan_out) the model
declares (``matrix_blocks``) is perturbed by E = (σ/√r) Σ_k a_k b_kᵀ, a_k, b_k ~ N(0, I), and
every other parameter by σ u, u ~ N(0, I): each entry has variance σ², entries are
uncorrelated, so the unit-scale directions u_m = h_m/σ have identity covariance like the
Gaussian ones, and the kernel is the library's estimator (U-statistic by default) with

    G_mn = ⟨vec E_m, vec E_n⟩/σ² + ⟨u_m, u_n⟩
         = Σ_blocks (1/r) Σ_{k,l} (a_mk·a_nl)(b_mk·b_nl) + ⟨u_m, u_n⟩

formed from the factors, never from an M × P array (docs: Mathematics, 'Low-rank
perturbations').

Memory and cost. The factors are drawn once per call, M·(r·Σ_blocks (fan_in + fan_out) +
P_rest) numbers (P_rest the parameters outside the matrices), in tiles of ``FACTOR_TILE``
samples, each from its own stream spawned from the seed, so the first M rows do not depend on
M. The model is evaluated ``chunk`` perturbations at a time (the memory plan's share of the
budget per the model's ``eval_bytes_per_set``, plus the B × P perturbations of a model without
``lowrank_apply``). The Gram costs M²·r²·(fan_in + fan_out) per matrix (or M²·fan_in·fan_out
from the matrices themselves where that is smaller and they fit a quarter of the budget), in
row blocks whose (r·rows) × (r·M) products fit a quarter of the budget; what grows with M
beyond it is the M × M Gram (as on the Gaussian Gram route), the N × O × M differences and
the kernel. Nothing grows with P but the factors and the model's own evaluation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from array_api_compat import device

from .._typing import Array, Namespace
from ..backends.random import Generator
from ..models.protocol import Bound, LowRankPerturbation, MatrixBlock
from .directions import ROW_TILE
from .plan import DEFAULT_BUDGET, chunk_rows

__all__ = ["Factors", "check", "check_model", "draw", "gram", "materialize", "weighted"]

#: first element of the factors' stream paths (the directions use 0-3)
_FACTORS = 16
#: samples per spawned stream of factors: few draws (a compiled program holds each), and
#: the first M rows do not depend on M
FACTOR_TILE = 8 * ROW_TILE
#: the estimators whose weight matrix the factors give (a Gram) or need not (a diagonal)
ESTIMATORS = ("unbiased", "plugin", "sketch")
#: the samplers low-rank perturbations take
SAMPLINGS = ("iid", "antithetic")
#: share of the budget for one row block of the Gram's factor products
GRAM_SHARE = 4


def check(spec: Any) -> None:
    """Refuse, before any work, the options low-rank perturbations do not take.

    Raises
    ------
    ValueError
        Explicit ``samples``, structured sampling, an estimator without a direction Gram or
        diagonal (``"directional"``), attention, ``route="stream"`` or an explicit
        ``variance_reduction`` (``"auto"`` applies none).
    """
    if spec.smoothing.perturbation != "lowrank":
        return
    est = spec.estimator

    def refuse(what: str) -> ValueError:
        return ValueError(f"perturbation='lowrank' {what}")

    if not isinstance(spec.samples, int):
        raise refuse("draws its own factors: give `samples` as a count, not (M, P) rows")
    if est.sampling not in SAMPLINGS:
        raise refuse(f"takes `sampling` 'iid' or 'antithetic'; got {est.sampling!r}")
    if est.name not in ESTIMATORS:
        raise refuse(f"takes `estimator` in {ESTIMATORS}; got {est.name!r}")
    if spec.attention is not None:
        raise refuse("takes no `attention`")
    if spec.resources.route == "stream":
        raise refuse("contracts through the Gram of its factors: `route` must be 'auto' or 'gram'")
    if est.variance_reduction not in ("auto", ()):
        raise refuse(
            "takes no `variance_reduction` (the reductions are the Gaussian family's): "
            "leave it 'auto' or 'none'"
        )


def check_model(model: Bound) -> None:
    """Raise ``ValueError`` (naming ``perturbation``) unless the model declares its weight
    matrices."""
    if not model.matrix_blocks:
        raise ValueError(
            "perturbation='lowrank' needs a model that declares its weight matrices "
            "(`matrix_blocks`: (start, fan_in, fan_out) of each, as nk.MLP does); use "
            "perturbation='gaussian' for this model"
        )


@dataclass(frozen=True)
class Factors:
    """Unit-scale factors of M perturbations: per matrix block ``left`` (M, r, fan_in) and
    ``right`` (M, r, fan_out), and ``rest`` (M, P_rest) for the other parameters."""

    blocks: tuple[MatrixBlock, ...]
    left: tuple[Array, ...]
    right: tuple[Array, ...]
    rest: Array
    rank: int

    def perturbation(self, start: int, stop: int, sigma: float) -> LowRankPerturbation:
        """Samples ``start:stop`` at scale ``sigma`` (negative: the mirrored perturbations)."""
        s = sigma / math.sqrt(self.rank)
        return LowRankPerturbation(
            tuple(s * a[start:stop, ...] for a in self.left),
            tuple(b[start:stop, ...] for b in self.right),
            sigma * self.rest[start:stop, :],
        )


def draw(
    xp: Namespace,
    seed: object,
    m: int,
    blocks: tuple[MatrixBlock, ...],
    num_params: int,
    rank: int,
    dtype: Any,
    dev: Any,
) -> Factors:
    """The factors of M perturbations, ``FACTOR_TILE`` samples per spawned stream."""
    gen = Generator(seed, xp=xp, device=dev)
    rest_size = num_params - sum(b.fan_in * b.fan_out for b in blocks)
    left: list[list[Array]] = [[] for _ in blocks]
    right: list[list[Array]] = [[] for _ in blocks]
    rest: list[Array] = []
    for i in range(-(-m // FACTOR_TILE)):
        rows = min(FACTOR_TILE, m - i * FACTOR_TILE)
        child = gen.spawn(_FACTORS, i)
        for j, block in enumerate(blocks):
            left[j].append(child.normal((rows, rank, block.fan_in), dtype=dtype))
            right[j].append(child.normal((rows, rank, block.fan_out), dtype=dtype))
        rest.append(child.normal((rows, rest_size), dtype=dtype))

    def cat(parts: list[Array]) -> Array:
        return parts[0] if len(parts) == 1 else xp.concat(parts, axis=0)

    return Factors(blocks, tuple(map(cat, left)), tuple(map(cat, right)), cat(rest), rank)


def _matrices(xp: Namespace, left: Array, right: Array) -> Array:
    """Σ_k a_k b_kᵀ of factors (B, r, fan_in) and (B, r, fan_out), flat: (B, fan_in·fan_out)."""
    e = xp.matmul(xp.permute_dims(left, (0, 2, 1)), right)  # (B, fan_in, fan_out)
    return xp.reshape(e, (e.shape[0], -1))


def materialize(
    xp: Namespace, blocks: tuple[MatrixBlock, ...], h: LowRankPerturbation, num_params: int
) -> Array:
    """The B × P perturbations of factored ones (for models without ``lowrank_apply``, a
    chunk at a time, and for tests)."""
    parts, pos, off = [], 0, 0
    rest = h.rest
    for block, a, c in zip(blocks, h.left, h.right, strict=True):
        if block.start > pos:
            parts.append(rest[:, off : off + block.start - pos])
            off += block.start - pos
        parts.append(_matrices(xp, a, c))
        pos = block.start + block.fan_in * block.fan_out
    if num_params > pos:
        parts.append(rest[:, off : off + num_params - pos])
    return parts[0] if len(parts) == 1 else xp.concat(parts, axis=1)


def gram(xp: Namespace, factors: Factors, acc: Any, budget: int) -> Array:
    """G = U Uᵀ of the unit-scale directions, (M, M), from the factors in blocks of rows."""
    r = factors.rank
    rest = xp.astype(factors.rest, acc, copy=False)
    m = rest.shape[0]
    acc_size = 4 if acc == xp.float32 else 8
    g = xp.matmul(rest, xp.permute_dims(rest, (1, 0)))
    for block, a, b in zip(factors.blocks, factors.left, factors.right, strict=True):
        a, b = xp.astype(a, acc, copy=False), xp.astype(b, acc, copy=False)
        size = block.fan_in * block.fan_out
        if size <= r * r * (block.fan_in + block.fan_out) and (
            m * size * acc_size <= budget // GRAM_SHARE
        ):  # the matrices themselves are smaller than the factor products
            e = _matrices(xp, a, b)
            g = g + xp.matmul(e, xp.permute_dims(e, (1, 0))) / float(r)
            continue
        a2, b2 = xp.reshape(a, (m * r, block.fan_in)), xp.reshape(b, (m * r, block.fan_out))
        a2t, b2t = xp.permute_dims(a2, (1, 0)), xp.permute_dims(b2, (1, 0))
        step = max(1, (budget // GRAM_SHARE) // (3 * r * r * m * acc_size))
        rows = []
        for m0 in range(0, m, step):
            m1 = min(m0 + step, m)
            prod = xp.matmul(a2[m0 * r : m1 * r, :], a2t) * xp.matmul(b2[m0 * r : m1 * r, :], b2t)
            if r > 1:
                prod = xp.sum(xp.reshape(prod, (m1 - m0, r, m, r)), axis=(1, 3))
            rows.append(prod)
        part = rows[0] if len(rows) == 1 else xp.concat(rows, axis=0)
        g = g + part / float(r)
    return g


def weighted(problem: Any) -> tuple[Array, Array, Array, Array, Array]:
    """The weighted differences and sample weights of both sides and the weight matrix W of
    a :class:`~nntk_array._mc.kernel.Problem` with ``perturbation="lowrank"``:
    ``(a1, α1, a2, α2, W)`` for the kernel's contraction."""
    xp, model, spec = problem.xp, problem.model, problem.spec
    theta, acc, x = problem.theta, problem.acc, problem.inputs.x
    sigma, rank = spec.smoothing.sigma, spec.smoothing.rank
    m, n = problem.dirs.num_rows, x.shape[0]
    budget = spec.resources.memory_budget or DEFAULT_BUDGET
    dev = device(theta)
    factors = draw(xp, spec.seed, m, model.matrix_blocks, model.num_params, rank, theta.dtype, dev)
    evaluate = _evaluator(xp, model, theta, x)
    itemsize = 4 if theta.dtype == xp.float32 else 8
    # the factor forward goes layer by layer: (B, N, fan_out) activations per layer
    widest = max(block.fan_out for block in model.matrix_blocks)
    per_set = max(model.eval_bytes_per_set(n, itemsize), 3 * n * widest * itemsize)
    if model.lowrank_apply is None:  # a chunk's perturbations and parameter sets
        per_set += 2 * model.num_params * itemsize
    # the factor forward is one shared-weight GEMM over all B·N rows: as many rows as fit
    wide = model.lowrank_apply is not None
    chunk = chunk_rows(spec.resources.samples_per_call, budget, per_set, m, wide=wide)
    antithetic = spec.estimator.sampling == "antithetic"
    base = None if antithetic else model.evaluate(theta[None, :], x)
    raw = []
    for c0 in range(0, m, chunk):
        c1 = min(c0 + chunk, m)
        d = evaluate(factors.perturbation(c0, c1, sigma))
        d = d - (evaluate(factors.perturbation(c0, c1, -sigma)) if base is None else base)
        raw.append(xp.permute_dims(xp.astype(d, acc, copy=False), (1, 2, 0)))
    w = (0.5 if antithetic else 1.0) / sigma
    a = (raw[0] if len(raw) == 1 else xp.concat(raw, axis=2)) * (w / m)
    alpha = xp.full((n, m), 1.0 / m, dtype=acc, device=dev)
    est = problem.est
    if est.diagonal:
        weights = xp.full((m,), 1.0, dtype=acc, device=dev)
    else:
        weights = gram(xp, factors, acc, budget)
        if est.name == "unbiased":  # pairs of different samples only
            ints = xp.__array_namespace_info__().default_dtypes(device=dev)["integral"]
            idx = xp.arange(m, dtype=ints, device=dev)
            weights = xp.where(idx[:, None] != idx[None, :], weights, 0.0)
    n1, n2 = problem.inputs.n1, problem.inputs.n2
    a1, al1 = a[:n1, ...], alpha[:n1, ...]
    if n2 is None:
        return a1, al1, a1, al1, weights
    return a1, al1, a[n1 : n1 + n2, ...], alpha[n1 : n1 + n2, ...], weights


def _evaluator(
    xp: Namespace, model: Bound, theta: Array, x: Array
) -> Callable[[LowRankPerturbation], Array]:
    """The model at θ + h for factored h: its own ``lowrank_apply``, or the B × P
    perturbations formed from the factors and one batched ``evaluate``."""
    fast = model.lowrank_apply
    if fast is not None:
        return lambda h: fast(theta, x, h)
    blocks, p = model.matrix_blocks, model.num_params
    assert blocks is not None
    return lambda h: model.evaluate(theta[None, :] + materialize(xp, blocks, h, p), x)
