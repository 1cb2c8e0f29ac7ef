"""Argument checks with one message style: name the argument, say what came and what is expected.

Value checks (finiteness) read array contents, so they are skipped for traced or lazy arrays
(JAX under ``jit``, Dask) whose values do not exist yet.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

from ._typing import Array, Namespace
from .backends.tracing import is_concrete

__all__ = [
    "check_choice",
    "check_finite",
    "check_ndim",
    "check_positive_float",
    "check_positive_int",
]


def check_ndim(name: str, x: Array, ndims: Sequence[int], what: str) -> None:
    """Raise ``ValueError`` unless ``x.ndim`` is one of ``ndims``."""
    if x.ndim not in ndims:
        raise ValueError(f"`{name}` must have shape {what}; got shape {tuple(x.shape)}")


def check_finite(xp: Namespace, **arrays: Array | None) -> None:
    """Raise ``ValueError`` if an eager array holds NaN or infinity."""
    for name, x in arrays.items():
        if x is None or not is_concrete(x):
            continue
        ok = xp.all(xp.isfinite(x))
        # Under a JAX trace even a concrete input gives a traced result: skip there too.
        if is_concrete(ok) and not bool(ok):
            raise ValueError(f"`{name}` contains NaN or infinite values")


def check_positive_int(name: str, value: object) -> int:
    """Return ``value`` as ``int`` if it is a positive integer (NumPy integers included).

    Like :func:`check_positive_float`: ``TypeError`` for a value of the wrong type (a bool,
    a float, a string), ``ValueError`` for an integer < 1.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be a positive integer; got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"`{name}` must be a positive integer; got {value!r}")
    return int(value)


def check_positive_float(name: str, value: object) -> float:
    """Return ``value`` as ``float`` if it is a finite real number > 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a real number; got {type(value).__name__}")
    v = float(value)
    if not (v > 0.0 and v < float("inf")):
        raise ValueError(f"`{name}` must be finite and > 0; got {value!r}")
    return v


def check_choice(name: str, value: object, choices: Sequence[str]) -> str:
    """Return ``value`` if it is one of ``choices``."""
    if not isinstance(value, str) or value not in choices:
        options = ", ".join(repr(c) for c in choices)
        raise ValueError(f"`{name}` must be one of {options}; got {value!r}")
    return value
