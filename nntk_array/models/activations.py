"""Pointwise activations of the built-in MLP and their almost-everywhere derivatives.

The derivative is what reverse-mode autodiff of the forward expression gives (also at the
kinks), so the structured NTK of :class:`nntk_array.MLP` equals the autodiff NTK exactly.
For sign, step and sawtooth the derivative is the a.e. one (0, 0 and 2): the local NTK
ignores the jumps, which is the degeneracy the nonlocal NTK repairs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from array_api_compat import is_writeable_array

from .._typing import Array, Namespace
from ..backends.inplace import clamp_min_into
from ..backends.special import erf

__all__ = ["ACTIVATIONS", "LEAKY_RELU_SLOPE", "Activation", "Kink"]

LEAKY_RELU_SLOPE = 0.01

_Fn = Callable[[Namespace, Array], Array]


@dataclass(frozen=True)
class Kink:
    """An activation that is a line on either side of 0: ``neg_slope·z + neg_value`` for
    z < 0, ``pos_slope·z + pos_value`` for z > 0, and ``zero_value`` at 0."""

    neg_slope: float
    neg_value: float
    pos_slope: float
    pos_value: float
    zero_value: float = 0.0

    @property
    def zero_differs(self) -> bool:
        """Whether the value at 0 is not the limit from one side (a jump: sign, step)."""
        return self.zero_value != self.neg_value or self.zero_value != self.pos_value


@dataclass(frozen=True)
class Activation:
    """An activation ``fn``, its almost-everywhere derivative ``deriv``, its two lines
    where it is linear on either side of 0 (``kink``; networks of one input then evaluate
    exactly by their breakpoints, see :mod:`.piecewise`), and where it has one, ``fn_into``:
    the same values written into its (writeable) argument, which large batched passes use
    to spare a fresh array per layer."""

    name: str
    fn: _Fn
    deriv: _Fn
    kink: Kink | None = None
    fn_into: _Fn | None = None

    def apply(self, xp: Namespace, z: Array, *, reuse: bool) -> Array:
        """``fn(z)``, written into ``z`` where ``reuse`` says the caller owns it, it can be
        written, and the activation has an in-place form."""
        if reuse and self.fn_into is not None and is_writeable_array(z):
            return self.fn_into(xp, z)
        return self.fn(xp, z)


def _step(xp: Namespace, z: Array) -> Array:
    return xp.astype(z > 0, z.dtype)


def _zeros(xp: Namespace, z: Array) -> Array:
    return xp.zeros_like(z)


def _ones(xp: Namespace, z: Array) -> Array:
    return xp.ones_like(z)


ACTIVATIONS: dict[str, Activation] = {
    a.name: a
    for a in (
        # max(z, c z) in one pass; autodiff of maximum splits a tie evenly, hence the
        # derivative (1 + c)/2 + (1 - c)/2 sign(z), which is c-or-1 off the kink.
        Activation(
            "relu",
            lambda xp, z: xp.maximum(z, 0.0),
            lambda xp, z: 0.5 * xp.sign(z) + 0.5,
            Kink(0.0, 0.0, 1.0, 0.0),
            lambda xp, z: clamp_min_into(xp, z, 0.0),
        ),
        Activation(
            "leaky_relu",
            lambda xp, z: xp.maximum(z, LEAKY_RELU_SLOPE * z),
            lambda xp, z: (
                (0.5 * (1.0 - LEAKY_RELU_SLOPE)) * xp.sign(z) + 0.5 * (1.0 + LEAKY_RELU_SLOPE)
            ),
            Kink(LEAKY_RELU_SLOPE, 0.0, 1.0, 0.0),
        ),
        Activation("tanh", lambda xp, z: xp.tanh(z), lambda xp, z: 1.0 - xp.tanh(z) ** 2),
        Activation("erf", erf, lambda xp, z: (2.0 / math.sqrt(math.pi)) * xp.exp(-(z * z))),
        Activation("sign", lambda xp, z: xp.sign(z), _zeros, Kink(0.0, -1.0, 0.0, 1.0)),
        Activation("step", _step, _zeros, Kink(0.0, 0.0, 0.0, 1.0)),
        # 2(z - floor(z + 1/2)): the period-1 sawtooth with range [-1, 1), slope 2.
        Activation(
            "sawtooth",
            lambda xp, z: 2.0 * (z - xp.floor(z + 0.5)),
            lambda xp, z: xp.full_like(z, 2.0),
        ),
        Activation(
            "abs", lambda xp, z: xp.abs(z), lambda xp, z: xp.sign(z), Kink(-1.0, 0.0, 1.0, 0.0)
        ),
        Activation("identity", lambda xp, z: z, _ones),
    )
}
