"""Orchestration above the engine: kernels of Dask arrays as lazy graphs of block tasks.

:func:`nntk_array.ntk` and :func:`nntk_array.nntk` import :mod:`.dask` lazily when an input is
a Dask array; nothing here is imported by ``import nntk_array``.
"""
