"""Whether an array's values can be read now (eager) or only later (traced or lazy)."""

from __future__ import annotations

from array_api_compat import is_jax_array, is_lazy_array, is_torch_array

from .._typing import Array

__all__ = ["is_concrete"]


def is_concrete(x: Array) -> bool:
    """True for arrays whose values exist now.

    ``array_api_compat.is_lazy_array`` is True for every JAX array; only JAX tracers (inside
    ``jit``, ``grad``, ``vmap``) lack values, so concrete JAX arrays are checked too. A torch
    tensor wrapped by a ``torch.func`` transform (``vmap``, ``jacrev``, ...) counts as traced:
    under ``vmap`` its values cannot be read as Python values (``bool`` raises).
    """
    if is_jax_array(x):
        import jax

        return not isinstance(x, jax.core.Tracer)
    if is_torch_array(x):
        import torch

        return not bool(torch._C._functorch.is_functorch_wrapped_tensor(x))
    return not is_lazy_array(x)
