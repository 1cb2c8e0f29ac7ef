"""The memory plan: every chunk size, route and memory constant of the kernels, in one place.

The plan depends on shapes and options only, never on values, so it is made before anything
is drawn or evaluated, and the numbers a call returns do not depend on it (directions are
drawn in fixed tiles, see :mod:`.directions`).

How a budget B (bytes, default 384 MiB) is shared, and what grows beyond it:

- model evaluations: a quarter (``EVAL_SHARE``), at most ``CHUNK_BYTES``, for one chunk's
  temporaries, as the model reports them per parameter set (``eval_bytes_per_set``);
- drawn directions: an eighth (``DRAW_SHARE``) for one drawn block of rows, counted with the
  smoothing form's transient full-size copies;
- the Gram route: a column block of the directions (an eighth of the budget, at least
  M × ``COL_TILE``) and the M × M
  matrices (``GRAM_MATRICES`` of them: the Gram, its masked copy, one product) — these grow
  as M², outside the budget, so ``route="auto"`` takes the stream route where it can once
  they exceed the budget;
- the stream route: an eighth (``STREAM_SHARE``) for a block of direction rows, plus the
  (N, O, ``COL_TILE``) products; with standard errors another eighth for the per-batch
  parts of those products (``stream_window`` batches at a time);
- what is left caches random tiles, so small problems draw each number once;
- a column sweep (a model with ``apply_by_columns``, on the Gram route, where U does not fit
  the cache): what the model holds for all M perturbed evaluations at once
  (``column_bytes``), the M × M matrices, three tile columns of U (a block's leftover, its
  overhang and room for blocks falling differently across tiles) and one column block of U
  (and its copy in the accumulation dtype, if that differs) in the rest of the budget, at
  least an eighth of it (``SWEEP_SHARE``); U is then drawn once, its Gram summed from the
  blocks that perturb the model, and the larger the blocks the fewer passes over the
  activations;
- structured (orthogonal) groups: half (``STRUCTURED_SHARE``) for one group's QR.

Beyond the budget, every route keeps the N × O × M differences (and with standard errors
their product with W on the Gram route) and the N1 × N2 kernel, with standard errors
``JACKKNIFE_BATCHES`` more N1 × N2 blocks (the leave-one-batch-out numerators).

Independent groups of samples: ``JACKKNIFE_BATCHES`` for standard errors, 2 for the
U-statistic (which pairs only rows of different groups), else 1.

Route costs (flops per parameter; :func:`_stream_pays`): the Gram, M² (its products with
the differences, N·M²·O, are small next to it when O ≪ P); streaming, 2·N·M (the products
ã U_c) + 2·N1·N2 (their products); standard errors add B·N1·N2 on the stream route (one
leave-one-batch-out product per batch, B = ``JACKKNIFE_BATCHES``) and twice the 2·N·M when
the batches' parts do not fit at once (each later window regenerates its rows), while the
Gram route's jackknife works on slices of ã W, about 3·N1·N2·M·O, and is not counted.

The exact local NTK is computed in blocks of inputs (:func:`ntk_blocks`) within a budget B
(default ``NTK_BLOCK_BYTES``): a block's factors (``per_input`` numbers per input: the MLP's
per-layer factors, or an autodiff Jacobian's O × P) and the temporaries of computing them,
twice when the factors are not cached (a row block's are held while a column block's are
computed), plus the products of one block pair, fit in B. Autodiff temporaries, measured on
the CNN of ``benchmarks/compare_interop.py`` (peak resident memory of the first call at a
block size, torch 2.13 CPU): ``vmap(jacrev)`` per input holds 2.75x the Jacobian at 64 and
256 inputs (``JACOBIAN_TEMPORARIES`` = 2 extra), ``jacrev`` of a whole block of b inputs
about b·0.8x (53x at b = 64: every one of its b·O backward passes runs through all b inputs).
Symmetric kernels use up to ``SYMMETRIC_BLOCKS`` row blocks of at least
``MIN_SYMMETRIC_BLOCK`` rows so the mirrored blocks save flops while each product stays large.

The autodiff Jacobian's mode (``jacobian_mode`` of the model protocol): for a model that
treats its inputs independently, one input at a time under ``vmap``, reverse mode (O
backward passes per input) unless P < O, then forward (P forward passes); measured on that
CNN (P = 5,050, O = 10, N = 256, 2 CPU cores): ``vmap(jacrev)`` 0.1 s, ``jacrev`` of blocks
of 4 to 64 inputs 5-7 s, ``jacfwd`` of the block 83 s. A model whose outputs mix its inputs
(batch statistics) gets ``jacrev`` of the whole block, as before. NTK-vector products
(``jvp`` of ``vjp``) cost a full pass per kernel column and output, N² O work against the
Jacobians' N O, so they are not a route here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .directions import COL_TILE, ROW_TILE

__all__ = [
    "DEFAULT_BUDGET",
    "JACKKNIFE_BATCHES",
    "GradPlan",
    "KernelPlan",
    "chunk_rows",
    "drawn_rows",
    "grad_plan",
    "kernel_plan",
    "ntk_blocks",
    "streamable",
]

DEFAULT_BUDGET = 384 * 2**20
EVAL_SHARE = 4
#: evaluation temporaries per chunk: chunks that stay in the CPU caches run the activations'
#: elementwise passes several times faster than larger ones (the 1-256-1 ReLU net, N = 320,
#: float64, NumPy: 0.77 s at 2 sets per chunk against 2.3 s at 32), and the large layers'
#: products are still big GEMMs at one set per chunk
CHUNK_BYTES = 8 * 2**20
DRAW_SHARE = 8
STREAM_SHARE = 8
SWEEP_SHARE = 8
#: what drawing a row of U once more costs per parameter, in the Gram's M² multiply-adds: a
#: normal takes 9 ns on this project's 2 CPU cores (tiles drawn on both), where products run
#: at 85 G multiply-adds/s: 765, doubled because NumPy's Gram is a symmetric product (half
#: of M²). Measured, MLP 64-512-512-512-1, NumPy, with column blocks of an eighth of the
#: budget: N = 64, M = 1024, 12.4-13.6 s on the Gram route with a sweep against 17.6-18.0 s
#: streaming; N = 128, M = 512, 7.1-8.2 s against 8.8-10.0 s
SWEEP_DRAW_COST = 1536
GRAM_ROW_SHARE = 4
STRUCTURED_SHARE = 2
GRAM_MATRICES = 3
JACKKNIFE_BATCHES = 20
U_STATISTIC_GROUPS = 2
QR_COPIES = 3  # the Gaussian block, Q and the scaled rows of one orthogonal group

NTK_BLOCK_BYTES = 256 * 2**20
STRUCTURED_TEMPORARIES = 1  # the MLP's forward/backward pass: about one more set of factors
JACOBIAN_TEMPORARIES = 2  # vmap(jacrev) per input, measured (see above)
BATCH_JACOBIAN_TEMPORARY = 1  # jacrev of a block of b inputs: b more Jacobians' worth
NTK_MAX_BLOCK = 4096
SYMMETRIC_BLOCKS = 4
MIN_SYMMETRIC_BLOCK = 256


@dataclass(frozen=True)
class KernelPlan:
    """Decisions for one Monte Carlo call.

    ``chunk`` perturbations per model call (``wide_chunk`` for the variance-reduced engine,
    whose per-chunk (N, F) sums favour chunks as large as the budget allows, measured on the
    1-256-1 net at N = 320), ``draw`` rows of directions drawn at once,
    ``cache_bytes`` for random tiles, ``group_size`` rows per group of dependent samples,
    ``stream`` whether to contract by column streaming instead of the Gram, the row blocks
    of the two contraction routes, and ``stream_window`` jackknife batches whose parts of a
    column tile's products the stream route holds at once. ``sweep`` is the numbers of one
    column block of a column sweep, ``0`` where the call takes none.
    """

    chunk: int
    wide_chunk: int
    draw: int
    cache_bytes: int
    group_size: int
    stream: bool
    gram_rows: int
    stream_rows: int
    stream_window: int
    sweep: int = 0


@dataclass(frozen=True)
class GradPlan:
    """Decisions for one nonlocal gradient: ``chunk`` perturbations per model call, ``draw``
    rows drawn at once, ``group_size`` rows per group of dependent samples."""

    chunk: int
    draw: int
    group_size: int


def chunk_rows(
    samples_per_call: int | None, budget: int, per_set: int, num_rows: int, *, wide: bool = False
) -> int:
    """Parameter sets per batched evaluation: ``samples_per_call``, or as many as keep the
    evaluation temporaries within ``CHUNK_BYTES`` (``wide``: within a quarter of the budget
    only), rounded to divide or fill whole row tiles."""
    if samples_per_call is not None:
        return min(samples_per_call, num_rows)
    share = budget // EVAL_SHARE if wide else min(budget // EVAL_SHARE, CHUNK_BYTES)
    rows = max(1, share // max(per_set, 1))
    if rows >= ROW_TILE:
        rows -= rows % ROW_TILE
    else:  # a power of two divides the tile height
        rows = 1 << (rows.bit_length() - 1)
    return min(rows, num_rows)


def drawn_rows(budget: int, row_bytes: int) -> int:
    """Rows of directions drawn at once: whole tiles, about an eighth of the budget (rows of
    ``row_bytes`` including their transient copies), at least one tile."""
    return ROW_TILE * max(1, (budget // DRAW_SHARE) // max(row_bytes * ROW_TILE, 1))


def _group_size(m: int, p: int, n_groups: int, orthogonal: bool, budget: int, itemsize: int) -> int:
    size = -(-m // n_groups)
    if orthogonal:  # at most P orthogonal rows, and one group's QR within the budget
        size = min(size, p, max(1, (budget // STRUCTURED_SHARE) // (QR_COPIES * itemsize * p)))
    return max(1, size)


def _stream_pays(
    m: int, n1: int, n2: int, symmetric: bool, batches: int, window: int, *, sweep: bool
) -> bool:
    """Whether streaming, ~(2 N M passes + (2 + B) N1 N2) P flops with B jackknife
    ``batches`` (0 without standard errors), is cheaper than the Gram, ~M² P; with a column
    ``sweep`` the Gram route draws U once and the stream route twice (``SWEEP_DRAW_COST``)."""
    n_all = n1 if symmetric else n1 + n2
    passes = 1 if window >= batches else 2
    redraw = SWEEP_DRAW_COST * m if sweep else 0
    return 2 * n_all * m * passes + (2 + batches) * n1 * n2 + redraw < m * m


def streamable(estimator: str, sampling: str, *, explicit: bool) -> bool:
    """Whether the stream route can be taken: it needs regenerable columns of the
    directions and independent rows (a Gram-form estimator, iid, antithetic or explicit)."""
    return estimator in ("plugin", "unbiased") and (explicit or sampling in ("iid", "antithetic"))


def kernel_plan(
    *,
    budget: int,
    samples_per_call: int | None,
    m: int,
    p: int,
    n1: int,
    n2: int,
    n_out: int,
    itemsize: int,
    acc_size: int,
    per_set: int,
    copies: int,
    estimator: str,
    sampling: str,
    explicit: bool,
    route: str,
    stderr: bool,
    symmetric: bool,
    sweep_bytes: int | None = None,
) -> KernelPlan:
    """The plan of a nonlocal kernel (see the module docstring for the constants);
    ``sweep_bytes`` is what the model holds in a column sweep (``None``: it cannot sweep).

    Raises
    ------
    ValueError
        ``route="stream"`` where it cannot be taken (structured sampling or a diagonal
        estimator).
    """
    row_bytes = p * itemsize * copies
    draw = drawn_rows(budget, row_bytes)
    chunk = chunk_rows(samples_per_call, budget, per_set, m)
    if samples_per_call is None:
        chunk = min(chunk, draw)
    eval_bytes = draw * row_bytes + chunk * per_set
    can_stream = streamable(estimator, sampling, explicit=explicit)
    if route == "stream" and not can_stream:
        raise ValueError(
            "route='stream' needs estimator 'plugin' or 'unbiased' and column-regenerable "
            "directions (sampling 'iid', 'antithetic' or explicit samples)"
        )
    batches = JACKKNIFE_BATCHES if stderr else 0
    tile_bytes = (n1 if symmetric else n1 + n2) * n_out * min(COL_TILE, p) * acc_size
    window = min(max(batches, 1), max(1, (budget // STREAM_SHARE) // tile_bytes))
    matrices = GRAM_MATRICES * m * m * acc_size
    gram_route = max(budget // (2 * GRAM_ROW_SHARE), COL_TILE * m * acc_size) + matrices
    spare = budget - (sweep_bytes or 0) - matrices - 3 * m * COL_TILE * itemsize
    can_sweep = (
        sweep_bytes is not None
        and route != "stream"
        and samples_per_call is None
        and not explicit
        and estimator in ("plugin", "unbiased")
        and sampling == "iid"
        # else the Gram route's cache holds U and draws each number once already
        and m * p * itemsize > budget - max(eval_bytes, gram_route)
        and spare >= budget // SWEEP_SHARE
    )
    stream = route == "stream" or (
        route == "auto"
        and can_stream
        and (
            matrices > budget
            or _stream_pays(m, n1, n2, symmetric, batches, window, sweep=can_sweep)
        )
    )
    stream_rows = max(1, (budget // STREAM_SHARE) // (COL_TILE * acc_size))
    if stream:
        gram_bytes = budget // STREAM_SHARE + 2 * (n1 + n2) * n_out * COL_TILE * acc_size
        gram_bytes += window * tile_bytes if stderr else 0
    else:
        gram_bytes = gram_route
    n_groups = JACKKNIFE_BATCHES if stderr else U_STATISTIC_GROUPS if estimator == "unbiased" else 1
    return KernelPlan(
        chunk=chunk,
        wide_chunk=chunk_rows(samples_per_call, budget, per_set, m, wide=True),
        draw=draw,
        cache_bytes=max(0, budget - max(eval_bytes, gram_bytes)),
        group_size=_group_size(m, p, n_groups, sampling == "orthogonal", budget, itemsize),
        stream=stream,
        gram_rows=max(1, (budget // GRAM_ROW_SHARE) // (p * acc_size)),
        stream_rows=stream_rows,
        stream_window=window,
        sweep=spare // (itemsize + (acc_size if acc_size != itemsize else 0))
        if can_sweep and not stream
        else 0,
    )


def grad_plan(
    *,
    budget: int,
    samples_per_call: int | None,
    m: int,
    p: int,
    n_out: int,
    itemsize: int,
    copies: int,
    stderr: bool,
) -> GradPlan:
    """The plan of a nonlocal gradient: chunks of perturbations against the (F, P) running
    sums; no random tiles are cached (each row is used once)."""
    per_set = itemsize * (4 * p + 4 * n_out)
    n_groups = JACKKNIFE_BATCHES if stderr else 1
    return GradPlan(
        chunk=chunk_rows(samples_per_call, budget, per_set, m),
        draw=drawn_rows(budget, p * itemsize * copies),
        group_size=max(1, min(-(-m // n_groups), p)),  # structured: at most P rows a group
    )


def ntk_temporaries(mode: str | None) -> int:
    """Temporaries of forming one input's factors, in units of its factors (``"batch"``: per
    input of the block, so multiply by the block size)."""
    if mode is None:
        return STRUCTURED_TEMPORARIES
    return BATCH_JACOBIAN_TEMPORARY if mode == "batch" else JACOBIAN_TEMPORARIES


def ntk_blocks(
    batch_size: int | None,
    n1: int,
    n2: int | None,
    *,
    n_out: int,
    full: bool,
    per_input: int,
    itemsize: int,
    mode: str | None = None,
    budget: int | None = None,
) -> tuple[int, bool]:
    """(inputs per block, whether every block's factors are kept) of the exact local NTK;
    ``n2`` is ``None`` for a symmetric kernel, ``mode`` the Jacobian mode of the autodiff
    route (``None`` for structured terms), ``budget`` the bytes for one block's factors and
    temporaries and one block pair's products (default ``NTK_BLOCK_BYTES``).

    Raises
    ------
    ValueError
        Without ``batch_size``: not even one input per block fits in ``budget``.
    """
    limit = NTK_BLOCK_BYTES if budget is None else budget
    held = per_input * itemsize  # one input's factors
    pair = (n_out * n_out if full else 1) * 4 * itemsize  # one kernel entry's products

    def block_bytes(b: int, cache: bool) -> int:
        scratch = ntk_temporaries(mode) * (b if mode == "batch" else 1)
        factors = (n1 + (n2 or 0)) * held if cache else 2 * b * held
        return factors + b * held * scratch + b * b * pair

    if batch_size is None:
        if block_bytes(1, cache=False) > limit:
            raise ValueError(
                f"one input's NTK factors and their temporaries take about "
                f"{block_bytes(1, cache=False):,} bytes ({per_input:,} numbers per input "
                f"for a {'Jacobian' if mode else 'structured'} term), more than "
                f"`memory_budget` = {limit:,}; raise `memory_budget` (or pass "
                "`batch_size`, which bounds nothing)"
            )
        batch_size = min(
            NTK_MAX_BLOCK,
            math.isqrt(limit // pair),
            max(1, limit // (held * (2 + ntk_temporaries(mode)))),
        )
        if n2 is None:  # only the upper block triangle is computed: 10/16 of it at 4 blocks
            quarter = -(-n1 // SYMMETRIC_BLOCKS)
            batch_size = min(batch_size, max(MIN_SYMMETRIC_BLOCK, quarter))
        while batch_size > 1 and block_bytes(batch_size, cache=False) > limit:
            batch_size = max(1, batch_size * 3 // 4)
    cache = block_bytes(batch_size, cache=True) <= limit
    return batch_size, cache
