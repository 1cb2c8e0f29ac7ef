"""Predictions from a kernel: kernel (ridge) regression and linearized gradient flow.

The formulas are derived on the Mathematics page of the documentation (docs: Mathematics,
"Prediction").

Both take the train kernel K (N x N), the train targets y and optionally the test-train kernel
K* (N* x N), and return train and test predictions. Ridges are relative to the kernel's scale
tr(K)/N, so NTK and NNTK (whose scales differ) are compared at equal regularization, and the
ridgeless predictor is invariant under K -> cK. Monte Carlo NNTKs (unbiased estimator) need
not be positive semidefinite: ``psd=True`` clips negative eigenvalues first.
"""

from __future__ import annotations

import math

from array_api_compat import device

from ._typing import Array, Namespace
from ._validate import check_choice, check_finite, check_ndim
from ._xp import resolve
from .backends.linalg import solve_triangular
from .backends.tracing import is_concrete

__all__ = ["gradient_flow", "kernel_regression"]

SOLVERS = ("auto", "cholesky", "eigh")


def kernel_regression(
    k_train: Array,
    y_train: Array,
    k_test: Array | None = None,
    *,
    ridge: float = 0.0,
    solver: str = "auto",
    psd: bool = False,
    rcond: float | None = None,
) -> tuple[Array, Array | None]:
    """Kernel ridge(less) regression: f(X) = K (K + λI)⁻¹ y and f(X*) = K* (K + λI)⁻¹ y.

    See the Mathematics page of the documentation (docs: Mathematics, "Kernel ridge
    regression").

    Parameters
    ----------
    k_train : array, shape (N, N)
        Symmetric train kernel.
    y_train : array, shape (N,) or (N, O)
    k_test : array, shape (N*, N), optional
    ridge : float, default 0.0
        λ / (tr(K)/N), >= 0. ``0`` is the ridgeless (minimum-norm) predictor.
    solver : {"auto", "cholesky", "eigh"}
        ``"cholesky"`` factors K + λI (needs it positive definite; raises otherwise);
        ``"eigh"`` uses K = V diag(λ_k) Vᵀ and drops eigenvalues below ``rcond`` times the
        largest (pseudo-inverse). ``"auto"``: Cholesky for ``ridge > 0`` without ``psd``.
    psd : bool, default False
        Clip negative eigenvalues of K to zero first (forces the eigen solver).
    rcond : float, optional
        Relative eigenvalue cut-off of the eigen solver; default N·eps of the dtype.

    Returns
    -------
    f_train : array, shape of ``y_train``
    f_test : array, shape (N*,) or (N*, O), or ``None`` without ``k_test``

    Raises
    ------
    TypeError
        Non-floating or mixed-library arrays; a library without the ``linalg`` extension.
    ValueError
        Shape mismatches, NaN/inf, ``ridge < 0``, an unknown solver, a kernel that is not
        positive definite for the Cholesky solver.

    Examples
    --------
    >>> import numpy as np
    >>> import nntk_array as nk
    >>> x = np.linspace(-1, 1, 5)[:, None]
    >>> k = np.exp(-((x - x.T) ** 2))
    >>> f_train, f_test = nk.kernel_regression(k, np.sin(3 * x[:, 0]), k[:2])
    >>> bool(np.allclose(f_train, np.sin(3 * x[:, 0])))   # ridgeless interpolates
    True
    """
    xp, k_train, y_train, k_test, squeeze = _prepare(k_train, y_train, k_test)
    if isinstance(ridge, bool) or not isinstance(ridge, (int, float)) or not ridge >= 0:
        raise ValueError(f"`ridge` must be a number >= 0; got {ridge!r}")
    check_choice("solver", solver, SOLVERS)
    if solver == "auto":
        solver = "cholesky" if ridge > 0 and not psd else "eigh"
    if psd and solver == "cholesky":
        raise ValueError("psd=True needs the eigen solver: use solver='eigh' or 'auto'")
    n = k_train.shape[0]
    lam = ridge * _scale(xp, k_train)
    if solver == "cholesky":
        eye = xp.eye(n, dtype=k_train.dtype, device=device(k_train))
        not_pd = (
            "the train kernel plus ridge is not positive definite: raise `ridge`, or use "
            "solver='eigh' (with psd=True for a Monte Carlo kernel)"
        )
        try:  # NumPy and torch raise, JAX returns NaN
            chol = xp.linalg.cholesky(k_train + lam * eye)
        except (ValueError, RuntimeError) as err:
            raise ValueError(not_pd) from err
        if not _all_finite(xp, chol):
            raise ValueError(not_pd)
        # K + λI = L Lᵀ: two substitutions, O(N²) each, instead of two LU solves
        half = solve_triangular(xp, chol, y_train, lower=True)
        alpha = solve_triangular(xp, xp.permute_dims(chol, (1, 0)), half, lower=False)
    else:
        vals, vecs = _eigh(xp, k_train, psd)
        cut = (n * _eps(xp, k_train) if rcond is None else rcond) * xp.max(xp.abs(vals))
        shifted = vals + lam
        keep = xp.abs(shifted) > cut
        inv = xp.where(keep, 1.0 / xp.where(keep, shifted, 1.0), 0.0)
        alpha = xp.matmul(vecs, inv[:, None] * xp.matmul(xp.permute_dims(vecs, (1, 0)), y_train))
        if psd:  # predict with the clipped kernel too
            k_train = xp.matmul(vecs * vals[None, :], xp.permute_dims(vecs, (1, 0)))
    f_train = xp.matmul(k_train, alpha)
    f_test = None if k_test is None else xp.matmul(k_test, alpha)
    return _squeeze(f_train, squeeze), None if f_test is None else _squeeze(f_test, squeeze)


def gradient_flow(
    k_train: Array,
    y_train: Array,
    k_test: Array | None = None,
    *,
    t: float | Array,
    learning_rate: float = 1.0,
    f0_train: Array | None = None,
    f0_test: Array | None = None,
    psd: bool = True,
) -> tuple[Array, Array | None]:
    """Linearized gradient flow on L = ½‖f(X) − y‖² at time(s) ``t``.

    With K = V diag(λ_k) Vᵀ and η the learning rate,

        f_t(X)  = y + V diag(e^{−ηλt}) Vᵀ (f₀(X) − y)
        f_t(X*) = f₀(X*) − K* V diag((1 − e^{−ηλt})/λ) Vᵀ (f₀(X) − y),

    from one eigendecomposition for all times; (1 − e^{−ηλt})/λ is evaluated with ``expm1``
    and tends to ηt as λ → 0, so zero eigenvalues are stable. As t → ∞ the test prediction
    tends to the ridgeless kernel regression (docs: Mathematics, "Linearized gradient flow").

    Parameters
    ----------
    k_train, y_train, k_test
        As in :func:`kernel_regression`.
    t : float or array of shape (T,)
        Time(s) >= 0, in units where the learning rate is ``learning_rate``.
    learning_rate : float, default 1.0
    f0_train, f0_test : array, optional
        Outputs at initialization (shapes of ``y_train`` and the test predictions); zero by
        default (a centred initialization).
    psd : bool, default True
        Clip negative eigenvalues (a Monte Carlo NNTK can have some; they would grow
        exponentially along the flow).

    Returns
    -------
    f_train, f_test : arrays of shape ``y_train.shape`` and (N*, ...) for scalar ``t``, with a
        leading (T,) axis for an array of times; ``f_test`` is ``None`` without ``k_test``.

    Raises
    ------
    TypeError, ValueError
        As :func:`kernel_regression`; negative or non-finite times, ``learning_rate <= 0``.

    Examples
    --------
    >>> import numpy as np
    >>> import nntk_array as nk
    >>> k = np.array([[2.0, 1.0], [1.0, 2.0]])
    >>> f, _ = nk.gradient_flow(k, np.array([1.0, -1.0]), t=np.array([0.0, 1e6]))
    >>> np.round(f, 6) + 0.0  # starts at f0 = 0, ends at the targets
    array([[ 0.,  0.],
           [ 1., -1.]])
    """
    xp, k_train, y_train, k_test, squeeze = _prepare(k_train, y_train, k_test)
    if not isinstance(learning_rate, (int, float)) or not learning_rate > 0:
        raise ValueError(f"`learning_rate` must be > 0; got {learning_rate!r}")
    scalar_t = not hasattr(t, "shape")
    if scalar_t:
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 <= t < math.inf:
            raise ValueError(f"`t` must be finite and >= 0; got {t!r}")
        times = xp.asarray([float(t)], dtype=k_train.dtype, device=device(k_train))
    else:
        _, (times, _) = resolve(t=t, k_train=k_train)
        check_ndim("t", times, (1,), "(T,)")
        check_finite(xp, t=times)
        if not _all_true(xp, times >= 0):
            raise ValueError("`t` must be >= 0")
    f0 = _initial(xp, f0_train, y_train, "f0_train")
    vals, vecs = _eigh(xp, k_train, psd)
    rate = learning_rate * vals  # (N,)
    x = rate[None, :] * times[:, None]  # (T, N)
    decay = xp.exp(-x)
    # (1 - e^{-x}) / λ = η t (-expm1(-x)) / x, and η t at x = 0
    gain = xp.where(
        x > 0, -xp.expm1(-x) / xp.where(x > 0, rate[None, :], 1.0), learning_rate * times[:, None]
    )
    proj = xp.matmul(xp.permute_dims(vecs, (1, 0)), f0 - y_train)  # (N, O)
    f_train = y_train[None, ...] + xp.matmul(vecs[None, ...], decay[:, :, None] * proj[None, ...])
    f_test = None
    if k_test is not None:
        f0t = _initial(
            xp,
            f0_test,
            xp.zeros(
                (k_test.shape[0], y_train.shape[1]), dtype=y_train.dtype, device=device(y_train)
            ),
            "f0_test",
        )
        f_test = f0t[None, ...] - xp.matmul(
            xp.matmul(k_test, vecs)[None, ...], gain[:, :, None] * proj[None, ...]
        )
    if scalar_t:
        f_train = f_train[0, ...]
        f_test = None if f_test is None else f_test[0, ...]
    return _squeeze(f_train, squeeze), None if f_test is None else _squeeze(f_test, squeeze)


def _prepare(
    k_train: Array, y_train: Array, k_test: Array | None
) -> tuple[Namespace, Array, Array, Array | None, bool]:
    xp, (k_train, y_train, k_test) = resolve(k_train=k_train, y_train=y_train, k_test=k_test)
    if not hasattr(xp, "linalg"):
        raise TypeError(
            f"kernel predictions need the array API linalg extension, which {xp.__name__} "
            "lacks; convert the kernels to a library that has it (NumPy, torch, JAX, CuPy)"
        )
    check_ndim("k_train", k_train, (2,), "(N, N)")
    n = k_train.shape[0]
    if k_train.shape[1] != n:
        raise ValueError(f"`k_train` must be square (N, N); got {tuple(k_train.shape)}")
    check_ndim("y_train", y_train, (1, 2), f"({n},) or ({n}, O)")
    if y_train.shape[0] != n:
        raise ValueError(f"`y_train` must have {n} rows to match `k_train`; got {y_train.shape}")
    if k_test is not None:
        check_ndim("k_test", k_test, (2,), f"(N*, {n})")
        if k_test.shape[1] != n:
            raise ValueError(f"`k_test` must have shape (N*, {n}); got {tuple(k_test.shape)}")
    check_finite(xp, k_train=k_train, y_train=y_train, k_test=k_test)
    squeeze = y_train.ndim == 1
    if squeeze:
        y_train = y_train[:, None]
    return xp, k_train, y_train, k_test, squeeze


def _initial(xp: Namespace, f0: Array | None, like: Array, name: str) -> Array:
    if f0 is None:
        return xp.zeros_like(like)
    _, (f0, _) = resolve(**{name: f0}, like=like)
    f0 = f0[:, None] if f0.ndim == 1 else f0
    if tuple(f0.shape) != tuple(like.shape):
        raise ValueError(f"`{name}` must have shape {tuple(like.shape)}; got {tuple(f0.shape)}")
    check_finite(xp, **{name: f0})
    return f0


def _eigh(xp: Namespace, k: Array, psd: bool) -> tuple[Array, Array]:
    sym = 0.5 * (k + xp.permute_dims(k, (1, 0)))
    vals, vecs = xp.linalg.eigh(sym)
    return (xp.maximum(vals, 0.0) if psd else vals), vecs


def _scale(xp: Namespace, k: Array) -> Array:
    return xp.sum(xp.linalg.diagonal(k)) / k.shape[0]


def _eps(xp: Namespace, k: Array) -> float:
    return float(xp.finfo(k.dtype).eps)


def _all_finite(xp: Namespace, a: Array) -> bool:
    return _all_true(xp, xp.isfinite(a))


def _all_true(xp: Namespace, condition: Array) -> bool:
    """``all(condition)``, or True when it cannot be read now (a JAX trace: no value yet)."""
    ok = xp.all(condition)
    return not is_concrete(ok) or bool(ok)


def _squeeze(f: Array, squeeze: bool) -> Array:
    return f[..., 0] if squeeze else f
