"""The nonlocal kernel pipeline: validated options and inputs → plan → differences →
sample weights → contraction. In-memory calls run :func:`compute`; the Dask graph runs the
same steps (:func:`setup`, :func:`rows`, :func:`scores`, :func:`sample_weights`,
:func:`weight_matrix`, :func:`contract`) in block tasks.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from array_api_compat import array_namespace, device

from .._typing import Array, Namespace
from .._validate import check_finite
from .._xp import resolve
from ..backends.dtypes import require_dtype
from ..backends.inplace import writeable
from ..backends.random import host_draws
from ..models.protocol import Bound, bind, check_inputs
from . import attention as att_mc
from . import lowrank, reduced
from .differences import Differences, chunks, collect, evaluator, swept
from .directions import Directions, check_explicit, make_directions
from .estimators import (
    Estimator,
    batch_bounds,
    dropped_denominators,
    dropped_numerators,
    estimator,
    jackknife,
    quad,
    ratio,
    stream_numerator,
    weigh,
)
from .plan import DEFAULT_BUDGET, JACKKNIFE_BATCHES, KernelPlan, kernel_plan
from .smoothing import Form, Radial, make_form

__all__ = [
    "Contraction",
    "KernelSpec",
    "Problem",
    "compute",
    "contract",
    "contraction",
    "rows",
    "sample_weights",
    "scores",
    "setup",
    "stream",
    "weight_matrix",
]


@dataclass(frozen=True)
class KernelSpec:
    """The validated options of one nonlocal kernel call (independent of the inputs)."""

    smoothing: Any  # nk.Smoothing
    estimator: Any  # nk.Estimator
    resources: Any  # nk.Resources
    samples: int | Array
    seed: object
    attention: Any  # nk.Attention or None
    full: bool
    stderr: bool


@dataclass(frozen=True)
class Inputs:
    """The rows a call evaluates: x1 (``n1`` rows), then x2 (``n2``, ``None`` for a symmetric
    kernel), then the attention's reference inputs when given; ``ref`` the rows the attention
    scores read and ``targets`` theirs."""

    x: Array
    n1: int
    n2: int | None
    ref: slice
    targets: Array | None


@dataclass(frozen=True)
class Problem:
    """A validated call: the namespace, the bound model, its inputs, the smoothing form, the
    estimator, the plan, the directions and the accumulation dtype."""

    xp: Namespace
    theta: Array
    model: Bound
    inputs: Inputs
    form: Form
    est: Estimator
    plan: KernelPlan
    dirs: Directions
    acc: Any
    spec: KernelSpec
    reduction: reduced.Reduction | None = None

    @property
    def groups(self) -> list[tuple[int, int]]:
        return self.dirs.groups


def _check_combination(spec: KernelSpec) -> None:
    est, att = spec.estimator, spec.attention
    if est.name == "directional" and (
        att is not None or est.sampling == "antithetic" or spec.smoothing.form != "gaussian"
    ):
        raise ValueError(
            "estimator='directional' is Gaussian smoothing along directions with symmetric "
            "Gauss-Hermite nodes: it takes no attention, antithetic sampling or paper form"
        )
    if att is not None and att.score == "loss" and est.sampling == "antithetic":
        raise ValueError(
            "attention score 'loss' compares L(θ+h) with L(θ), but sampling='antithetic' "
            "evaluates θ+h and θ−h only: use sampling='iid', 'orthogonal' or 'qmc'"
        )
    lowrank.check(spec)


def setup(f: Any, theta: Array, x1: Array, x2: Array | None, spec: KernelSpec) -> Problem:
    """Validate the inputs against the model and options and make every decision that
    depends on shapes (not values): the inputs to evaluate, the form, the estimator, the plan
    and the directions. Nothing is evaluated or drawn here."""
    samples = None if isinstance(spec.samples, int) else spec.samples
    att = spec.attention
    xp, (theta, x1, x2, samples, targets, reference) = resolve(
        theta=theta,
        x1=x1,
        x2=x2,
        samples=samples,
        **{
            "attention.targets": None if att is None else att.targets,
            "attention.reference": None if att is None else att.reference,
        },
    )
    _check_combination(spec)
    model = bind(f, xp, theta, x1, x2)
    if spec.smoothing.perturbation == "lowrank":
        lowrank.check_model(model)
    if samples is not None:
        check_explicit(samples, model.num_params, spec.estimator.sampling, spec.seed)
    check_finite(
        xp,
        theta=theta,
        x1=x1,
        x2=x2,
        samples=samples,
        **{"attention.targets": targets, "attention.reference": reference},
    )
    inputs = _inputs(xp, f, x1, x2, reference, targets, model.num_outputs)
    est_spec = spec.estimator
    acc = xp.float64 if est_spec.accumulate == "float64" else theta.dtype
    require_dtype(xp, acc, device(theta), what="accumulate='float64'")
    m = spec.samples if samples is None else samples.shape[0]
    form = make_form(spec.smoothing, est_spec, model.num_params)
    itemsize = 4 if theta.dtype == xp.float32 else 8
    plan = kernel_plan(
        budget=spec.resources.memory_budget or DEFAULT_BUDGET,
        samples_per_call=spec.resources.samples_per_call,
        m=m,
        p=model.num_params,
        n1=inputs.n1,
        n2=inputs.n1 if inputs.n2 is None else inputs.n2,
        n_out=model.num_outputs,
        itemsize=itemsize,
        acc_size=4 if acc == xp.float32 else 8,
        per_set=model.eval_bytes_per_set(inputs.x.shape[0], itemsize),
        copies=form.copies,
        estimator=est_spec.name,
        sampling=est_spec.sampling,
        explicit=samples is not None,
        route=spec.resources.route,
        stderr=spec.stderr,
        symmetric=inputs.n2 is None,
        sweep_bytes=_sweep_bytes(xp, spec, model, m, inputs.x.shape[0], itemsize, device(theta)),
    )
    dirs = make_directions(
        xp,
        m if samples is None else samples,
        est_spec.sampling,
        spec.seed,
        num_params=model.num_params,
        dtype=theta.dtype,
        device=device(theta),
        group_size=plan.group_size,
        cache_bytes=plan.cache_bytes,
    )
    est = estimator(est_spec.name, paper=spec.smoothing.form == "paper")
    needed = max(est.min_groups, 2 if spec.stderr else 1)
    if len(dirs.groups) < needed:
        raise ValueError(
            f"estimator={est.name!r}{' with return_stderr' if spec.stderr else ''} needs at "
            f"least {needed} independent samples (or groups); got samples={m}"
        )
    reduction = reduced.choose(
        est_spec.variance_reduction,
        model,
        xp,
        applicable=_reducible(spec, model.num_outputs),
        n_rows=inputs.x.shape[0],
        budget=spec.resources.memory_budget or DEFAULT_BUDGET,
        acc_size=4 if acc == xp.float32 else 8,
    )
    return Problem(xp, theta, model, inputs, form, est, plan, dirs, acc, spec, reduction)


def _sweep_bytes(
    xp: Namespace, spec: KernelSpec, model: Bound, m: int, n: int, itemsize: int, dev: Any
) -> int | None:
    """What the model holds sweeping U's columns for all M perturbations at ``n`` inputs, or
    ``None`` where no sweep serves the call: the model has no ``apply_by_columns`` (or
    declines, ``column_bytes`` ``None``), the form is not the Gaussian one, attention weighs
    the samples, the library's arrays cannot be updated in place (the sweep adds each
    block's share into the activations), or its draws are queued on an accelerator, where a
    second draw of U costs little next to the products a sweep gives up."""
    if (
        model.apply_by_columns is None
        or model.column_bytes is None
        or spec.smoothing.form != "gaussian"
        or spec.smoothing.perturbation != "gaussian"
        or spec.attention is not None
        or not writeable(xp, dev)
        or not host_draws(xp, dev)
    ):
        return None
    size = model.column_bytes(m, n, itemsize)
    return None if size is None else int(size)


def _reducible(spec: KernelSpec, n_out: int) -> str | None:
    """Why no variance reduction applies to a call, or ``None`` if one can."""
    est = spec.estimator
    if spec.smoothing.perturbation != "gaussian":
        return "perturbation='gaussian'"
    if est.name != "unbiased":
        return "estimator='unbiased'"
    if spec.smoothing.form != "gaussian":
        return "form='gaussian'"
    if spec.attention is not None:
        return "no attention (the sample weights would differ per block)"
    if est.sampling not in ("iid", "antithetic"):
        return "sampling='iid' or 'antithetic'"
    if spec.full and n_out > 1:
        return "outputs='mean' (or a model with one output)"
    return None


def _inputs(
    xp: Namespace,
    f: Any,
    x1: Array,
    x2: Array | None,
    reference: Array | None,
    targets: Array | None,
    n_out: int,
) -> Inputs:
    """x1, x2 and the reference inputs as one array of rows, and where each part lies."""
    n1 = x1.shape[0]
    n2 = None if x2 is None else x2.shape[0]
    parts = [x1] if x2 is None else [x1, x2]
    ref = slice(0, n1)
    if reference is not None:
        check_inputs(f, x1, **{"attention.reference": reference})
        start = n1 + (n2 or 0)
        ref = slice(start, start + reference.shape[0])
        parts.append(reference)
    n_ref = ref.stop - ref.start
    if targets is not None and tuple(targets.shape) not in ((n_ref,), (n_ref, n_out)):
        raise ValueError(
            f"`attention.targets` must have shape ({n_ref},) or ({n_ref}, {n_out}) to match "
            f"the reference inputs; got {tuple(targets.shape)}"
        )
    x = parts[0] if len(parts) == 1 else xp.concat(parts, axis=0)
    return Inputs(x, n1, n2, ref, targets)


def rows(problem: Problem, x: Array, *, attention: bool) -> Differences:
    """The differences D (n, O, M) of the inputs ``x`` under all M perturbations (with the
    norms the attention scores need when ``attention``)."""
    needs_norms = attention or (problem.est.diagonal and isinstance(problem.form, Radial))

    evaluate, compiled = evaluator(problem.model, problem.xp, x)
    parts = chunks(
        evaluate,
        problem.theta,
        problem.dirs,
        problem.form,
        # a compiled forward fuses its elementwise passes: cache-sized chunks would only
        # multiply the per-chunk dispatch
        chunk=problem.plan.wide_chunk if compiled else problem.plan.chunk,
        draw=problem.plan.draw,
        acc=problem.acc,
        norms=needs_norms,
        keep_h=False,
    )
    return collect(parts, xp=problem.xp, acc=problem.acc, norms=needs_norms)


def scores(
    problem: Problem,
    att: Any,
    diffs: Differences,
    x: Array,
    ref: slice,
    num_ref: int,
    targets: Array | None,
) -> Array | None:
    """This block's share of the attention scores (rows ``ref`` of ``x`` are reference
    inputs, of ``num_ref`` in all; ``targets`` theirs) for the attention spec ``att``."""
    xp = problem.xp
    assert diffs.norms is not None
    base = tg = None
    if att.score == "loss" and ref.stop > ref.start:
        out = problem.model.evaluate(problem.theta[None, :], x[ref, ...])[0, ...]
        base = xp.astype(out, problem.acc, copy=False)
        assert targets is not None  # the loss score's targets were validated at setup
        tg = xp.astype(targets if targets.ndim == 2 else targets[:, None], problem.acc, copy=False)
    return att_mc.scores(
        att,
        xp,
        diffs.raw,
        diffs.norms.h_sq,
        problem.form.sigma,
        ref=ref,
        num_ref=num_ref,
        base_ref=base,
        targets=tg,
    )


def sample_weights(problem: Problem, att: Any, total_scores: Array | None, n: int) -> Array:
    """α (n, M): uniform 1/M without attention (``att`` None), else the softmax of the
    summed scores."""
    xp, m = problem.xp, problem.dirs.num_rows
    if att is None:
        return xp.full((n, m), 1.0 / m, dtype=problem.acc, device=device(problem.theta))
    return att_mc.normalize(att, xp, total_scores, n)


def weight_matrix(problem: Problem, diffs: Differences | None) -> Array:
    """W of the bilinear form: the Gram (masked off-group for the U-statistic) or a diagonal.

    Only the diagonal estimators read ``diffs``; the Gram comes from the directions alone.
    """
    return problem.est.weight_matrix(
        problem.xp, problem.dirs, diffs, problem.acc, problem.plan.gram_rows
    )


@dataclass(frozen=True)
class Contraction:
    """What turning two blocks of weighted differences into a kernel block needs: small, so
    the Dask graph ships it to its pair tasks instead of setting the problem up again."""

    est: Estimator
    groups: list[tuple[int, int]]
    full: bool
    stderr: bool
    dtype: Any

    @property
    def batches(self) -> list[tuple[int, int]]:
        """The jackknife batches of samples (none without standard errors)."""
        return batch_bounds(self.groups, JACKKNIFE_BATCHES) if self.stderr else []


def contraction(problem: Problem) -> Contraction:
    """The :class:`Contraction` of a problem."""
    spec = problem.spec
    return Contraction(problem.est, problem.groups, spec.full, spec.stderr, problem.theta.dtype)


def _finish(
    c: Contraction, xp: Namespace, num: Array, al1: Array, al2: Array, dropped: Iterable[Array]
) -> Array | tuple[Array, Array]:
    """The kernel from its numerator, and with standard errors the jackknife over the
    numerators ``dropped`` of each batch left out."""
    den = c.est.denominator(xp, al1, al2, c.groups)
    kernel = xp.astype(ratio(xp, num, den, c.full), c.dtype, copy=False)
    if not c.stderr:
        return kernel
    dens = dropped_denominators(xp, c.est, al1, al2, c.groups, den, c.batches)
    return kernel, xp.astype(jackknife(xp, dropped, dens, c.full), c.dtype, copy=False)


def contract(
    c: Contraction, a1: Array, al1: Array, a2: Array, al2: Array, w: Array
) -> Array | tuple[Array, Array]:
    """The kernel block (and standard error) of two blocks of weighted differences."""
    xp = array_namespace(a1, a2, w)
    y1 = weigh(xp, a1, w)
    num = quad(xp, y1, None, a2, c.full)
    if not c.stderr:
        return _finish(c, xp, num, al1, al2, [])
    y2 = y1 if a2 is a1 else weigh(xp, a2, w)
    dropped = dropped_numerators(xp, a1, y1, a2, y2, w, num, c.batches, c.full)
    return _finish(c, xp, num, al1, al2, dropped)


def compute(problem: Problem) -> Array | tuple[Array, Array]:
    """The whole kernel in memory: differences of all inputs, weights, one contraction."""
    if problem.reduction is not None:
        return reduced.compute(problem)
    if problem.spec.smoothing.perturbation == "lowrank":
        return contract(contraction(problem), *lowrank.weighted(problem))
    att, inputs = problem.spec.attention, problem.inputs
    n1, n2, x = inputs.n1, inputs.n2, inputs.x
    if problem.plan.sweep:
        diffs = swept(
            problem.model,
            problem.theta,
            x,
            problem.dirs,
            problem.form,
            acc=problem.acc,
            block=problem.plan.sweep,
        )
    else:
        diffs = rows(problem, x, attention=att is not None)
    a = diffs.raw * diffs.weights
    s = None
    if att is not None:
        num_ref = inputs.ref.stop - inputs.ref.start
        s = scores(problem, att, diffs, x, inputs.ref, num_ref, inputs.targets)
    n_rows = n1 + (n2 or 0)
    alpha = sample_weights(problem, att, s, x.shape[0])[:n_rows, ...]
    a = a[:n_rows, ...] * alpha[:, None, :]
    a1, al1 = a[:n1, ...], alpha[:n1, ...]
    a2, al2 = (a1, al1) if n2 is None else (a[n1:, ...], alpha[n1:, ...])
    c = contraction(problem)
    if not problem.plan.stream:
        return contract(c, a1, al1, a2, al2, weight_matrix(problem, diffs))
    return stream(problem, c, a1, al1, a2, al2, symmetric=n2 is None)


def stream(
    problem: Problem,
    c: Contraction,
    a1: Array,
    al1: Array,
    a2: Array,
    al2: Array,
    *,
    symmetric: bool,
) -> Array | tuple[Array, Array]:
    """The kernel block (and standard error) of two blocks of weighted differences on the
    stream route: the directions regenerated in column tiles, no M × M matrix."""
    xp, plan, est, full = problem.xp, problem.plan, problem.est, c.full
    num, u_sq, dropped = stream_numerator(
        xp,
        problem.dirs,
        a1,
        a2,
        problem.acc,
        plan.stream_rows,
        full,
        symmetric,
        c.batches,
        plan.stream_window,
    )
    correction = est.stream_correction(xp, a1, u_sq, a2, full)
    if correction is not None:  # each dropped numerator keeps the other batches' m = n terms
        num = num - correction
        dropped = [
            d
            - correction
            + est.stream_correction(xp, a1[..., b0:b1], u_sq[b0:b1], a2[..., b0:b1], full)
            for d, (b0, b1) in zip(dropped, c.batches, strict=True)
        ]
    return _finish(c, xp, num, al1, al2, dropped)
