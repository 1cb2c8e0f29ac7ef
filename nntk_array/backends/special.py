"""Native special functions where the library has them; the standard has no ``erf``."""

from __future__ import annotations

from array_api_compat import is_cupy_namespace, is_jax_namespace, is_torch_namespace

from .._special import erf as portable_erf
from .._typing import Array, Namespace

__all__ = ["erf"]


def erf(xp: Namespace, x: Array) -> Array:
    """The error function of ``x``: the library's own kernel, else a portable float64-exact one.

    The native kernels matter for autodiff (torch.func, jax) and speed; the portable version
    (:mod:`nntk_array._special`) serves NumPy, array-api-strict and any other library.
    """
    if is_torch_namespace(xp):
        import torch

        return torch.special.erf(x)
    if is_jax_namespace(xp):
        import jax

        return jax.lax.erf(x)
    if is_cupy_namespace(xp):
        import cupyx.scipy.special

        return cupyx.scipy.special.erf(x)
    return portable_erf(xp, x)
