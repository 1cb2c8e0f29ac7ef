"""Wait for asynchronous device work: used by benchmarks and tests, never by algorithms."""

from __future__ import annotations

from array_api_compat import is_cupy_array, is_jax_array, is_torch_array

from .._typing import Array

__all__ = ["synchronize"]


def synchronize(*arrays: Array) -> None:
    """Block until the computations producing ``arrays`` have finished on their devices."""
    for a in arrays:
        if is_jax_array(a):
            a.block_until_ready()
        elif is_torch_array(a) and a.device.type == "cuda":
            import torch

            torch.cuda.synchronize(a.device)
        elif is_cupy_array(a):
            import cupy

            cupy.cuda.get_current_stream().synchronize()
