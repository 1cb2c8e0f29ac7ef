"""The fair-comparison protocol: K-fold cross-validation on the training set only.

Every kernel gets its own ridge λ (relative to tr(K)/N, as :func:`nntk_array.kernel_regression`
takes it), its own gradient-flow stopping time t (in units of N/tr(K), so the grid means the
same for kernels of any scale) and, where it has one, its own σ: the candidate with the
smallest mean held-out squared error over the folds wins (the first on ties, i.e. the
smallest σ, ridge or time). The folds are a random partition of the training indices, drawn
per seed and shared by every kernel of that seed, so the comparisons are paired. The
predictors are the library's: :func:`nntk_array.kernel_regression` and
:func:`nntk_array.gradient_flow` from f₀ = 0, both through an eigendecomposition with
negative eigenvalues clipped (``psd=True``; Monte Carlo kernels can have some), for every
kernel alike. A kernel that is identically zero (the quantized network's local NTK) predicts
f = 0 for every choice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from array_api_compat import array_namespace, device

from .._typing import Array, Namespace
from ..predict import gradient_flow, kernel_regression

__all__ = ["Choice", "CrossValidation", "cross_validate", "fit", "folds", "select"]


def folds(n: int, k: int, seed: int) -> list[np.ndarray]:
    """A random partition of range(n) into ``k`` folds of nearly equal size.

    Parameters
    ----------
    n : int
        Number of training points.
    k : int
        Number of folds, 2 <= k <= n.
    seed : int
        NumPy seed of the permutation.

    Returns
    -------
    list of ndarray
        The held-out indices of each fold, sorted.

    Examples
    --------
    >>> parts = folds(10, 3, seed=0)
    >>> sorted(len(p) for p in parts), sorted(int(i) for p in parts for i in p) == list(range(10))
    ([3, 3, 4], True)
    """
    if not 2 <= k <= n:
        raise ValueError(f"need 2 <= folds <= n = {n}; got {k}")
    perm = np.random.default_rng(seed).permutation(n)
    return [np.sort(part) for part in np.array_split(perm, k)]


def _is_zero(xp: Namespace, k: Array) -> bool:
    return not bool(xp.any(k != 0.0))


def _take(xp: Namespace, a: Array, rows: np.ndarray, cols: np.ndarray | None) -> Array:
    idx = xp.asarray(rows, device=device(a))
    out = xp.take(a, idx, axis=0)
    if cols is None:
        return out
    return xp.take(out, xp.asarray(cols, device=device(a)), axis=1)


@dataclass(frozen=True)
class CrossValidation:
    """Mean held-out squared errors of one kernel: ``ridge[i]`` for ``ridges[i]`` and
    ``flow[j]`` for ``times[j]``."""

    ridge: tuple[float, ...]
    flow: tuple[float, ...]


def cross_validate(
    k_train: Array,
    y_train: Array,
    parts: Sequence[np.ndarray],
    *,
    ridges: Sequence[float],
    times: Sequence[float],
) -> CrossValidation:
    """K-fold cross-validation errors of kernel ridge regression and gradient flow.

    For each fold the predictors are fitted on the other folds' rows and columns of
    ``k_train`` and scored on the held-out rows. Ridges are relative to the fold kernel's
    tr(K)/n; times are in units of n/tr(K) of the fold kernel.

    Parameters
    ----------
    k_train : array, shape (N, N)
    y_train : array, shape (N,)
    parts : sequence of index arrays
        The held-out indices of each fold (:func:`folds`).
    ridges, times : sequence of float
        The candidate relative ridges (> 0) and relative stopping times (> 0).

    Returns
    -------
    CrossValidation

    Examples
    --------
    >>> import numpy as np
    >>> x = np.linspace(-1.0, 1.0, 20)
    >>> K = np.exp(-((x[:, None] - x[None, :]) ** 2) / 0.1)
    >>> cv = cross_validate(K, np.sin(3 * x), folds(20, 4, seed=0),
    ...                     ridges=(1e-6, 1e2), times=(1e3, 1e-2))
    >>> cv.ridge[0] < cv.ridge[1], cv.flow[0] < cv.flow[1]
    (True, True)
    """
    xp = array_namespace(k_train, y_train)
    n = k_train.shape[0]
    ridge_sq = [0.0] * len(ridges)
    flow_sq = [0.0] * len(times)
    for held in parts:
        kept = np.setdiff1d(np.arange(n), held)
        k_kk = _take(xp, k_train, kept, kept)
        k_hk = _take(xp, k_train, held, kept)
        y_k, y_h = _take(xp, y_train, kept, None), _take(xp, y_train, held, None)
        if _is_zero(xp, k_kk):
            base = float(xp.sum(y_h * y_h))
            ridge_sq = [s + base for s in ridge_sq]
            flow_sq = [s + base for s in flow_sq]
            continue
        for i, r in enumerate(ridges):
            _, pred = kernel_regression(k_kk, y_k, k_hk, ridge=r, psd=True)
            ridge_sq[i] += float(xp.sum((pred - y_h) ** 2))
        unit = kept.size / float(xp.sum(xp.linalg.diagonal(k_kk)))
        t = xp.asarray([s * unit for s in times], dtype=k_train.dtype, device=device(k_train))
        _, paths = gradient_flow(k_kk, y_k, k_hk, t=t, psd=True)
        assert paths is not None  # a test kernel was given
        for j in range(len(times)):
            flow_sq[j] += float(xp.sum((paths[j, ...] - y_h) ** 2))
    return CrossValidation(tuple(s / n for s in ridge_sq), tuple(s / n for s in flow_sq))


@dataclass(frozen=True)
class Choice:
    """The winning candidate: index of the kernel (e.g. of its σ), the hyperparameter's
    value and its cross-validation error."""

    kernel: int
    value: float
    cv_error: float


def select(errors: Sequence[Sequence[float]], values: Sequence[float]) -> Choice:
    """The (kernel, value) pair with the smallest CV error; the first one on ties.

    Parameters
    ----------
    errors : sequence of sequences of float
        ``errors[i][j]``: the CV error of kernel i with hyperparameter ``values[j]``.
    values : sequence of float

    Returns
    -------
    Choice

    Examples
    --------
    >>> select([[3.0, 2.0], [1.0, 1.0]], [0.1, 1.0])
    Choice(kernel=1, value=0.1, cv_error=1.0)
    """
    best = min(
        ((e, i, j) for i, row in enumerate(errors) for j, e in enumerate(row)),
        key=lambda c: (c[0], c[1], c[2]),
    )
    return Choice(best[1], float(values[best[2]]), float(best[0]))


def fit(
    k_train: Array, y_train: Array, k_test: Array, *, ridge: float | None, time: float | None
) -> Array:
    """Test predictions of ridge regression (``ridge``) or gradient flow (``time``).

    Parameters
    ----------
    k_train : array, shape (N, N)
    y_train : array, shape (N,)
    k_test : array, shape (N*, N)
    ridge : float or None
        Relative ridge; give exactly one of ``ridge`` and ``time``.
    time : float or None
        Stopping time in units of N/tr(K).

    Returns
    -------
    array, shape (N*,)

    Examples
    --------
    >>> import numpy as np
    >>> K = np.array([[2.0, 1.0], [1.0, 2.0]])
    >>> fit(K, np.array([1.0, -1.0]), K, ridge=1e-9, time=None).round(6) + 0.0
    array([ 1., -1.])
    """
    xp = array_namespace(k_train, y_train, k_test)
    if (ridge is None) == (time is None):
        raise ValueError("give exactly one of `ridge` and `time`")
    if _is_zero(xp, k_train):
        return xp.zeros((k_test.shape[0],), dtype=k_test.dtype, device=device(k_test))
    if ridge is not None:
        return kernel_regression(k_train, y_train, k_test, ridge=ridge, psd=True)[1]
    assert time is not None
    unit = k_train.shape[0] / float(xp.sum(xp.linalg.diagonal(k_train)))
    return gradient_flow(k_train, y_train, k_test, t=time * unit, psd=True)[1]
