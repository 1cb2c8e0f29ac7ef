"""Namespace, device and dtype resolution: the one place where inputs meet the array API.

Every public function calls :func:`resolve` first. It finds the single array library of all
array arguments, checks they share one device and a real floating dtype, promotes them to a
common dtype and returns the namespace.
"""

from __future__ import annotations

from array_api_compat import array_namespace, device, is_array_api_obj, is_dask_array

from ._typing import Array, Device, DType, Namespace

__all__ = ["as_namespace", "default_float_dtype", "is_dask", "resolve"]


def _library(x: Array) -> str:
    return f"{type(x).__module__}.{type(x).__qualname__}"


def resolve(**arrays: Array | None) -> tuple[Namespace, tuple[Array, ...]]:
    """Return the common namespace of the named arrays and the arrays in one float dtype.

    ``None`` values are skipped (and returned as ``None``). Errors name the offending argument.

    Raises
    ------
    TypeError
        An argument is not an array-API array, the arrays come from different libraries, or
        a dtype is not real floating (integer, boolean and complex inputs are refused).
    ValueError
        The arrays live on different devices.
    """
    present = {name: a for name, a in arrays.items() if a is not None}
    for name, a in present.items():
        if not is_array_api_obj(a):
            raise TypeError(
                f"`{name}` must be an array of an array-API library (NumPy, CuPy, PyTorch, "
                f"JAX, array-api-strict); got {_library(a)}. Convert it with your library's "
                "asarray first."
            )
    try:
        xp = array_namespace(*present.values())
    except TypeError:
        libs = ", ".join(f"`{name}` is {_library(a)}" for name, a in present.items())
        raise TypeError(
            f"all array arguments must come from one array library, but {libs}; "
            "convert them to one library (and one device) first"
        ) from None
    # JAX tracers (inside jit, grad, vmap) report no device: nothing to compare there.
    placed = {name: device(a) for name, a in present.items()}
    placed = {name: d for name, d in placed.items() if d is not None}
    if placed:
        first, dev = next(iter(placed.items()))
        for name, d in placed.items():
            if d != dev:
                raise ValueError(
                    f"`{name}` is on device {d!r} but `{first}` is on {dev!r}; "
                    "move them to one device first"
                )
    for name, a in present.items():
        if not xp.isdtype(a.dtype, "real floating"):
            raise TypeError(
                f"`{name}` must have a real floating dtype (float32 or float64); got "
                f"dtype={a.dtype}. Cast it first, e.g. xp.astype({name}, xp.float64)."
            )
    dtype = xp.result_type(*(a.dtype for a in present.values())) if present else None
    out = tuple(
        None if a is None else (a if a.dtype == dtype else xp.astype(a, dtype))
        for a in arrays.values()
    )
    return xp, out


def as_namespace(xp: Namespace) -> Namespace:
    """Return the array-API-compatible namespace for a library module or namespace.

    Accepts ``numpy``, ``torch``, ``jax.numpy``, ``cupy``, ``array_api_strict`` or any of
    their ``array_api_compat`` wrappers.
    """
    try:
        return array_namespace(xp.empty(0))
    except (AttributeError, TypeError):
        raise TypeError(
            f"`xp` must be an array library module (numpy, torch, jax.numpy, cupy, "
            f"array_api_strict) or its array-API namespace; got {xp!r}"
        ) from None


def default_float_dtype(xp: Namespace, dev: Device = None) -> DType:
    """The library's default real floating dtype on ``dev`` (float32 for torch and JAX)."""
    return xp.__array_namespace_info__().default_dtypes(device=dev)["real floating"]


def is_dask(*arrays: object) -> bool:
    """Whether any argument is a Dask array (``None`` and non-arrays are not): the entry
    points hand such calls to :mod:`nntk_array.distributed`."""
    return any(a is not None and is_dask_array(a) for a in arrays)
