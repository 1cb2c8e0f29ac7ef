"""Collection of the package's own modules (``--doctest-modules``) where extras are missing.

``nntk_array/interop/sklearn.py`` and ``nntk_array/interop/gpytorch.py`` subclass their
library's kernel class at import, so without that library they cannot even be imported:
their doctests are left out of collection then, instead of failing it (as in CI's
NumPy-only environment). Their tests in ``tests/interop`` skip with ``importorskip``.
"""

from __future__ import annotations

from importlib.util import find_spec

EXTRAS = {  # module of the package -> the libraries it imports at the top level
    "nntk_array/interop/sklearn.py": ("sklearn",),
    "nntk_array/interop/gpytorch.py": ("torch", "gpytorch", "linear_operator"),
}

collect_ignore = [
    path
    for path, libraries in EXTRAS.items()
    if any(find_spec(library) is None for library in libraries)
]
