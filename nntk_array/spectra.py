"""Spectra of kernels and the spectral bias of kernel gradient flow.

A kernel's eigendecomposition K = Σ_i λ_i v_i v_iᵀ says what kernel regression and gradient
flow learn first: under the flow the residual along v_i decays like e^{−ηλ_i t}, so a target
whose energy sits in the top eigendirections is learned fast, and one whose energy sits in
the tail slowly (spectral bias). This module computes the spectrum (exactly, or its top k by
Lanczos or randomized subspace iteration from kernel-vector products only), the share of a
target's energy in the top directions, the effective dimension, and the per-mode learning
curves.

A kernel is a dense (N, N) array or a matrix-free operator: any object with ``shape ==
(N, N)``, ``dtype`` and ``matmul(v)`` returning K v for v of shape (N, j) in the same array
library (for example the low-rank factor of an NNTK estimate, or an NTK-vector product).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import NamedTuple

from array_api_compat import array_namespace, device, is_array_api_obj

from ._typing import Array, Device, DType, Namespace
from ._validate import check_choice, check_finite, check_ndim, check_positive_int
from ._xp import resolve
from .backends.random import Generator
from .backends.tracing import is_concrete
from .options import check_seed
from .predict import _eigh

__all__ = [
    "Spectrum",
    "effective_dimension",
    "kernel_spectrum",
    "mode_learning_curves",
    "spectral_energy",
]

METHODS = ("auto", "exact", "lanczos", "randomized")
# "auto" takes one dense eigendecomposition up to this N: O(N³) work is then a second or less
# on a CPU, and it is exact whatever the spectrum's decay.
EXACT_MAX = 1024
OVERSAMPLE = 10  # Halko, Martinsson & Tropp's default oversampling p


class Spectrum(NamedTuple):
    """Eigenvalues in descending order and the matching orthonormal eigenvectors.

    Unpacks as ``values, vectors = nk.kernel_spectrum(K)``.

    Parameters
    ----------
    values : array, shape (k,)
        Eigenvalues, largest first.
    vectors : array, shape (N, k)
        Column i is the unit eigenvector of ``values[i]`` (its sign is arbitrary).

    Examples
    --------
    >>> import numpy as np
    >>> import nntk_array as nk
    >>> values, vectors = nk.kernel_spectrum(np.diag([1.0, 3.0, 2.0]))
    >>> values
    array([3., 2., 1.])
    >>> vectors.shape
    (3, 3)
    """

    values: Array
    vectors: Array


def kernel_spectrum(
    kernel: Array,
    *,
    k: int | None = None,
    method: str = "auto",
    seed: object = None,
    subspace: int | None = None,
    power_iterations: int = 4,
    xp: Namespace | None = None,
    device: Device = None,
) -> Spectrum:
    """Eigenvalues (descending) and eigenvectors of a symmetric kernel, all or the top ``k``.

    Parameters
    ----------
    kernel : array of shape (N, N), or operator
        A dense kernel (symmetrized as (K + Kᵀ)/2 first), or a matrix-free operator: any
        object with ``shape == (N, N)``, ``dtype`` and ``matmul(v)`` returning K v for
        v of shape (N, j) in the same array library. For an operator the library comes
        from ``xp``, or else from the operator's ``xp`` attribute (an operator is not an
        array: it has no ``__array_namespace__``).
    k : int, optional
        Number of the largest (algebraic) eigenvalues wanted, 1 <= k <= N; all N by default.
    method : {"auto", "exact", "lanczos", "randomized"}
        ``"exact"``: one dense symmetric eigendecomposition (an operator is applied to the
        identity first: N products). ``"lanczos"``: Lanczos with full reorthogonalization
        (each new basis vector orthogonalized twice against all earlier ones, "twice is
        enough"; an invariant subspace restarts it from a random vector orthogonal to the
        basis), then the eigenvalues of the tridiagonal projection (Rayleigh–Ritz); one
        product per step, ``subspace`` steps. ``"randomized"``: randomized subspace iteration
        (Halko, Martinsson & Tropp 2011, Algorithms 4.4 and 5.3): a Gaussian test matrix of
        ``subspace`` columns, ``power_iterations`` re-orthonormalized products, then
        Rayleigh–Ritz; ``power_iterations + 2`` block products in all. It converges to the
        eigenvalues of largest *magnitude*: for a kernel with large negative eigenvalues (an
        unbiased Monte Carlo NNTK of few samples) use Lanczos. ``"auto"``: exact when
        ``k`` is None or N <= 1024, Lanczos otherwise.
    seed : int or native generator, optional
        Seed of the random start vectors (Lanczos) or test matrix (randomized), as in
        :func:`nntk_array.nntk`: the same seed gives the same result on one library and
        device. Fresh entropy when omitted. Unused by the exact method.
    subspace : int, optional
        Lanczos steps, or columns of the randomized test matrix; between ``k`` and N. By
        default min(N, 2k + 20) for Lanczos and min(N, k + 10) for randomized.
    power_iterations : int, default 4
        Products with the kernel between orthonormalizations (randomized only); each one
        shrinks the error of λ_i by about (λ_{l+1}/λ_i)², l = ``subspace``.
    xp : namespace, optional
        The array library of an operator without an ``xp`` attribute (e.g. ``numpy``,
        ``torch``); inferred for a dense kernel.
    device : device, optional
        Device of the operator's arrays (default: the operator's ``device`` attribute, else
        the library's default device); inferred for a dense kernel.

    Returns
    -------
    Spectrum
        ``values`` (k,) descending and ``vectors`` (N, k) orthonormal, in the kernel's
        library, dtype and device; unpacks as ``(values, vectors)``.

    Raises
    ------
    TypeError
        A kernel that is neither an array nor an operator, a non-floating dtype, an operator
        without a known library, products in another library, a non-integer ``k``,
        ``subspace`` or ``power_iterations``, a bad ``seed``; a library without the
        ``linalg`` extension.
    ValueError
        A non-square kernel, NaN/inf in it (or in an operator's first product), ``k`` outside
        1..N, ``subspace`` outside k..N, negative ``power_iterations``, an unknown method.

    Examples
    --------
    >>> import numpy as np
    >>> import nntk_array as nk
    >>> x = np.linspace(-1, 1, 200)[:, None]
    >>> K = np.exp(-((x - x.T) ** 2) / 0.5)
    >>> exact = nk.kernel_spectrum(K, k=4)
    >>> lanczos = nk.kernel_spectrum(K, k=4, method="lanczos", seed=0)
    >>> bool(np.allclose(exact.values, lanczos.values, rtol=1e-10))
    True
    >>> bool(np.allclose(np.abs(exact.vectors.T @ lanczos.vectors), np.eye(4), atol=1e-6))
    True
    """
    op = _operator(kernel, xp, device)
    n = op.n
    k = n if k is None else _count("k", k, n, lower=1)
    check_choice("method", method, METHODS)
    if method == "auto":
        method = "exact" if k == n or n <= EXACT_MAX else "lanczos"
    if subspace is None:
        subspace = min(n, 2 * k + 20 if method == "lanczos" else k + OVERSAMPLE)
    else:
        subspace = _count("subspace", subspace, n, lower=k)
    power = _nonnegative_int("power_iterations", power_iterations)
    seed = check_seed(seed)
    if method == "exact":
        vals, vecs = _eigh(op.xp, op.dense(), False)
        return _top(op.xp, vals, vecs, k)
    gen = Generator(seed, xp=op.xp, device=op.device)
    if method == "lanczos":
        return _lanczos(op, k, subspace, gen)
    return _randomized(op, k, subspace, power, gen)


def spectral_energy(
    spectrum_or_kernel: Spectrum | tuple[Array, Array] | Array, y: Array, k: int | None = None
) -> Array:
    """Fraction of ‖y‖² in the top eigendirections: e_j = Σ_{i<=j} (v_iᵀy)² / ‖y‖², j = 1..k.

    A target learned fast by kernel gradient flow has most of its energy in the top
    directions (see :func:`mode_learning_curves`); for the full spectrum e_N = 1.

    Parameters
    ----------
    spectrum_or_kernel : Spectrum, (values, vectors) tuple, array (N, N) or operator
        A spectrum from :func:`kernel_spectrum`, or a kernel whose top-``k`` spectrum is
        computed with ``method="auto"``.
    y : array, shape (N,) or (N, O)
        Target; with several outputs the energies add up over them.
    k : int, optional
        Number of directions; all those of the spectrum (N for a kernel) by default.

    Returns
    -------
    array, shape (k,)
        Cumulative energy fractions, non-decreasing, in [0, 1]; zero for y = 0.

    Raises
    ------
    TypeError
        Mixed libraries, non-floating dtypes, a non-integer ``k``.
    ValueError
        Shape mismatches, NaN/inf, ``k`` outside 1..(number of directions).

    Examples
    --------
    >>> import numpy as np
    >>> import nntk_array as nk
    >>> K = np.diag([3.0, 2.0, 1.0])
    >>> nk.spectral_energy(K, np.array([0.0, 3.0, 4.0]))
    array([0.  , 0.36, 1.  ])
    """
    if isinstance(spectrum_or_kernel, tuple):
        _, vectors = spectrum_or_kernel
        xp, (vectors, y) = resolve(vectors=vectors, y=y)
        check_ndim("vectors", vectors, (2,), "(N, k)")
        k = vectors.shape[1] if k is None else _count("k", k, vectors.shape[1], lower=1)
    else:
        vectors = kernel_spectrum(spectrum_or_kernel, k=k).vectors
        xp, (vectors, y) = resolve(kernel=vectors, y=y)
        k = vectors.shape[1]
    proj = _projections(xp, vectors[:, :k], y)
    total = xp.sum(y * y)
    cumulative = xp.cumulative_sum(proj)
    return xp.where(total > 0, cumulative / xp.where(total > 0, total, 1.0), 0.0)


def effective_dimension(eigenvalues: Array, ridge: float) -> Array:
    """Effective dimension d(λ) = Σ_i λ_i / (λ_i + λ) of a kernel at ridge λ.

    This is the "effective dimension" of kernel ridge regression in the learning-theory
    literature (Zhang 2005, "Learning bounds for kernel regression using effective data
    dimensionality"; Caponnetto & De Vito 2007, "Optimal rates for the regularized
    least-squares algorithm"), which equals the effective degrees of freedom tr(K (K + λI)⁻¹)
    of the ridge smoother (Hastie, Tibshirani & Friedman, "The Elements of Statistical
    Learning", §5.4.1). It counts the directions the ridge leaves unsuppressed: about the
    number of eigenvalues above λ. Negative eigenvalues (of a Monte Carlo kernel) count as
    zero.

    Parameters
    ----------
    eigenvalues : array, shape (k,)
        All eigenvalues of K, or the top k (the tail then adds at most Σ_tail λ_i/λ).
    ridge : float
        λ > 0, in the kernel's units. :func:`kernel_regression`'s ``ridge=r`` is relative:
        it means λ = r · tr(K)/N.

    Returns
    -------
    array, shape ()

    Raises
    ------
    TypeError
        A non-floating array or a non-real ``ridge``.
    ValueError
        ``eigenvalues`` not 1-D, NaN/inf, ``ridge`` not finite and > 0.

    Examples
    --------
    >>> import numpy as np
    >>> import nntk_array as nk
    >>> float(nk.effective_dimension(np.array([3.0, 1.0, 0.0]), 1.0))
    1.25
    """
    xp, (values,) = resolve(eigenvalues=eigenvalues)
    check_ndim("eigenvalues", values, (1,), "(k,)")
    lam = _positive_real("ridge", ridge)
    check_finite(xp, eigenvalues=values)
    values = xp.maximum(values, 0.0)
    return xp.sum(values / (values + lam))


def mode_learning_curves(
    eigenvalues: Array,
    eigenvectors: Array,
    y: Array,
    t: float | Array,
    *,
    learning_rate: float = 1.0,
) -> Array:
    """Residual energy along each eigendirection under kernel gradient flow from f₀ = 0.

    On L = ½‖f(X) − y‖² the linearized flow ḟ = −ηK(f − y) gives, along each
    eigenvector, v_iᵀ(f_t − y) = −e^{−ηλ_i t} v_iᵀy: the residual energy of mode i is
    e^{−2ηλ_i t} (v_iᵀy)², and the fraction of it learned is 1 − e^{−2ηλ_i t}. Summed over
    all N modes it is ‖f_t − y‖², the training loss (times 2) of :func:`gradient_flow`.
    Negative eigenvalues are clipped to zero, as :func:`gradient_flow` does by default.

    Parameters
    ----------
    eigenvalues : array, shape (k,)
    eigenvectors : array, shape (N, k)
        Orthonormal columns, e.g. ``nk.kernel_spectrum(K, k=k)`` unpacked.
    y : array, shape (N,) or (N, O)
        Target; with several outputs the energies add up over them.
    t : float or array of shape (T,)
        Time(s) >= 0.
    learning_rate : float, default 1.0
        η > 0.

    Returns
    -------
    array, shape (k,) for a scalar ``t``, (T, k) for an array of times

    Raises
    ------
    TypeError
        Mixed libraries or non-floating dtypes.
    ValueError
        Shape mismatches, NaN/inf, negative times, ``learning_rate`` not finite and > 0.

    Examples
    --------
    >>> import numpy as np
    >>> import nntk_array as nk
    >>> values, vectors = nk.kernel_spectrum(np.diag([2.0, 1.0]))
    >>> t = np.array([0.0, 1.0])
    >>> curves = nk.mode_learning_curves(values, vectors, np.array([1.0, 1.0]), t)
    >>> np.round(curves, 4)   # the λ = 2 mode decays as e^{-4t}, the λ = 1 mode as e^{-2t}
    array([[1.    , 1.    ],
           [0.0183, 0.1353]])
    """
    xp, (values, vectors, y) = resolve(eigenvalues=eigenvalues, eigenvectors=eigenvectors, y=y)
    check_ndim("eigenvalues", values, (1,), "(k,)")
    check_ndim("eigenvectors", vectors, (2,), f"(N, {values.shape[0]})")
    if vectors.shape[1] != values.shape[0]:
        raise ValueError(
            f"`eigenvectors` must have {values.shape[0]} columns to match `eigenvalues`; got "
            f"shape {tuple(vectors.shape)}"
        )
    rate = _positive_real("learning_rate", learning_rate)
    scalar_t = not hasattr(t, "shape")
    if scalar_t:
        times = xp.asarray([_time(t)], dtype=values.dtype, device=device(values))
    else:
        _, (times, _) = resolve(t=t, eigenvalues=values)
        check_ndim("t", times, (1,), "(T,)")
    check_finite(xp, eigenvalues=values, eigenvectors=vectors, t=times)
    if not scalar_t and _readably_false(xp, times >= 0):
        raise ValueError("`t` must be >= 0")
    energy = _projections(xp, vectors, y)  # (k,), checks y's shape
    decay = xp.exp(-2.0 * rate * times[:, None] * xp.maximum(values, 0.0)[None, :])
    curves = decay * energy[None, :]
    return curves[0, ...] if scalar_t else curves


# ---------------------------------------------------------------------------------------
# INTERNAL: operators, validation, the two iterative eigensolvers


class _Operator(NamedTuple):
    xp: Namespace
    n: int
    dtype: DType
    device: Device
    matmul: Callable[[Array], Array]
    dense: Callable[[], Array]


def _operator(kernel: Array, xp: Namespace | None, dev: Device) -> _Operator:
    """The kernel as (namespace, N, dtype, device, K·v, dense K), its shape checked."""
    if is_array_api_obj(kernel):
        xp_k, (k_arr,) = resolve(kernel=kernel)
        if xp is not None and array_namespace(xp.empty(0)) is not xp_k:
            raise TypeError(f"`xp` is {xp.__name__} but `kernel` is a {xp_k.__name__} array")
        check_ndim("kernel", k_arr, (2,), "(N, N)")
        _check_square(k_arr.shape)
        _require_linalg(xp_k)
        check_finite(xp_k, kernel=k_arr)
        sym = 0.5 * (k_arr + xp_k.permute_dims(k_arr, (1, 0)))
        return _Operator(
            xp_k, k_arr.shape[0], sym.dtype, device(sym), lambda v: xp_k.matmul(sym, v), lambda: sym
        )
    if not all(hasattr(kernel, a) for a in ("shape", "dtype", "matmul")):
        raise TypeError(
            "`kernel` must be an (N, N) array or an operator with `shape`, `dtype` and "
            f"`matmul(v)`; got {type(kernel).__module__}.{type(kernel).__qualname__}"
        )
    shape = tuple(kernel.shape)
    if len(shape) != 2:
        raise ValueError(f"`kernel` must have shape (N, N); got shape {shape}")
    _check_square(shape)
    xp = getattr(kernel, "xp", None) if xp is None else xp
    if xp is None:
        raise TypeError(
            "`kernel` is an operator without an `xp` attribute: pass its array library as "
            "`xp=` (e.g. xp=numpy, xp=torch)"
        )
    xp = array_namespace(xp.empty(0))
    _require_linalg(xp)
    dtype = kernel.dtype
    if not xp.isdtype(dtype, "real floating"):
        raise TypeError(f"`kernel` must have a real floating dtype; got dtype={dtype}")
    dev = getattr(kernel, "device", None) if dev is None else dev
    n = int(shape[0])
    product = kernel.matmul
    checked = False

    def matmul(v: Array) -> Array:
        nonlocal checked
        out = product(v)
        if not checked:  # the first product shows the operator's library, shape and values
            resolve(**{"kernel.matmul(v)": out, "v": v})
            if tuple(out.shape) != tuple(v.shape):
                raise ValueError(
                    f"`kernel.matmul(v)` must return shape {tuple(v.shape)} for v of that "
                    f"shape; got {tuple(out.shape)}"
                )
            check_finite(xp, **{"kernel.matmul(v)": out})
            checked = True
        return out

    def dense() -> Array:
        k_arr = matmul(xp.eye(n, dtype=dtype, device=dev))
        return 0.5 * (k_arr + xp.permute_dims(k_arr, (1, 0)))

    return _Operator(xp, n, dtype, dev, matmul, dense)


def _check_square(shape: tuple[int, ...]) -> None:
    if shape[0] != shape[1] or shape[0] < 1:
        raise ValueError(f"`kernel` must be square (N, N) with N >= 1; got shape {shape}")


def _require_linalg(xp: Namespace) -> None:
    if not hasattr(xp, "linalg"):
        raise TypeError(
            f"kernel spectra need the array API linalg extension, which {xp.__name__} lacks; "
            "convert the kernel to a library that has it (NumPy, torch, JAX, CuPy)"
        )


def _count(name: str, value: object, n: int, *, lower: int) -> int:
    count = check_positive_int(name, value)
    if not lower <= count <= n:
        raise ValueError(f"`{name}` must be between {lower} and N = {n}; got {count}")
    return count


def _nonnegative_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be an integer; got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"`{name}` must be >= 0; got {value!r}")
    return int(value)


def _positive_real(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a real number; got {type(value).__name__}")
    if not 0 < float(value) < math.inf:
        raise ValueError(f"`{name}` must be finite and > 0; got {value!r}")
    return float(value)


def _time(t: object) -> float:
    if isinstance(t, bool) or not isinstance(t, numbers.Real) or not 0 <= float(t) < math.inf:
        raise ValueError(f"`t` must be finite and >= 0; got {t!r}")
    return float(t)


def _readably_false(xp: Namespace, condition: Array) -> bool:
    """Whether ``all(condition)`` is readable now and False (never under a JAX trace)."""
    ok = xp.all(condition)
    return is_concrete(ok) and not bool(ok)


def _projections(xp: Namespace, vectors: Array, y: Array) -> Array:
    """(v_iᵀy)² per direction i, summed over outputs: shape (k,)."""
    n = vectors.shape[0]
    check_ndim("y", y, (1, 2), f"({n},) or ({n}, O)")
    if y.shape[0] != n:
        raise ValueError(f"`y` must have {n} rows to match the kernel; got shape {y.shape}")
    check_finite(xp, y=y)
    y2 = y[:, None] if y.ndim == 1 else y
    proj = xp.matmul(xp.permute_dims(vectors, (1, 0)), y2)  # (k, O)
    return xp.sum(proj * proj, axis=1)


def _top(xp: Namespace, vals: Array, vecs: Array, k: int) -> Spectrum:
    """The k largest of ascending eigenpairs, largest first."""
    n = vals.shape[0]
    return Spectrum(xp.flip(vals[n - k :]), xp.flip(vecs[:, n - k :], axis=1))


def _orthogonalize(xp: Namespace, basis: Array, w: Array) -> Array:
    """w minus its projection on the orthonormal columns of ``basis``, done twice: one
    classical Gram–Schmidt pass loses orthogonality in floating point, two keep it to
    rounding (Giraud, Langou & Rozložník 2005, "twice is enough")."""
    bt = xp.permute_dims(basis, (1, 0))
    for _ in range(2):
        w = w - xp.matmul(basis, xp.matmul(bt, w))
    return w


def _lanczos(op: _Operator, k: int, steps: int, gen: Generator) -> Spectrum:
    xp, n, dtype = op.xp, op.n, op.dtype
    eps = float(xp.finfo(dtype).eps)
    # The basis has its final shape from the start (unfilled columns are zero and drop out
    # of the projections): every step then runs on the same shapes, which JAX compiles once.
    columns = xp.arange(steps, device=op.device)[None, :]
    q = gen.normal((n, 1), dtype=dtype)
    q = q / xp.linalg.vector_norm(q)
    basis = xp.where(columns == 0, q, xp.zeros((n, steps), dtype=dtype, device=op.device))
    alphas, betas = [], []
    scale = xp.zeros((), dtype=dtype, device=op.device)  # largest ‖K q_j‖: the scale of β ≈ 0
    for j in range(steps):
        w = op.matmul(q)
        alphas.append(xp.sum(q * w))
        scale = xp.maximum(scale, xp.linalg.vector_norm(w))
        if j == steps - 1:
            break
        w = _orthogonalize(xp, basis, w)
        beta = xp.linalg.vector_norm(w)
        # β_j ≈ 0: the basis spans an invariant subspace (kernels of low numerical rank reach
        # one within N steps); continue from a random vector orthogonal to it, with T's
        # coupling β_j = 0
        restart = _orthogonalize(xp, basis, gen.normal((n, 1), dtype=dtype))
        broken = beta <= n * eps * scale
        q = xp.where(
            broken, restart / xp.linalg.vector_norm(restart), w / xp.where(broken, 1.0, beta)
        )
        betas.append(xp.where(broken, 0.0, beta))
        basis = xp.where(columns == j + 1, q, basis)
    betas.append(xp.zeros((), dtype=dtype, device=op.device))  # T has steps - 1 of them
    band = xp.stack(betas)[:, None] * xp.eye(steps, k=1, dtype=dtype, device=op.device)
    diag = xp.stack(alphas)[:, None] * xp.eye(steps, dtype=dtype, device=op.device)
    vals, ritz = xp.linalg.eigh(diag + band + xp.permute_dims(band, (1, 0)))
    return _top(xp, vals, xp.matmul(basis, ritz), k)


def _randomized(op: _Operator, k: int, columns: int, power: int, gen: Generator) -> Spectrum:
    xp = op.xp
    basis, _ = xp.linalg.qr(op.matmul(gen.normal((op.n, columns), dtype=op.dtype)))
    for _ in range(power):
        # re-orthonormalize after every product: powers of K alone would collapse onto the
        # top eigenvector in floating point (HMT Algorithm 4.4)
        basis, _ = xp.linalg.qr(op.matmul(basis))
    projected = xp.matmul(xp.permute_dims(basis, (1, 0)), op.matmul(basis))
    vals, small = _eigh(xp, projected, False)
    return _top(xp, vals, xp.matmul(basis, small), k)
