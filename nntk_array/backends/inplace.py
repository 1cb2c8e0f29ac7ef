"""Whether a library's arrays can be updated in place (NumPy, PyTorch, CuPy: yes; JAX: no).

The engine fills reused buffers where it can and builds new arrays where it cannot; the
answer belongs to the library and device, not to one array, so it is asked of an empty one.
"""

from __future__ import annotations

from array_api_compat import is_writeable_array

from .._typing import Device, Namespace

__all__ = ["writeable"]


def writeable(xp: Namespace, device: Device = None) -> bool:
    """Whether arrays of ``xp`` on ``device`` can be written in place (``a[...] = b``,
    ``a += b``)."""
    return bool(is_writeable_array(xp.empty((0,), device=device)))
