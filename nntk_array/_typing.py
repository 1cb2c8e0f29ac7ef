"""Type aliases for arrays, namespaces, devices and dtypes.

The array API standard has no runtime protocol that every library satisfies (NumPy, torch,
JAX and CuPy arrays share no base class), so, as array-api-extra does, these aliases are
``Any`` at runtime; they document intent in signatures.
"""

from __future__ import annotations

from typing import Any, TypeAlias

Array: TypeAlias = Any
"""An array of any array-API library (NumPy, CuPy, PyTorch, JAX, array-api-strict)."""

Namespace: TypeAlias = Any
"""An array-API namespace as returned by ``array_api_compat.array_namespace``."""

Device: TypeAlias = Any
"""A device object of the array's library (``None`` for the library's default)."""

DType: TypeAlias = Any
"""A dtype object of the array's library."""

SeedLike: TypeAlias = Any
"""An ``int`` seed or a native generator: ``numpy.random.Generator``, ``torch.Generator``,
a JAX PRNG key, or a ``cupy.random.Generator``."""
