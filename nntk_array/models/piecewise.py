"""Exact evaluation of one-input, one-hidden-layer networks with a kinked activation.

For a scalar input x, hidden unit j computes φ(a_j x + b_j). When φ is linear on either side
of 0 (ReLU, leaky ReLU, abs, sign, step) the unit is linear in x on either side of its
breakpoint t_j = -b_j / a_j, so the network's output is a piecewise-linear function of x:

    f(x) = c + Σ_j v_j (s_j x + i_j) + Σ_{j: t_j < x} v_j (Δs_j x + Δi_j)
             + Σ_{j: t_j = x} v_j τ_j

with each unit's line left of its breakpoint (s_j, i_j), the change of line there
(Δs_j, Δi_j) and, at the breakpoint itself, the correction τ_j to φ(0). With the inputs
sorted, the second sum is a running sum over the inputs of what each unit adds where it
starts: every unit is ranked among the inputs (:mod:`~nntk_array.models.ranks`) and its
change added at its rank (a sum by segment). A batch of B parameter sets costs O(B W log N) for the
searches and O(B (W + N) O) for the sums, instead of the O(B N W) multiply-adds and
activations of the layer-by-layer forward pass.

The result equals the layer-by-layer forward pass in exact arithmetic; in floating point they
agree to rounding, except that an input within rounding of a unit's breakpoint may fall on
the other side of it (for a continuous φ that changes the output by about that rounding).
"""

from __future__ import annotations

from array_api_compat import device as array_device

from .._typing import Array, Namespace
from ..backends.scatter import segment_sum
from ..backends.tracing import is_concrete
from .activations import ACTIVATIONS, Activation
from .ranks import ranks

__all__ = ["MIN_INPUTS", "applies", "line_sums"]

#: inputs from which breakpoints are used: they beat evaluating every unit at every input
#: from about 16 inputs on (1-256-1 ReLU net, 64 parameter sets, NumPy, float64: 1.5 ms
#: against 13 ms at 16, slower at 8); 32 leaves a margin for narrow layers and other
#: libraries, whose per-operation overhead the sorts and searches pay more often
MIN_INPUTS = 32


def applies(activation: str, fan_in: int, n_inputs: int) -> bool:
    """Whether a first hidden layer of ``fan_in`` inputs and this ``activation``, evaluated
    at ``n_inputs`` inputs, goes by breakpoints: one input, a kinked activation, and enough
    inputs to pay (:data:`MIN_INPUTS`).

    Examples
    --------
    >>> applies("relu", 1, 320), applies("tanh", 1, 320), applies("relu", 1, 8)
    (True, False, False)
    """
    return fan_in == 1 and ACTIVATIONS[activation].kink is not None and n_inputs >= MIN_INPUTS


def line_sums(
    xp: Namespace,
    x: Array,
    slope: Array,
    shift: Array | None,
    weights: Array,
    activation: Activation,
) -> Array:
    """Σ_s weights[g, s] φ(slope[g, s] x_n + shift[g, s]) for every group g and input x_n.

    A network's output is this sum over its hidden units (a group per parameter set, the
    readout as ``weights``); the variance-reduced kernels sum over samples instead (a group
    per unit).

    Parameters
    ----------
    x : array, shape (N,)
        Scalar inputs, in any order.
    slope, shift : array, shape (G, S)
        The lines inside φ (``shift`` ``None``: zero).
    weights : array, shape (G, S, F)
        What each term is weighted by, F numbers per term.
    activation : Activation
        One with a :class:`~nntk_array.models.activations.Kink`: linear on either side of 0.

    Returns
    -------
    array, shape (G, N, F)

    Examples
    --------
    >>> import numpy as np
    >>> from nntk_array.models.activations import ACTIVATIONS
    >>> x = np.array([-1.0, 0.5, 2.0])
    >>> slope, shift, weights = np.ones((1, 2)), np.array([[0.0, -1.0]]), np.ones((1, 2, 1))
    >>> line_sums(np, x, slope, shift, weights, ACTIVATIONS["relu"])[0, :, 0]
    array([0. , 0.5, 3. ])
    """
    kink = activation.kink
    assert kink is not None  # callers check
    groups, f = weights.shape[0], weights.shape[2]
    n = x.shape[0]
    b = xp.zeros_like(slope) if shift is None else shift
    flat = slope == 0
    # left of its breakpoint a rising unit has z < 0 and a falling one z > 0; a flat unit is
    # its constant value everywhere (its breakpoint at +inf is never passed)
    up = xp.astype(slope > 0, slope.dtype)
    left_slope = up * kink.neg_slope + (1 - up) * kink.pos_slope
    left_value = up * kink.neg_value + (1 - up) * kink.pos_value
    sign = 2 * up - 1
    line_slope = xp.where(flat, 0.0, left_slope * slope)
    line_value = xp.where(flat, activation.fn(xp, b), left_slope * b + left_value)
    jump_slope = sign * (kink.pos_slope - kink.neg_slope) * slope
    jump_value = sign * ((kink.pos_slope - kink.neg_slope) * b + (kink.pos_value - kink.neg_value))
    breakpoint = xp.where(flat, xp.inf, -b / xp.where(flat, 1.0, slope))

    order = xp.argsort(x)
    xs = xp.take(x, order)
    # a term's change applies from input rank #{x <= t} on (t < x), and its value at a
    # breakpoint that is an input exactly from #{x < t} on, for that one input only
    flat_breaks = xp.reshape(breakpoint, (-1,))  # contiguous: torch copies strided queries

    def rank(side: str) -> Array:
        return xp.reshape(ranks(xp, xs, flat_breaks, side), breakpoint.shape)

    passed = rank("right")
    # one running sum over the inputs per part (the line's slope and value), group and weight
    # column: each term's change of line added at its rank, each group's line left of all
    # breakpoints at rank 0, in segments (g·f + column)·(N + 1) + rank. N + 1 long (rank N,
    # past every input, is cut last) so that the running sums and the lines are contiguous
    dev = array_device(slope)
    size = n + 1
    lines = xp.arange(groups * f, dtype=passed.dtype, device=dev) * size  # rank 0 of each

    def at(r: Array) -> Array:  # the segments of terms ranked r, (G·S·f,)
        return xp.reshape(xp.reshape(lines, (groups, 1, f)) + r[..., None], (-1,))

    def terms(change: Array) -> Array:  # each term's change, weighted, (G·S·f,)
        return xp.reshape(weights * change[..., None], (-1,))

    def running(values: list[Array], segments: list[Array]) -> Array:  # (G, f, N + 1)
        starts = segment_sum(xp, xp.concat(values), xp.concat(segments), groups * f * size)
        return xp.cumulative_sum(xp.reshape(starts, (groups, f, size)), axis=-1)

    segments = at(passed)
    base_slope = xp.reshape(xp.sum(weights * line_slope[..., None], axis=1), (-1,))  # (G·f,)
    base_value = xp.reshape(xp.sum(weights * line_value[..., None], axis=1), (-1,))
    slopes = running([terms(jump_slope), base_slope], [segments, lines])
    value_change, ties, tied_at = jump_value, [], []
    if kink.zero_differs:
        # at a breakpoint that is an input exactly, the value φ(0): from rank #{x < t} on,
        # for that one input only (taken back with the line's change from #{x <= t} on)
        tie = xp.where(flat, 0.0, kink.zero_value - left_value)
        value_change, ties, tied_at = jump_value - tie, [terms(tie)], [at(rank("left"))]
    values = running([terms(value_change), base_value, *ties], [segments, lines, *tied_at])
    at_ranks = xp.concat([xs, xp.zeros((1,), dtype=xs.dtype, device=dev)])
    out = (slopes * at_ranks + values)[..., :n]  # (G, f, N) at the sorted inputs
    in_order = is_concrete(order) and bool(
        xp.all(order == xp.arange(n, dtype=order.dtype, device=dev))
    )
    if not in_order:  # back to the inputs' own order
        out = xp.take(out, xp.argsort(order), axis=2)
    return xp.permute_dims(out, (0, 2, 1))
