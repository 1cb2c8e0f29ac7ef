"""Convergence in M: the centred error of Monte Carlo NNTKs against the closed form.

For the one-hidden-layer ReLU and sign nets the Gaussian NNTK is known exactly
(:func:`nntk_array.analytic.finite_width_nntk`), so the error of an estimate is measured, not
estimated: ‖C(K̂ − K)C‖_F / ‖CKC‖_F with C = I − 11ᵀ/N (the part of the kernel that a
ridge with intercept, or centred alignment, uses). For each M the plain U-statistic
(``variance_reduction="none"``) and the library's default estimator are run with
``repeats`` perturbation seeds; the RMS error over the repeats is reported, with the
M^(−1/2) line through the plain estimator's first point for reference.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from array_api_compat import array_namespace, device

from .. import analytic
from .._typing import Array, Namespace
from ..models import MLP
from ..nonlocal_ntk import nntk

__all__ = ["ESTIMATORS", "centred_error", "convergence"]

#: label -> ``variance_reduction`` option
ESTIMATORS = {"plain U-statistic": "none", "default (variance-reduced)": "auto"}


def _centre(xp: Namespace, k: Array) -> Array:
    k = k - xp.mean(k, axis=0, keepdims=True)
    return k - xp.mean(k, axis=1, keepdims=True)


def centred_error(estimate: Array, exact: Array) -> float:
    """‖C(K̂ − K)C‖_F / ‖CKC‖_F, C the centring matrix.

    Parameters
    ----------
    estimate, exact : array, shape (N, N)

    Returns
    -------
    float

    Examples
    --------
    >>> import numpy as np
    >>> K = np.array([[2.0, 0.0], [0.0, 1.0]])
    >>> centred_error(K + 5.0, K)       # a constant shift is invisible after centring
    0.0
    """
    xp = array_namespace(estimate, exact)
    diff = _centre(xp, estimate - exact)
    ref = _centre(xp, exact)
    return math.sqrt(float(xp.sum(diff * diff)) / float(xp.sum(ref * ref)))


def convergence(
    x: Array,
    *,
    width: int,
    sigma: float,
    samples: tuple[int, ...],
    repeats: int,
    advance: Callable[[str], None],
) -> list[dict[str, Any]]:
    """Centred errors of both estimators at every M, for the ReLU and sign nets (seed 0).

    Parameters
    ----------
    x : array, shape (N, d)
    width : int
    sigma : float
    samples : tuple of int
        The M values.
    repeats : int
        Perturbation seeds per M.
    advance : callable
        Called with a label after each (network, estimator).

    Returns
    -------
    list of dict
        One per (network, estimator, M, repeat): ``error`` and ``seconds``.

    Examples
    --------
    >>> import numpy as np
    >>> rows = convergence(np.linspace(-1, 1, 6)[:, None], width=8, sigma=0.3,
    ...                    samples=(64,), repeats=1, advance=lambda label: None)
    >>> len(rows), all(r["error"] > 0 for r in rows)
    (4, True)
    """
    xp = array_namespace(x)
    records = []
    for activation in ("relu", "sign"):
        model = MLP(x.shape[1], (width,), 1, activation)
        theta = model.init(0, xp=xp, dtype=x.dtype, device=device(x))
        exact = analytic.finite_width_nntk(model, theta, x, sigma=sigma)
        for label, reduction in ESTIMATORS.items():
            for m in samples:
                for rep in range(repeats):
                    start = time.perf_counter()
                    est = nntk(
                        model,
                        theta,
                        x,
                        sigma=sigma,
                        samples=m,
                        seed=5000 + rep,
                        variance_reduction=reduction,
                    )
                    error = centred_error(est, exact)  # reading it waits for the device
                    records.append(
                        {
                            "network": f"{activation} net",
                            "estimator": label,
                            "samples": m,
                            "repeat": rep,
                            "error": error,
                            "seconds": time.perf_counter() - start,
                        }
                    )
            advance(f"convergence, {activation} net, {label}")
    return records
