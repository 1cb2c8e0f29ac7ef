"""Variance-reduced estimation of the Gaussian nonlocal NTK; every reduction keeps the estimand.

The kernel splits over blocks β of parameters, Θ(x, x') = Σ_β ∇_β f_σ(x)·∇_β f_σ(x'). Each
block gets per-sample vectors t_m(x) whose mean is exactly unbiased for ∇_β f_σ(x):

readout (``"readout"``; f = c_v φ(z) V + c_o b_o is linear in V and b_o)
    ∇_V f_σ = c_v E φ(z(θ + σu)): t_m = c_v φ(z(θ + σu_m)), the perturbed features, with the
    readout itself left unperturbed (its noise term σ u_V·φ is gone); b_o adds c_o² exactly.
units (``"units"``; given the readout, f is a sum over the last hidden layer's units)
    unit j's own parameters (column j of W, b_j) enter only its own term, so its Stein sum
    keeps only that term: t_m = c_v V_j (φ(z_j(θ + σu_m)) − φ(z_j(θ))) u_{m,j} / σ.
earlier layers (Stein)
    t_m = (f(θ + σu_m) − f(θ)) u_{m,rest} / σ, perturbing all non-readout parameters.
control variate (``"jvp"``)
    the model's linearization is subtracted from every difference and added back exactly:
    t_m = ∇_β f(x) + (Δ_m − σ J u_m) u_{m,β} / σ (mean zero correction, exact for affine f),
    and the readout features become φ(z_m) − σ φ'(z) ż_m (E ż_m = 0).

Antithetic sampling replaces the differences by (f(θ + σu) − f(θ − σu))/2 and the features
by their mirrored mean. Samples fall into B batches (the jackknife batches, contiguous rows);
with T_a the batch sums of the concatenated t and M_a their sizes, the kernel is the
U-statistic over pairs of *different* batches,

    K = (S Sᵀ − Σ_a T_a T_aᵀ) / (M² − Σ_a M_a²) + c_o²,      S = Σ_a T_a,

exactly unbiased because different batches are independent, and deleting a batch from both
sums gives the delete-a-batch jackknife at no extra evaluation. Memory: the B batch sums,
B·N·F numbers with F = width + width·(fan_in + 1) + O·(earlier parameters) for the MLP
(O·P for the control variate alone), which is why a reduction applies only where they fit
the memory budget (docs: Mathematics, 'Variance reduction').
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from array_api_compat import device

from .._typing import Array, Namespace
from ..backends.autodiff import has_autodiff
from ..backends.compile import program
from ..models import piecewise
from ..models.activations import ACTIVATIONS
from ..models.mlp import MLP, SMALL_CONTRACTION, dense
from ..models.protocol import Bound, LastLayer, bind
from .estimators import batch_bounds, jackknife
from .plan import DEFAULT_BUDGET, JACKKNIFE_BATCHES, chunk_rows

__all__ = ["Reduction", "choose", "compute"]

#: activations whose almost-everywhere derivative is zero: a control variate is void there
_FLAT = ("sign", "step")
#: share of the memory budget the batch sums may take
SUMS_SHARE = 2


@dataclass(frozen=True)
class Reduction:
    """The reductions one call applies: ``rest`` is the end of the parameters estimated by
    Stein sums (``[0, rest)``), ``features`` the length of one input's t per output set."""

    readout: bool
    units: bool
    jvp: bool
    rest: int
    features: int


def _layout(names: tuple[str, ...], model: Bound) -> Reduction:
    readout, units, jvp = "readout" in names, "units" in names, "jvp" in names
    o, last = model.num_outputs, model.last_layer
    if not readout:
        return Reduction(False, False, jvp, model.num_params, o * model.num_params)
    assert last is not None
    rest = last.w_start if units else last.v_start
    unit_size = last.width * (last.fan_in + (last.b_start is not None)) if units else 0
    return Reduction(True, units, jvp, rest, last.width + unit_size + o * rest)


def choose(
    requested: str | tuple[str, ...],
    model: Bound,
    xp: Namespace,
    *,
    applicable: str | None,
    n_rows: int,
    budget: int,
    acc_size: int,
) -> Reduction | None:
    """The reductions of a call: ``requested`` (``"auto"`` or names) checked against the
    model and options; ``applicable`` is ``None`` or why no reduction can apply (then
    ``"auto"`` means none and explicit names are an error)."""
    if requested == () or (requested == "auto" and applicable is not None):
        return None
    if applicable is not None:
        raise ValueError(f"`variance_reduction` {requested!r} needs {applicable}")
    last = model.last_layer
    structured = last is not None and model.hidden_pass is not None
    jvp_ok = has_autodiff(xp) or (model.own_jvp and model.jacobian_mode is None)
    if requested == "auto":
        names: tuple[str, ...] = ("readout", "units") if structured else ()
        flat = last is not None and last.activation in _FLAT
        # plain callables would get one autodiff JVP per direction: not worth it by default
        if jvp_ok and model.own_jvp and not flat:
            names = ("jvp", *names)
    else:
        names = tuple(requested)
        if "readout" in names and not structured:
            raise ValueError(
                "`variance_reduction` 'readout' and 'units' need a model with a last hidden "
                "layer and a readout (`last_layer` and `hidden_pass`, as nk.MLP has)"
            )
        if "jvp" in names and not jvp_ok:
            raise ValueError(
                "`variance_reduction` 'jvp' needs Jacobian-vector products: a model with "
                "`jvp` and `ntk_terms` (nk.MLP) or an array library with autodiff"
            )
    if not names:
        return None
    layout = _layout(names, model)
    need = JACKKNIFE_BATCHES * n_rows * layout.features * acc_size
    if need > budget // SUMS_SHARE:
        if requested == "auto":
            return None
        raise ValueError(
            f"`variance_reduction` {requested!r} keeps {JACKKNIFE_BATCHES} batch sums of "
            f"{layout.features} numbers per input ({need / 2**20:.0f} MiB), more than half of "
            "`memory_budget`: raise the budget or use variance_reduction='none'"
        )
    return layout


@dataclass(frozen=True)
class _Base:
    """What the unperturbed model gives once per call: outputs or hidden features, and the
    exact gradients e (N, F) the control variate adds back (zeros without it)."""

    f0: Array | None
    a0: Array | None
    slope: Array | None
    exact: Array | None
    inputs: Array | None  # [c_w a, c_b] of the last hidden layer at θ, (N, k)


def compute(problem: Any) -> Array | tuple[Array, Array]:
    """The variance-reduced kernel of a :class:`~nntk_array._mc.kernel.Problem` (and its
    jackknife standard error when asked)."""
    xp, red = problem.xp, problem.reduction
    x, acc = problem.inputs.x, problem.acc
    theta = xp.astype(problem.theta, acc, copy=False)
    model: Bound = problem.model
    last = model.last_layer
    sigma = problem.form.sigma
    antithetic = problem.spec.estimator.sampling == "antithetic"
    base = _base(xp, problem, theta, x, red)
    features = _chunk_sums(xp, model, theta, x, red, base, sigma, antithetic)
    dirs, chunk = problem.dirs, _chunk(problem, theta.dtype)
    bounds = batch_bounds(problem.groups, JACKKNIFE_BATCHES)
    sums, counts = [], []
    for b0, b1 in bounds:
        total = None
        for c0 in range(b0, b1, chunk):
            u = xp.astype(dirs.rows(c0, min(c0 + chunk, b1)), acc, copy=False)
            part = features(u)
            total = part if total is None else total + part
        assert total is not None
        if base.exact is not None:
            total = total + (b1 - b0) * base.exact
        sums.append(total)
        counts.append(b1 - b0)
    const = last.c_o**2 if red.readout and last is not None else 0.0
    result = _combine(xp, problem, sums, counts, const)
    if not problem.spec.full:  # outputs="full" reaches here for one output only
        return result
    if isinstance(result, tuple):
        return result[0][:, :, None, None], result[1][:, :, None, None]
    return result[:, :, None, None]


def _by_breakpoints(red: Reduction, model: Bound, n_inputs: int) -> bool:
    """Whether the per-unit sums come from the units' breakpoints (:mod:`..models.piecewise`):
    for a last hidden layer that is the first, of one input and a kinked activation, where
    no per-sample output is needed (``rest`` = 0), and whose pre-activations are exactly
    c_w a W + c_b b: the hidden pass is :class:`~nntk_array.MLP`'s own (a model may add noise
    to them in its ``hidden_pass``, as the study's noisy network does)."""
    last = model.last_layer
    return (
        red.units
        and red.rest == 0
        and last is not None
        and getattr(model.hidden_pass, "__func__", None) is MLP.hidden_pass
        and piecewise.applies(last.activation, last.fan_in, n_inputs)
    )


def _chunk(problem: Any, dtype: Any) -> int:
    """Samples per chunk: half the plan's widest chunk (the per-chunk (N, F) sums favour
    large chunks), or as many of the structured pass's (N, width) temporaries as fit."""
    n, last, red = problem.inputs.x.shape[0], problem.model.last_layer, problem.reduction
    if last is None or not red.readout or _by_breakpoints(red, problem.model, n):
        return max(1, int(problem.plan.wide_chunk) // 2)
    resources = problem.spec.resources
    itemsize = 4 if dtype == problem.xp.float32 else 8
    per_set = itemsize * (problem.model.num_params + 4 * n * last.width)
    budget = resources.memory_budget or DEFAULT_BUDGET
    rows = chunk_rows(resources.samples_per_call, budget, per_set, problem.dirs.num_rows, wide=True)
    return max(1, rows // 2)


def _base(xp: Namespace, problem: Any, theta: Array, x: Array, red: Reduction) -> _Base:
    model: Bound = problem.model
    if not red.readout:
        f0 = (
            None
            if problem.spec.estimator.sampling == "antithetic"
            else model.evaluate(theta[None, :], x)
        )
        exact = None
        if red.jvp:
            jac = _jacobian(xp, model, theta, x, red.rest)  # (N, O, P)
            exact = xp.reshape(jac, (x.shape[0], -1)) / math.sqrt(model.num_outputs)
        return _Base(f0, None, None, exact, None)
    last = model.last_layer
    assert last is not None
    assert model.hidden_pass is not None
    act = ACTIVATIONS[last.activation]
    a_in, z0, _ = model.hidden_pass(theta[None, :], x)
    z0 = z0[0, ...]
    slope = act.deriv(xp, z0)  # (N, width)
    inputs = _unit_inputs(xp, last, a_in if a_in.ndim == 2 else a_in[0, ...])  # (N, k)
    exact = None
    if red.jvp:
        n = x.shape[0]
        parts = [xp.zeros((n, last.width), dtype=theta.dtype, device=device(theta))]
        if red.units:
            w = _unit_weights(xp, last, theta, model.num_outputs)
            parts.append(xp.reshape((w[None, :] * slope)[:, :, None] * inputs[:, None, :], (n, -1)))
        if red.rest:
            jac = _jacobian(xp, model, theta, x, red.rest)
            parts.append(xp.reshape(jac, (n, -1)) / math.sqrt(model.num_outputs))
        exact = xp.concat(parts, axis=1)
    return _Base(None, act.fn(xp, z0), slope, exact, inputs)


def _unit_inputs(xp: Namespace, last: LastLayer, a_in: Array) -> Array:
    """[c_w a, c_b]: what unit j's parameters multiply, (..., fan_in (+ 1))."""
    scaled = last.c_w * a_in
    if last.b_start is None:
        return scaled
    ones = xp.full((*a_in.shape[:-1], 1), last.c_b, dtype=a_in.dtype, device=device(a_in))
    return xp.concat([scaled, ones], axis=-1)


def _jacobian(xp: Namespace, model: Bound, theta: Array, x: Array, stop: int) -> Array:
    """∂f/∂θ[:stop] at θ, (N, O, stop): from the model's per-layer NTK factors (weights
    ``a ⊗ δ``, biases ``c_b δ``), or the autodiff Jacobian term."""
    terms = model.ntk_terms(xp, theta, x)
    if len(terms) == 1 and terms[0].a is None:
        assert terms[0].delta is not None
        return terms[0].delta[..., :stop]
    parts, size = [], 0
    for t in terms:
        if size >= stop:
            break
        assert t.a is not None
        delta = t.delta
        if delta is None:  # the readout: the identity on the outputs
            o = model.num_outputs
            eye = xp.eye(o, dtype=t.a.dtype, device=device(t.a))
            delta = xp.broadcast_to(eye[None, ...], (t.a.shape[0], o, o))
        n, o, k = delta.shape
        parts.append(xp.reshape(t.a[:, None, :, None] * delta[:, :, None, :], (n, o, -1)))
        if t.bias_sq:
            parts.append(math.sqrt(t.bias_sq) * delta)
        size += t.a.shape[1] * k + (k if t.bias_sq else 0)
    jac = xp.concat(parts, axis=2)
    return jac[..., :stop]


def _chunk_sums(
    xp: Namespace,
    model: Bound,
    theta: Array,
    x: Array,
    red: Reduction,
    base: _Base,
    sigma: float,
    antithetic: bool,
) -> Callable[[Array], Array]:
    """One chunk's sums of t_m: on JAX one compiled program per model, reduction, σ and
    sampling (:func:`~nntk_array.backends.compile.program`), reused by every chunk, seed and
    call; elsewhere (or for a model that cannot be cached) this call's closure."""

    def sums_of(bound: Bound, theta: Array, x: Array, base: _Base) -> Callable[[Array], Array]:
        body = _structured if red.readout else _generic
        return body(xp, bound, theta, x, red, base, sigma, antithetic)

    def build(owner: Callable[[], Any]) -> Callable[..., Array]:
        def run(theta: Array, x: Array, parts: tuple[Array | None, ...], u: Array) -> Array:
            return sums_of(bind(owner(), xp, theta, x), theta, x, _Base(*parts))(u)

        return run

    compiled = program(("reduced", red, sigma, antithetic), build)
    if compiled is None:
        return sums_of(model, theta, x, base)
    parts = (base.f0, base.a0, base.slope, base.exact, base.inputs)
    return lambda u: compiled(theta, x, parts, u)


def _generic(
    xp: Namespace,
    model: Bound,
    theta: Array,
    x: Array,
    red: Reduction,
    base: _Base,
    sigma: float,
    antithetic: bool,
) -> Callable[[Array], Array]:
    """Per-chunk sums of t_m = Δ̃_m u_m/σ over all parameters (the control variate)."""
    n, o = x.shape[0], model.num_outputs
    scale = 1.0 / (sigma * math.sqrt(o))

    def sums(u: Array) -> Array:
        h = sigma * u
        if antithetic:
            d = 0.5 * (model.evaluate(theta + h, x) - model.evaluate(theta - h, x))
        else:
            assert base.f0 is not None
            d = model.evaluate(theta + h, x) - base.f0
        if red.jvp:
            d = d - sigma * model.jvp(theta, x, u)
        rows = xp.reshape(xp.permute_dims(d, (1, 2, 0)), (n * o, -1))  # (N·O, B)
        return xp.reshape(xp.matmul(rows, u), (n, -1)) * scale

    return sums


def _structured(
    xp: Namespace,
    model: Bound,
    theta: Array,
    x: Array,
    red: Reduction,
    base: _Base,
    sigma: float,
    antithetic: bool,
) -> Callable[[Array], Array]:
    """Per-chunk sums of [readout features | per-unit Stein | earlier-layer Stein]."""
    last = model.last_layer
    hidden = model.hidden_pass
    assert last is not None
    assert hidden is not None
    assert base.a0 is not None
    assert base.slope is not None
    act = ACTIVATIONS[last.activation]
    n, o, width = x.shape[0], model.num_outputs, last.width
    v = xp.reshape(theta[last.v_start : last.v_start + width * o], (width, o))
    rest = red.rest
    w = _unit_weights(xp, last, theta, o)[:, None] / sigma
    slope = base.slope
    inputs = base.inputs

    breaks = _by_breakpoints(red, model, n)

    def sums(u: Array) -> Array:
        b = u.shape[0]
        cols = _unit_coordinates(xp, last, u)  # (B, width) each: unit j's direction
        if breaks:
            feats, q = _breakpoint_sums(xp, last, theta, inputs, sigma, cols, antithetic)
            delta = None  # no per-sample outputs are needed (rest = 0)
        else:
            h = sigma * u
            a_p = act.fn(xp, hidden(theta + h, x)[1])  # (B, N, width)
            if antithetic:
                a_m = act.fn(xp, hidden(theta - h, x)[1])
                feats, delta = 0.5 * _sum_rows(xp, a_p + a_m), 0.5 * (a_p - a_m)
            else:
                feats, delta = _sum_rows(xp, a_p), a_p - base.a0
            # the linearization σ φ'(z) ż_m is subtracted where it is cheapest: the part
            # through earlier layers per sample, each unit's own part and the readout's
            # through sums (ż is linear in u)
            up = hidden(theta[None, :], x, u, own=False)[2] if red.jvp else None
            if up is not None:
                delta = delta - sigma * (slope * up)
            q = _unit_sums(xp, delta, cols) if red.units else None  # (N, width, k)
        if red.jvp and not antithetic:  # mirrored features have no linear term to remove
            dz = hidden(theta[None, :], x, xp.sum(u, axis=0)[None, :])[2]
            assert dz is not None
            feats = feats - sigma * (slope * dz[0, ...])
        parts = [last.c_v * feats]  # (N, width)
        if q is not None:
            if red.jvp:
                q = q - sigma * slope[:, :, None] * _own_second_moments(xp, inputs, cols)
            parts.append(xp.reshape(q * w, (n, -1)))
        if rest:
            assert delta is not None
            d = last.c_v * dense(xp, delta, v)  # (B, N, O): the output difference
            if red.jvp and not red.units:  # the last layer's own linear response
                d = d - (sigma * last.c_v) * _own_response(xp, inputs, slope, v, cols)
            rows = xp.reshape(xp.permute_dims(d, (1, 2, 0)), (n * o, b))
            s = xp.matmul(rows, u[:, :rest]) / (sigma * math.sqrt(o))
            parts.append(xp.reshape(s, (n, -1)))
        return xp.concat(parts, axis=1)

    return sums


def _breakpoint_sums(
    xp: Namespace,
    last: LastLayer,
    theta: Array,
    inputs: Array,
    sigma: float,
    cols: list[Array],
    antithetic: bool,
) -> tuple[Array, Array]:
    """A chunk's readout features Σ_m φ(z_m) (N, width) and unit sums Σ_m δ_m u_m
    (N, width, k) for a first hidden layer of one input, without the (B, N, width)
    pre-activations: each unit's B perturbed lines φ(c_w (w + σu_w) a + c_b (b + σu_b)) are
    summed by their breakpoints over the layer's inputs a (:func:`line_sums`). One-sided
    differences δ_m = φ(z_m) − φ(z_0) add the unperturbed line as one more term, weighted by
    −Σ_m u_m, instead of a pass over the (N, width, k) sums."""
    width = last.width
    w = theta[last.w_start : last.w_start + width]
    b = None if last.b_start is None else theta[last.b_start : last.b_start + width]
    ones = xp.ones_like(cols[0])
    weights = xp.stack([ones, *cols], axis=2)  # (B, width, 1 + k)
    act = ACTIVATIONS[last.activation]

    def summed(sign: float, extra: Array | None = None) -> Array:  # (N, width, 1 + k)
        step = sign * sigma
        slope, shift, terms = w + step * cols[0], None if b is None else b + step * cols[1], weights
        if extra is not None:  # θ itself, weighted by ``extra`` (1, width, 1 + k)
            slope = xp.concat([slope, w[None, :]])
            shift = None if b is None else xp.concat([shift, b[None, :]])
            terms = xp.concat([terms, extra])
        sums = piecewise.line_sums(
            xp,
            inputs[:, 0],
            xp.permute_dims(slope, (1, 0)),
            None if shift is None else last.c_b * xp.permute_dims(shift, (1, 0)),
            xp.permute_dims(terms, (1, 0, 2)),
            act,
        )
        return xp.permute_dims(sums, (1, 0, 2))

    if antithetic:
        plus, minus = summed(1.0), summed(-1.0)
        return 0.5 * (plus[..., 0] + minus[..., 0]), 0.5 * (plus[..., 1:] - minus[..., 1:])
    totals = [xp.sum(c, axis=0) for c in cols]  # Σ_m u_m, (width,) each
    extra = -xp.stack([xp.zeros_like(totals[0]), *totals], axis=1)[None, ...]
    plus = summed(1.0, extra)
    return plus[..., 0], plus[..., 1:]


def _unit_coordinates(xp: Namespace, last: LastLayer, u: Array) -> list[Array]:
    """Unit j's coordinates of the directions u (B, P): weights from each input, then the
    bias, as a list of (B, width) arrays (the order of :func:`_unit_inputs`)."""
    k, width = last.fan_in, last.width
    uw = xp.reshape(u[:, last.w_start : last.w_start + k * width], (u.shape[0], k, width))
    cols = [uw[:, i, :] for i in range(k)]
    if last.b_start is not None:
        cols.append(u[:, last.b_start : last.b_start + width])
    return cols


def _own_second_moments(xp: Namespace, inputs: Array, cols: list[Array]) -> Array:
    """Σ_m ż_jm u_jm over a chunk for each unit's own tangent ż_jm = inputs·u_jm:
    inputs (N, k) times each unit's second moments C_j = Σ_m u_jm u_jmᵀ, (N, width, k)."""
    if len(cols) <= SMALL_CONTRACTION:
        c = xp.stack(
            [xp.stack([xp.sum(ci * cl, axis=0) for cl in cols], axis=1) for ci in cols], axis=1
        )  # (width, k, k)
    else:
        uu = xp.permute_dims(xp.stack(cols, axis=2), (1, 0, 2))  # (width, B, k)
        c = xp.matmul(xp.permute_dims(uu, (0, 2, 1)), uu)
    # one product over k for all units (a batched (N, k) @ (k, k) is `width` tiny ones)
    return xp.tensordot(inputs, c, axes=((1,), (1,)))


def _own_response(xp: Namespace, inputs: Array, slope: Array, v: Array, cols: list[Array]) -> Array:
    """The outputs' linear response to the last hidden layer's own directions,
    Σ_j φ'(z_j) V_jo (inputs·u_jm), (B, N, O)."""
    sv = xp.permute_dims(slope[:, :, None] * v[None, ...], (0, 2, 1))  # (N, O, width)
    total = None
    for i, c in enumerate(cols):
        part = xp.matmul(sv, xp.permute_dims(c, (1, 0))) * inputs[:, i][:, None, None]
        total = part if total is None else total + part
    assert total is not None
    return xp.permute_dims(total, (2, 0, 1))


def _sum_rows(xp: Namespace, a: Array) -> Array:
    """Σ over the first axis as one matrix-vector product: XLA's CPU reduction over a leading
    axis ran 10-40x slower than the product (B = 16-64 chunks of (N, width) blocks)."""
    ones = xp.ones((1, a.shape[0]), dtype=a.dtype, device=device(a))
    return xp.reshape(xp.matmul(ones, xp.reshape(a, (a.shape[0], -1))), a.shape[1:])


def _unit_sums(xp: Namespace, delta: Array, cols: list[Array]) -> Array:
    """Σ_m delta[m, n, j] c[m, j] for each of the unit's direction coordinates c (B, width):
    (N, width, k) — broadcast products for few coordinates, else one matmul per unit."""
    if len(cols) <= SMALL_CONTRACTION:
        return xp.stack([_sum_rows(xp, delta * c[:, None, :]) for c in cols], axis=2)
    uu = xp.permute_dims(xp.stack(cols, axis=2), (1, 0, 2))  # (width, B, k)
    q = xp.matmul(xp.permute_dims(delta, (2, 1, 0)), uu)  # (width, N, k)
    return xp.permute_dims(q, (1, 0, 2))


def _unit_weights(xp: Namespace, last: LastLayer, theta: Array, o: int) -> Array:
    """c_v·rms_o(V_jo) per unit j, (width,): the kernel averages V_jo² over outputs."""
    v = xp.reshape(theta[last.v_start : last.v_start + last.width * o], (last.width, o))
    return last.c_v * xp.sqrt(xp.mean(v * v, axis=1))


def _combine(
    xp: Namespace, problem: Any, sums: list[Array], counts: list[int], const: float
) -> Array | tuple[Array, Array]:
    """The U-statistic over pairs of different batches and its delete-a-batch jackknife."""
    n1, n2 = problem.inputs.n1, problem.inputs.n2
    t1 = [s[:n1, :] for s in sums]
    t2 = t1 if n2 is None else [s[n1:, :] for s in sums]
    s1 = sum(t1[1:], t1[0])
    s2 = s1 if n2 is None else sum(t2[1:], t2[0])
    full = xp.matmul(s1, xp.permute_dims(s2, (1, 0)))
    m, sq = sum(counts), sum(c * c for c in counts)
    dtype = problem.theta.dtype
    if not problem.spec.stderr:  # Σ_a T_a T_aᵀ as one GEMM over the stacked batches
        stack1 = xp.concat(t1, axis=1)
        stack2 = stack1 if n2 is None else xp.concat(t2, axis=1)
        diag = xp.matmul(stack1, xp.permute_dims(stack2, (1, 0)))
        return xp.astype((full - diag) / float(m * m - sq) + const, dtype, copy=False)
    own = [xp.matmul(a, xp.permute_dims(b, (1, 0))) for a, b in zip(t1, t2, strict=True)]
    diag = sum(own[1:], own[0])
    kernel = (full - diag) / float(m * m - sq) + const

    def dropped() -> Any:
        for a, b, d in zip(t1, t2, own, strict=True):
            left = xp.matmul(a, xp.permute_dims(s2, (1, 0))) + xp.matmul(
                s1, xp.permute_dims(b, (1, 0))
            )
            yield full - left + 2.0 * d - diag

    shape = (n1, n1 if n2 is None else n2)
    dev = device(kernel)
    dens = (
        xp.full(shape, float((m - c) ** 2 - (sq - c * c)), dtype=kernel.dtype, device=dev)
        for c in counts
    )
    se = jackknife(xp, dropped(), dens, False)
    return xp.astype(kernel, dtype, copy=False), xp.astype(se, dtype, copy=False)
