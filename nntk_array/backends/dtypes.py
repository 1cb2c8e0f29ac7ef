"""Dtype availability that the standard cannot express: JAX without x64."""

from __future__ import annotations

from array_api_compat import is_jax_namespace

from .._typing import DType, Namespace

__all__ = ["require_dtype"]


def require_dtype(xp: Namespace, dtype: DType) -> None:
    """Raise ``ValueError`` if ``xp`` would silently compute ``dtype`` in lower precision.

    JAX without ``jax_enable_x64`` turns a float64 request into float32 with only a warning.
    """
    if is_jax_namespace(xp) and dtype == xp.float64:
        import jax

        if not jax.config.read("jax_enable_x64"):
            raise ValueError(
                "float64 on JAX needs 64-bit mode, which is off: call "
                "jax.config.update('jax_enable_x64', True) at start-up (or set "
                "JAX_ENABLE_X64=1), or use dtype=jnp.float32"
            )
