"""Predictions from a kernel: kernel (ridge) regression and linearized gradient flow.

The formulas are derived on the Mathematics page of the documentation (docs: Mathematics,
"Prediction").

Both take the train kernel K (N x N), the train targets y and optionally the test-train kernel
K* (N* x N), and return train and test predictions. Ridges are relative to the kernel's scale
tr(K)/N, so NTK and NNTK (whose scales differ) are compared at equal regularization, and the
ridgeless predictor is invariant under K -> cK. Monte Carlo NNTKs (unbiased estimator) need
not be positive semidefinite: ``psd=True`` clips negative eigenvalues first.

:func:`kernel_regression` also takes matrix-free kernels (:mod:`nntk_array.operators`): a
symmetric low-rank factor K = R Rᵀ is solved in r × r by the Woodbury (push-through) identity,
any other kernel operator by conjugate gradients on its products.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

from array_api_compat import device, is_array_api_obj

from ._mc.plan import NTK_BLOCK_BYTES
from ._typing import Array, Namespace
from ._validate import check_choice, check_finite, check_ndim, check_positive_int
from ._xp import resolve
from .backends.linalg import solve_triangular
from .backends.random import Generator
from .backends.tracing import is_concrete
from .operators import LowRankOperator
from .options import Resources

__all__ = ["gradient_flow", "kernel_regression"]

SOLVERS = ("auto", "cholesky", "eigh", "cg")
PRECONDITIONERS = ("nystrom",)
#: the Nyström preconditioner's rank: at most this many columns, and the N × ℓ arrays of its
#: sketch (at most NYSTROM_COPIES at once: the drawn test matrix, its QR and K Ω; then the
#: Cholesky-scaled sketch and the eigenvectors) within 1/NYSTROM_SHARE of the memory budget
NYSTROM_RANK = 100
NYSTROM_COPIES = 3
NYSTROM_SHARE = 2


def kernel_regression(
    k_train: Array | Any,
    y_train: Array,
    k_test: Array | Any | None = None,
    *,
    ridge: float = 0.0,
    solver: str = "auto",
    psd: bool = False,
    rcond: float | None = None,
    tol: float | None = None,
    maxiter: int | None = None,
    preconditioner: Callable[[Array], Array] | str | None = "nystrom",
    memory_budget: int | None = None,
) -> tuple[Array, Array | None]:
    """Kernel ridge(less) regression: f(X) = K (K + λI)⁻¹ y and f(X*) = K* (K + λI)⁻¹ y.

    See the Mathematics page of the documentation (docs: Mathematics, "Kernel ridge
    regression").

    Three kinds of train kernel, with the same predictor (the same ridge scale tr(K)/N):

    - a dense array: Cholesky or eigendecomposition of K + λI, O(N³) time, N² memory;
    - a symmetric :class:`~nntk_array.LowRankOperator` ``LowRankOperator(R)``, K = R Rᵀ
      with R (N, r): f(X) = R (RᵀR + λI)⁻¹ Rᵀ y (Woodbury, push-through), O(N·r²) time
      and r² memory beyond R, tr(K) = ‖R‖²_F; ``"cholesky"``/``"eigh"`` then factor the
      r × r matrix;
    - any other kernel operator (``shape``, ``dtype``, ``device``, ``matmul(v)`` and
      ``diagonal()`` for tr(K); :func:`~nntk_array.ntk_operator`): conjugate gradients on
      (K + λI) α = y, one product K v per iteration for all O targets together, memory a
      few N × O arrays. Needs ``ridge > 0``.

    The test kernel is an array (N*, N) or any kernel operator of that shape (for a factor,
    ``LowRankOperator(R_test, R)``).

    Parameters
    ----------
    k_train : array of shape (N, N), or a kernel operator
        Symmetric train kernel.
    y_train : array, shape (N,) or (N, O)
    k_test : array of shape (N*, N), or a kernel operator, optional
    ridge : float, default 0.0
        λ / (tr(K)/N), >= 0. ``0`` is the ridgeless (minimum-norm) predictor.
    solver : {"auto", "cholesky", "eigh", "cg"}
        ``"cholesky"`` factors K + λI (RᵀR + λI for a factor; needs it positive definite;
        raises otherwise); ``"eigh"`` uses K = V diag(λ_k) Vᵀ (of RᵀR for a factor) and
        drops eigenvalues below ``rcond`` times the largest (pseudo-inverse). ``"cg"``:
        conjugate gradients, for kernel operators. ``"auto"``: for arrays and factors
        Cholesky for ``ridge > 0`` without ``psd``, else eigh; for other operators CG.
    psd : bool, default False
        Clip negative eigenvalues of K to zero first (forces the eigen solver; a factor's
        kernel is positive semidefinite already; not available with CG).
    rcond : float, optional
        Relative eigenvalue cut-off of the eigen solver; default N·eps of the dtype.
    tol : float, optional
        CG stops when every target column's residual ‖y − (K + λI)α‖ is at most ``tol``
        times ‖y‖; default √eps of the dtype (1.5e-8 for float64, 3.5e-4 for float32).
    maxiter : int, optional
        Most CG iterations (products with K); default N. Not converging warns.
    preconditioner : "nystrom", callable or None, default "nystrom"
        For CG. ``"nystrom"``: a randomized Nyström preconditioner (Frangella, Tropp & Udell
        2023) from one product of K with ℓ = min(100, N, (memory_budget / 2) /
        (3 · N · itemsize)) columns (seed 0): K ≈ U Λ̂ Uᵀ, M⁻¹ = (λ̂_ℓ + λ) U (Λ̂ + λ)⁻¹
        Uᵀ + I − U Uᵀ; at most 3·N·ℓ numbers while it is built (half the budget), N·ℓ
        held. On the fast-decaying NTK spectrum of an MLP at ridge 1e-3 it cuts CG from
        ~330 products to ~18 at N = 4096 (the Jacobi diagonal does not help there); at
        N = 100,000 the default budget gives ℓ = 55.
        ``None``: plain CG. A callable: r ↦ M⁻¹ r for residuals r of shape (N, O),
        M ≈ K + λI symmetric positive definite.
    memory_budget : int, optional
        Bytes for the Nyström sketch (half of them; see ``preconditioner``). Defaults to the
        operator's own ``budget`` (that of :func:`~nntk_array.ntk_operator`), else 256 MiB.
        Arrays and factors ignore it.

    Returns
    -------
    f_train : array, shape of ``y_train``
    f_test : array, shape (N*,) or (N*, O), or ``None`` without ``k_test``

    Raises
    ------
    TypeError
        Non-floating or mixed-library arrays; a library without the ``linalg`` extension; a
        kernel that is neither an array nor a kernel operator, an operator without
        ``diagonal()``; a non-callable ``preconditioner``.
    ValueError
        Shape mismatches, NaN/inf, ``ridge < 0``, an unknown solver, a kernel that is not
        positive definite for the Cholesky solver; for operators ``ridge = 0`` with CG, a
        solver that needs the matrix, ``tol`` outside (0, 1), ``maxiter`` < 1,
        ``memory_budget`` < 1.

    Warns
    -----
    RuntimeWarning
        CG did not reach ``tol`` within ``maxiter`` iterations.

    Examples
    --------
    >>> import numpy as np
    >>> import nntk_array as nk
    >>> x = np.linspace(-1, 1, 5)[:, None]
    >>> k = np.exp(-((x - x.T) ** 2))
    >>> f_train, f_test = nk.kernel_regression(k, np.sin(3 * x[:, 0]), k[:2])
    >>> bool(np.allclose(f_train, np.sin(3 * x[:, 0])))   # ridgeless interpolates
    True
    >>> R = np.stack([np.ones(5), x[:, 0]], axis=1)           # a rank-2 kernel R Rᵀ
    >>> f_train, _ = nk.kernel_regression(nk.LowRankOperator(R), x[:, 0], ridge=1e-3)
    >>> f_dense, _ = nk.kernel_regression(R @ R.T, x[:, 0], ridge=1e-3)
    >>> bool(np.allclose(f_train, f_dense))
    True
    """
    if isinstance(ridge, bool) or not isinstance(ridge, (int, float)) or not ridge >= 0:
        raise ValueError(f"`ridge` must be a number >= 0; got {ridge!r}")
    check_choice("solver", solver, SOLVERS)
    budget = Resources(memory_budget=memory_budget).memory_budget
    if not is_array_api_obj(k_train):
        if budget is None:
            own = getattr(k_train, "budget", None)
            budget = own if isinstance(own, int) and own > 0 else NTK_BLOCK_BYTES
        return _regress_operator(
            k_train,
            y_train,
            k_test,
            ridge,
            solver,
            psd,
            rcond,
            tol,
            maxiter,
            preconditioner,
            budget,
        )
    if solver == "cg":
        raise ValueError(
            "solver='cg' is for kernel operators; a dense `k_train` takes 'auto', "
            "'cholesky' or 'eigh'"
        )
    xp, k_train, y_train, k_test, squeeze = _prepare(k_train, y_train, k_test)
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


def _regress_operator(
    k_train: Any,
    y_train: Array,
    k_test: Any,
    ridge: float,
    solver: str,
    psd: bool,
    rcond: float | None,
    tol: float | None,
    maxiter: int | None,
    preconditioner: Callable[[Array], Array] | str | None,
    budget: int,
) -> tuple[Array, Array | None]:
    """:func:`kernel_regression` for a kernel operator: Woodbury for a symmetric factor,
    else conjugate gradients. Every argument is checked before the first product."""
    n = _operator_rows("k_train", k_train, None)
    if tuple(k_train.shape) != (n, n):
        raise ValueError(f"`k_train` must be square (N, N); got {tuple(k_train.shape)}")
    factor = isinstance(k_train, LowRankOperator)
    if factor and not k_train.symmetric:
        raise ValueError("a factor `k_train` must be symmetric: LowRankOperator(R), K = R Rᵀ")
    if solver == "auto":
        solver = ("cholesky" if ridge > 0 else "eigh") if factor else "cg"
    if not factor and solver != "cg":
        raise ValueError(
            f"solver={solver!r} needs the kernel's matrix; a kernel operator takes 'cg' "
            "(or is a LowRankOperator, solved in r x r)"
        )
    like = k_train.left if factor else None
    xp, (y_train, dense_test, like) = resolve(
        y_train=y_train, k_test=k_test if is_array_api_obj(k_test) else None, k_train=like
    )
    check_ndim("y_train", y_train, (1, 2), f"({n},) or ({n}, O)")
    if y_train.shape[0] != n:
        raise ValueError(f"`y_train` must have {n} rows to match `k_train`; got {y_train.shape}")
    if dense_test is not None:
        check_ndim("k_test", dense_test, (2,), f"(N*, {n})")
    if k_test is not None:
        _operator_rows("k_test", dense_test if dense_test is not None else k_test, n)
    check_finite(xp, y_train=y_train, k_test=dense_test)
    squeeze = y_train.ndim == 1
    y = xp.astype(y_train[:, None] if squeeze else y_train, k_train.dtype, copy=False)
    if solver != "cg":
        f_train, alpha, w = _woodbury(xp, k_train.left, y, ridge, solver, rcond)
    else:
        if ridge == 0:
            raise ValueError("conjugate gradients need `ridge` > 0 (K + λI positive definite)")
        if psd:
            raise ValueError("psd=True clips eigenvalues of a dense kernel; CG has none")
        tol = _tolerance(xp, k_train.dtype, tol)
        maxiter = n if maxiter is None else check_positive_int("maxiter", maxiter)
        if preconditioner is not None and not callable(preconditioner):
            if not isinstance(preconditioner, str):
                raise TypeError(
                    "`preconditioner` must be 'nystrom', a callable r -> M⁻¹r or None; got "
                    f"{type(preconditioner).__name__}"
                )
            check_choice("preconditioner", preconditioner, PRECONDITIONERS)
        diagonal = getattr(k_train, "diagonal", None)
        if not callable(diagonal):
            raise TypeError(
                "`k_train` must offer diagonal() for the ridge's scale tr(K)/N "
                "(nk.ntk_operator and nk.LowRankOperator do)"
            )
        lam = ridge * xp.sum(diagonal()) / n
        apply = (
            _nystrom(xp, k_train, n, lam, budget)
            if isinstance(preconditioner, str)
            else preconditioner
        )
        alpha, w = _cg(xp, k_train.matmul, y, lam, tol, maxiter, apply), None
        f_train = k_train.matmul(alpha)
    f_test = None
    if dense_test is not None:
        f_test = xp.matmul(dense_test, alpha)
    elif isinstance(k_test, LowRankOperator) and w is not None and k_test.right is k_train.left:
        # K* α = R* (Rᵀ α) = R* w, with w = Rᵀα of the Woodbury solve: no cancellation
        f_test = xp.matmul(k_test.left, w)
    elif k_test is not None:
        f_test = k_test.matmul(alpha)
    return _squeeze(f_train, squeeze), None if f_test is None else _squeeze(f_test, squeeze)


def _operator_rows(name: str, k: Any, n: int | None) -> int:
    """N1 of a kernel (array or operator) ``name``, checked to have N2 = ``n`` columns."""
    if not is_array_api_obj(k) and not (
        hasattr(k, "shape") and callable(getattr(k, "matmul", None))
    ):
        raise TypeError(
            f"`{name}` must be an array or a kernel operator (shape, dtype, device, "
            f"matmul(v)); got {type(k).__name__}"
        )
    shape = tuple(k.shape)
    if len(shape) != 2 or (n is not None and shape[1] != n):
        raise ValueError(f"`{name}` must have shape (N*, {n or 'N'}); got {shape}")
    return int(shape[0])


def _tolerance(xp: Namespace, dtype: Any, tol: float | None) -> float:
    if tol is None:
        root: float = float(xp.finfo(dtype).eps) ** 0.5
        return root
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not 0 < tol < 1:
        raise ValueError(f"`tol` must be a number in (0, 1); got {tol!r}")
    return float(tol)


def _woodbury(
    xp: Namespace, r: Array, y: Array, ridge: float, solver: str, rcond: float | None
) -> tuple[Array, Array, Array]:
    """(f_train, α, w) for K = R Rᵀ: w = (RᵀR + λI)⁺ Rᵀ y = Rᵀ α (push-through), f = R w,
    and α = (y − R w)/λ, or R (RᵀR)⁺ w when λ = 0. O(N r²) time, r² memory beyond R."""
    n, rank = r.shape
    rt = xp.permute_dims(r, (1, 0))
    gram = xp.matmul(rt, r)  # (r, r): the nonzero spectrum of K = R Rᵀ
    lam = ridge * xp.sum(xp.linalg.diagonal(gram)) / n  # tr(K) = tr(RᵀR), no N × r temporary
    if solver == "cholesky":
        eye = xp.eye(rank, dtype=r.dtype, device=device(r))
        not_pd = "RᵀR plus ridge is not positive definite: raise `ridge`, or use solver='eigh'"
        try:  # NumPy and torch raise, JAX returns NaN
            chol = xp.linalg.cholesky(gram + lam * eye)
        except (ValueError, RuntimeError) as err:
            raise ValueError(not_pd) from err
        if not _all_finite(xp, chol):
            raise ValueError(not_pd)

        def solve(b: Array) -> Array:
            half = solve_triangular(xp, chol, b, lower=True)
            return solve_triangular(xp, xp.permute_dims(chol, (1, 0)), half, lower=False)

    else:
        vals, vecs = _eigh(xp, gram, False)
        cut = (n * _eps(xp, r) if rcond is None else rcond) * xp.max(xp.abs(vals))
        shifted = vals + lam
        keep = xp.abs(shifted) > cut
        inv = xp.where(keep, 1.0 / xp.where(keep, shifted, 1.0), 0.0)

        def solve(b: Array) -> Array:
            return xp.matmul(vecs, inv[:, None] * xp.matmul(xp.permute_dims(vecs, (1, 0)), b))

    w = solve(xp.matmul(rt, y))
    f_train = xp.matmul(r, w)
    alpha = (y - f_train) / lam if ridge > 0 else xp.matmul(r, solve(w))
    return f_train, alpha, w


def nystrom_rank(n: int, itemsize: int, budget: int) -> int:
    """ℓ, the Nyström sketch's columns: at most :data:`NYSTROM_RANK` and N, and its
    :data:`NYSTROM_COPIES` N × ℓ arrays within 1/:data:`NYSTROM_SHARE` of ``budget``."""
    room = (budget // NYSTROM_SHARE) // (NYSTROM_COPIES * n * itemsize)
    return max(1, min(NYSTROM_RANK, n, room))


def _nystrom(
    xp: Namespace, k: Any, n: int, lam: Array, budget: int
) -> Callable[[Array], Array] | None:
    """The randomized Nyström preconditioner r ↦ M⁻¹ r of K + λI from one product K Ω
    (Frangella, Tropp & Udell, SIAM J. Matrix Anal. Appl. 2023, Algorithms 2.1 and 5.1), or
    ``None`` where the sketch breaks down (plain CG then). Its N × ℓ arrays stay within
    half of ``budget`` (:func:`nystrom_rank`)."""
    dtype = k.dtype
    rank = nystrom_rank(n, xp.finfo(dtype).bits // 8, budget)
    gen = Generator(0, xp=xp, device=k.device)
    q, _ = xp.linalg.qr(gen.normal((n, rank), dtype=dtype))
    y = k.matmul(q)
    shift = math.sqrt(n) * float(xp.finfo(dtype).eps) * xp.sqrt(xp.sum(y * y))
    y = y + shift * q
    m = xp.matmul(xp.permute_dims(q, (1, 0)), y)
    del q
    try:  # NumPy and torch raise, JAX returns NaN
        chol = xp.linalg.cholesky(0.5 * (m + xp.permute_dims(m, (1, 0))))
    except (ValueError, RuntimeError):
        return None
    if not _all_finite(xp, chol):
        return None
    # B = Y C⁻ᵀ, K̂ = B Bᵀ = U Σ² Uᵀ from the eigenvectors V of the ℓ × ℓ BᵀB: U = B V / Σ
    b = xp.permute_dims(solve_triangular(xp, chol, xp.permute_dims(y, (1, 0)), lower=True), (1, 0))
    del y
    sq, v = _eigh(xp, xp.matmul(xp.permute_dims(b, (1, 0)), b), False)
    keep = sq > n * float(xp.finfo(dtype).eps) * xp.max(sq)
    scale = xp.where(keep, 1.0 / xp.sqrt(xp.where(keep, sq, 1.0)), 0.0)
    u = xp.matmul(b, v * scale[None, :])  # columns of dropped directions are zero
    del b
    vals = xp.where(keep, xp.maximum(sq - shift, 0.0), 0.0)
    floor = xp.min(xp.where(keep, vals, xp.max(vals))) + lam  # λ̂_ℓ + λ of the kept

    def apply(r: Array) -> Array:
        ur = xp.matmul(xp.permute_dims(u, (1, 0)), r)
        return floor * xp.matmul(u, ur / (vals[:, None] + lam)) + r - xp.matmul(u, ur)

    return apply


def _cg(
    xp: Namespace,
    matvec: Callable[[Array], Array],
    y: Array,
    lam: Array,
    tol: float,
    maxiter: int,
    preconditioner: Callable[[Array], Array] | None,
) -> Array:
    """(K + λI)⁻¹ y by (preconditioned) conjugate gradients, every column of y at once with
    its own step sizes; stops when each column's residual is at most ``tol`` ‖y_c‖."""

    def precondition(res: Array) -> Array:
        return res if preconditioner is None else preconditioner(res)

    def safe_ratio(num: Array, den: Array) -> Array:  # 0 for converged columns (0/0)
        return xp.where(den != 0, num / xp.where(den != 0, den, 1.0), 0.0)

    target = tol * xp.sqrt(xp.sum(y * y, axis=0))
    alpha = xp.zeros_like(y)
    res = y
    z = precondition(res)
    p, rz = z, xp.sum(res * z, axis=0)
    norm = xp.sqrt(xp.sum(res * res, axis=0))
    for _ in range(maxiter):
        if _converged(xp, norm <= target):
            return alpha
        q = matvec(p) + lam * p
        step = safe_ratio(rz, xp.sum(p * q, axis=0))
        alpha = alpha + step * p
        res = res - step * q
        z = precondition(res)
        rz_next = xp.sum(res * z, axis=0)
        p = z + safe_ratio(rz_next, rz) * p
        rz = rz_next
        norm = xp.sqrt(xp.sum(res * res, axis=0))
    if not _converged(xp, norm <= target):
        worst = float(xp.max(norm / xp.where(target > 0, target / tol, 1.0)))
        warnings.warn(
            f"conjugate gradients stopped after maxiter={maxiter} iterations at relative "
            f"residual {worst:.3g} > tol={tol:.3g}: raise `maxiter` or `ridge`, or pass a "
            "`preconditioner`",
            RuntimeWarning,
            stacklevel=3,
        )
    return alpha


def _converged(xp: Namespace, condition: Array) -> bool:
    """``all(condition)``, False while it cannot be read (a JAX trace: run every iteration)."""
    ok = xp.all(condition)
    return is_concrete(ok) and bool(ok)


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
