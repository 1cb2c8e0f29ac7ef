"""Dtype availability that the standard cannot express by itself: JAX without x64, and
devices without float64 (array-api-strict's ``Device("no_float64")``, some accelerators)."""

from __future__ import annotations

from array_api_compat import is_jax_namespace

from .._typing import Device, DType, Namespace

__all__ = ["require_dtype"]


def require_dtype(xp: Namespace, dtype: DType, device: Device = None, *, what: str = "") -> None:
    """Raise ``ValueError`` if ``xp`` cannot compute in ``dtype`` on ``device``, or would
    silently compute it in lower precision.

    JAX without ``jax_enable_x64`` turns a float64 request into float32 with only a warning;
    a device may lack float64 altogether (the namespace's inspection API says so). ``what``
    names the option that asked for the dtype, for the message.
    """
    if is_jax_namespace(xp) and dtype == xp.float64:
        import jax

        if not jax.config.read("jax_enable_x64"):
            raise ValueError(
                "float64 on JAX needs 64-bit mode, which is off: call "
                "jax.config.update('jax_enable_x64', True) at start-up (or set "
                "JAX_ENABLE_X64=1), or use dtype=jnp.float32"
            )
    info = getattr(xp, "__array_namespace_info__", None)
    if info is None or device is None:
        return
    if dtype not in info().dtypes(device=device, kind="real floating").values():
        prefix = f"{what} needs " if what else ""
        raise ValueError(f"{prefix}{dtype}, which the device {device!r} does not support")
