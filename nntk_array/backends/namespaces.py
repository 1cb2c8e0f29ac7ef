"""Load an array library by name, configured for full precision (command line, benchmarks)."""

from __future__ import annotations

from .._typing import Device, Namespace

__all__ = ["LIBRARIES", "load"]

LIBRARIES = ("numpy", "torch", "jax", "cupy")


def load(library: str, device: str | None = None, *, x64: bool = True) -> tuple[Namespace, Device]:
    """The array namespace and device of ``library`` (imported here).

    Float32 matmuls run in full precision (no TF32 in torch or JAX); ``x64`` enables float64
    on JAX. ``device``: ``"cpu"``/``"cuda"`` for torch, ``"cpu"``/``"gpu"`` for JAX, a GPU
    index for CuPy; the library's default when ``None``.

    Raises
    ------
    ImportError
        The library is not installed.
    RuntimeError
        The device does not exist.
    ValueError
        An unknown library, or a device NumPy does not have.
    """
    from array_api_compat import array_namespace

    def as_namespace(module: Namespace) -> Namespace:
        return array_namespace(module.empty(0))

    if library == "numpy":
        import numpy

        if device not in (None, "cpu"):
            raise ValueError("NumPy runs on the CPU only")
        return as_namespace(numpy), None
    if library == "torch":
        import torch

        torch.set_float32_matmul_precision("highest")
        torch.backends.cudnn.allow_tf32 = False
        dev = torch.device(device or "cpu")
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("torch sees no CUDA device")
        return as_namespace(torch), dev
    if library == "jax":
        import jax

        jax.config.update("jax_enable_x64", x64)
        jax.config.update("jax_default_matmul_precision", "float32")
        import jax.numpy as jnp

        return jnp, None if device is None else jax.devices(device)[0]
    if library == "cupy":
        import cupy

        if cupy.cuda.runtime.getDeviceCount() < 1:
            raise RuntimeError("CuPy sees no GPU")
        return as_namespace(cupy), None if device is None else cupy.cuda.Device(int(device))
    raise ValueError(f"unknown array library {library!r}; expected one of {LIBRARIES}")
