"""Jacobians of user callables through the library's own autodiff (torch.func, JAX)."""

from __future__ import annotations

from collections.abc import Callable

from array_api_compat import is_jax_namespace, is_torch_namespace

from .._typing import Array, Namespace

__all__ = ["has_autodiff", "jacobian"]


def has_autodiff(xp: Namespace) -> bool:
    """Whether :func:`jacobian` works for arrays of ``xp``."""
    return bool(is_torch_namespace(xp) or is_jax_namespace(xp))


def jacobian(fun: Callable[[Array], Array], theta: Array, *, xp: Namespace) -> Array:
    """Reverse-mode Jacobian of ``fun`` at ``theta``.

    Parameters
    ----------
    fun : callable
        Maps a parameter vector of shape ``(P,)`` to an array of shape ``S``.
    theta : array, shape (P,)
    xp : namespace
        ``theta``'s namespace; torch and JAX only.

    Returns
    -------
    array, shape ``S + (P,)``

    Raises
    ------
    TypeError
        ``xp`` has no autodiff.
    """
    if is_torch_namespace(xp):
        from torch.func import jacrev

        return jacrev(fun)(theta)
    if is_jax_namespace(xp):
        import jax

        # One compiled program instead of op-by-op dispatch of the reverse pass (~20x faster).
        return jax.jit(jax.jacrev(fun))(theta)
    raise TypeError(
        f"the exact NTK of a user callable needs automatic differentiation, which "
        f"{xp.__name__} arrays do not have. Pass torch or JAX arrays, use the built-in "
        "nk.MLP (whose NTK needs no autodiff), or use nk.nntk, which needs no derivatives"
    )
