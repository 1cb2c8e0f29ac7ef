"""Gaussian-process inference and the infinite-ensemble gradient-descent predictor.

Both functions take kernels as arrays (any backend) and return a :class:`Gaussian`: the mean
and the covariance (full, or its diagonal) of the test outputs. One formula covers every case.
Let K be the kernel that is inverted (the GP's kernel, or the NTK/NNTK Θ that drives training),
Σ the prior covariance of the outputs at initialization (the NNGP; Σ = K when no NNGP is given),
X the train and X* the test inputs, η the learning rate, and

    K̃ = K_XX⁺ + (ridge·tr(K_XX)/N + noise) I,    A(t) = K_*X K̃⁻¹ (I − e^{−η K̃ t}),

with K_XX⁺ the kernel with negative eigenvalues clipped (``psd=True``). Then

    mean(t) = A(t) y,
    cov(t)  = Σ_** + A(t) (Σ_XX + noise I) A(t)ᵀ − A(t) Σ_X* − Σ_*X A(t)ᵀ.

This is the distribution over initializations of f_t(X*) = f₀(X*) + A(t)(y + ε − f₀(X)) for
f₀ ~ GP(0, Σ) and target noise ε ~ N(0, noise·I) (Lee et al. 2019, "Wide neural networks of
any depth evolve as linear models under gradient descent", eq. (16)). At t = ∞ with Σ = K it
is the exact GP posterior of the latent outputs, mean K_*X K̃⁻¹ y and covariance
Σ_** − K_*X K̃⁻¹ K_X*: the NNGP posterior for K = NNGP, the NTK-GP (He et al. 2020) for K =
NTK, and likewise for an NNTK. With Σ = NNGP and K = NTK it is the infinite ensemble of
infinite-width networks trained by gradient flow (to time t).
"""

from __future__ import annotations

import math
from typing import NamedTuple

from array_api_compat import device

from ._typing import Array, Namespace
from ._validate import check_finite, check_ndim
from ._xp import resolve
from .predict import _all_true, _eigh, _eps, _prepare, _scale

__all__ = ["Gaussian", "gp_inference", "gradient_descent_ensemble"]


class Gaussian(NamedTuple):
    """Mean and covariance of the test outputs; unpacks as ``mean, covariance``.

    Attributes
    ----------
    mean : array, shape (..., N*) or (..., N*, O)
        A leading (T,) axis for an array of times.
    covariance : array, shape (..., N*, N*) or (..., N*) with ``diagonal=True``, or None
        Shared by all O outputs (the kernel is the same for each output, as neural-tangents'
        ``trace_axes=(-1,)``). ``None`` when no test-test kernel was given.
    """

    mean: Array
    covariance: Array | None


def gp_inference(
    k_train: Array,
    y_train: Array,
    k_test: Array,
    k_test_test: Array | None = None,
    *,
    nngp_train: Array | None = None,
    nngp_test: Array | None = None,
    noise: float = 0.0,
    ridge: float = 0.0,
    diagonal: bool = False,
    psd: bool = True,
    rcond: float | None = None,
) -> Gaussian:
    """Posterior of a GP, or the infinite ensemble trained to convergence (t = ∞).

    The module docstring's formula at t = ∞. Without ``nngp_train``/``nngp_test`` it is the
    exact GP posterior with kernel K and observation noise: mean K_*X (K + noise·I)⁻¹ y and
    covariance K_** − K_*X (K + noise·I)⁻¹ K_X* (neural-tangents' ``get="nngp"`` for the NNGP,
    ``get="ntkgp"`` for the NTK; pass an NNTK the same way). With them, K is the NTK (or NNTK)
    of gradient flow and Σ the NNGP: mean Θ_*X Θ̃⁻¹ y, covariance
    Σ_** + Θ_*X Θ̃⁻¹ Σ̂ Θ̃⁻¹ Θ_X* − (Θ_*X Θ̃⁻¹ Σ_X* + transpose), Σ̂ = Σ_XX + noise·I
    (``get="ntk"``).

    Parameters
    ----------
    k_train : array, shape (N, N)
        The kernel that is inverted: the GP's kernel, or the NTK/NNTK on the train inputs.
    y_train : array, shape (N,) or (N, O)
    k_test : array, shape (N*, N)
        The same kernel between test and train inputs.
    k_test_test : array, shape (N*, N*), optional
        Prior covariance of the test outputs: K(X*, X*), or the NNGP Σ(X*, X*) when
        ``nngp_train`` is given (as neural-tangents). With ``diagonal=True`` its diagonal
        (N*,) suffices. Without it only the mean is computed.
    nngp_train, nngp_test : array, shapes (N, N) and (N*, N), optional
        The prior (NNGP) covariance Σ_XX and Σ_*X of a network whose training K drives; both
        or neither. Only the covariance uses them.
    noise : float, default 0.0
        Observation-noise variance σ² >= 0, absolute: added to K_XX for the solve and to the
        covariance of the training targets (neural-tangents' ``diag_reg`` with
        ``diag_reg_absolute_scale=True`` for ``get="nngp"``/``"ntkgp"``).
    ridge : float, default 0.0
        A regularizer of the solve only, relative to tr(K_XX)/N as in
        :func:`nntk_array.kernel_regression` (neural-tangents' ``diag_reg`` for
        ``get="ntk"``, whose covariance leaves Σ_XX unregularized).
    diagonal : bool, default False
        Return only the marginal variances (N*,); no (N*, N*) matrix is formed.
    psd : bool, default True
        Clip negative eigenvalues of K_XX (a Monte Carlo NNTK can have some).
    rcond : float, optional
        Eigenvalues of K̃ at or below ``rcond`` times the largest count as zero (a
        pseudo-inverse, as ``kernel_regression(solver="eigh")``); default N·eps.

    Returns
    -------
    Gaussian
        ``mean`` (N*,) or (N*, O); ``covariance`` (N*, N*), (N*,) or ``None``. In the inputs'
        namespace, dtype (promoted) and device.

    Raises
    ------
    TypeError
        Non-floating or mixed-library arrays; a library without the ``linalg`` extension.
    ValueError
        Shape mismatches, NaN/inf, a negative or non-finite ``noise``/``ridge``, only one of
        ``nngp_train``/``nngp_test``, mixed devices.

    Notes
    -----
    Computed from one eigendecomposition of K_XX (O(N³)), not a Cholesky factorization as
    neural-tangents: stable for singular or ill-conditioned kernels. Differences from
    neural-tangents: kernels come as arrays, not ``Kernel`` objects; the regularizer is split
    into ``noise`` (absolute, a noise model) and ``ridge`` (relative, a solver regularizer).

    Examples
    --------
    >>> import numpy as np
    >>> import nntk_array as nk
    >>> x = np.linspace(-1, 1, 6)[:, None]
    >>> k = np.exp(-((x - x.T) ** 2))
    >>> mean, var = nk.gp_inference(k[:4, :4], x[:4, 0], k[4:, :4], k[4:, 4:], noise=1e-2,
    ...                             diagonal=True)
    >>> mean.shape, var.shape, bool(np.all(var > 0))
    ((2,), (2,), True)
    """
    return gradient_descent_ensemble(
        k_train,
        y_train,
        k_test,
        k_test_test,
        nngp_train=nngp_train,
        nngp_test=nngp_test,
        t=math.inf,
        noise=noise,
        ridge=ridge,
        diagonal=diagonal,
        psd=psd,
        rcond=rcond,
    )


def gradient_descent_ensemble(
    k_train: Array,
    y_train: Array,
    k_test: Array,
    k_test_test: Array | None = None,
    *,
    t: float | Array,
    learning_rate: float = 1.0,
    nngp_train: Array | None = None,
    nngp_test: Array | None = None,
    noise: float = 0.0,
    ridge: float = 0.0,
    diagonal: bool = False,
    psd: bool = True,
    rcond: float | None = None,
) -> Gaussian:
    """Test outputs of an infinite ensemble of wide networks trained by gradient flow.

    The module docstring's formula at time(s) ``t``: gradient flow on L = ½‖f(X) − y‖² of
    networks whose outputs at initialization are f₀ ~ GP(0, Σ) and whose (constant) tangent
    kernel is K (the NTK, an NNTK, or the NNGP itself for training the readout only), with
    Σ = NNGP given by ``nngp_train``/``nngp_test`` (Σ = K without them). ``t = 0`` gives the
    prior N(0, Σ_**); ``t = ∞`` gives :func:`gp_inference`. Eigenvalue functions
    (1 − e^{−ηλt})/λ use ``expm1``, so every t in [0, ∞] is stable.

    Parameters
    ----------
    k_train, y_train, k_test, k_test_test, nngp_train, nngp_test
        As in :func:`gp_inference`.
    t : float or array of shape (T,)
        Time(s) in [0, ∞] (``math.inf`` allowed), in units of the ``learning_rate``.
    learning_rate : float, default 1.0
        η > 0: the flow runs in η·t.
    noise, ridge, diagonal, psd, rcond
        As in :func:`gp_inference`; K̃ drives the flow (neural-tangents' ``diag_reg`` too).

    Returns
    -------
    Gaussian
        As :func:`gp_inference`, with a leading (T,) axis for an array ``t``.

    Raises
    ------
    TypeError, ValueError
        As :func:`gp_inference`; a negative or NaN ``t``, ``learning_rate <= 0``.

    Notes
    -----
    Against neural-tangents' ``gradient_descent_mse_ensemble(kernel_fn, x_train, y_train,
    learning_rate, diag_reg)(t, x_test, get, compute_cov=True)``:

    * time: NT's loss is the mean ½·mean((f − y)²) over all N·O target entries, ours the sum
      (as :func:`nntk_array.gradient_flow`), so our ``t`` is NT's ``t / y_train.size`` at the
      same learning rate;
    * ``get="nngp"`` is ``nngp_train``/``nngp_test`` omitted with K = NNGP, and its
      ``diag_reg`` is our ``noise`` (NT regularizes Σ_XX in that covariance too); ``get="ntk"``
      is K = NTK with the NNGP given, and its ``diag_reg`` is our ``ridge``;
    * kernels are arrays (ours are any backend's), and outputs share one covariance, as NT's
      default ``trace_axes=(-1,)``; NT's ``t=None`` (a Cholesky solve) is our ``t=math.inf``;
    * eigenvalues below the ``rcond`` cut are dropped (NT divides by them: NaN at zero).

    Examples
    --------
    >>> import numpy as np
    >>> import nntk_array as nk
    >>> x = np.linspace(-1, 1, 7)[:, None]
    >>> nngp = 1 + x * x.T
    >>> ntk = 2 * nngp + np.exp(-((x - x.T) ** 2))
    >>> mean, cov = nk.gradient_descent_ensemble(
    ...     ntk[:5, :5], x[:5, 0] ** 2, ntk[5:, :5], nngp[5:, 5:],
    ...     nngp_train=nngp[:5, :5], nngp_test=nngp[5:, :5], t=np.array([0.0, 1.0, np.inf]))
    >>> mean.shape, cov.shape
    ((3, 2), (3, 2, 2))
    >>> bool(np.allclose(cov[0], nngp[5:, 5:]))   # t = 0: the prior
    True
    """
    # One library, device and dtype for all six arrays, then predict.py's checks of the
    # train/test kernels and targets.
    xp, (k_train, y_train, k_test, k_test_test, nngp_train, nngp_test) = resolve(
        k_train=k_train,
        y_train=y_train,
        k_test=k_test,
        k_test_test=k_test_test,
        nngp_train=nngp_train,
        nngp_test=nngp_test,
    )
    if k_test is None:
        raise TypeError("`k_test` is required: pass k_test=k_train for train-set outputs")
    xp, k_train, y_train, k_test, squeeze = _prepare(k_train, y_train, k_test)
    n, n_test = k_train.shape[0], k_test.shape[0]
    assert k_test is not None  # for mypy: _prepare returns what it got
    _check_extras(xp, n, n_test, k_test_test, nngp_train, nngp_test, diagonal)
    noise = _nonnegative("noise", noise)
    ridge = _nonnegative("ridge", ridge)
    if isinstance(learning_rate, bool) or not isinstance(learning_rate, (int, float)):
        raise ValueError(f"`learning_rate` must be a number > 0; got {learning_rate!r}")
    if not 0 < learning_rate < math.inf:
        raise ValueError(f"`learning_rate` must be finite and > 0; got {learning_rate!r}")
    times, scalar_t = _times(xp, t, k_train)

    vals, vecs = _eigh(xp, k_train, psd)
    shifted = vals + (ridge * _scale(xp, k_train) + noise)
    cut = (n * _eps(xp, k_train) if rcond is None else rcond) * xp.max(xp.abs(shifted))
    keep = xp.abs(shifted) > cut
    safe = xp.where(keep, shifted, 1.0)
    # ηλ̃t is 0·∞ = NaN for a dropped eigenvalue at t = ∞: mask it before it is used.
    x = xp.where(keep[None, :], learning_rate * safe[None, :] * times[:, None], 0.0)
    gain = xp.where(keep[None, :], -xp.expm1(-x) / safe[None, :], 0.0)  # (T, N)

    b = xp.matmul(k_test, vecs)  # K_*X V, (N*, N)
    proj = xp.matmul(xp.permute_dims(vecs, (1, 0)), y_train)  # Vᵀ y, (N, O)
    mean = xp.matmul(b[None, ...], gain[:, :, None] * proj[None, ...])  # (T, N*, O)

    cov = None
    if k_test_test is not None:
        bg = b[None, ...] * gain[:, None, :]  # A(t) V = K_*X V diag(g), (T, N*, N)
        if nngp_train is None:
            # Σ = K: Vᵀ Σ̂ V is diagonal and Vᵀ Σ_X* = bᵀ, so cov = K_** − B diag(2g − g²s) Bᵀ.
            s = vals + noise
            weights = 2.0 * gain - gain * gain * s[None, :]  # (T, N)
            if diagonal:
                cov = _diag(xp, k_test_test) - xp.matmul(weights, xp.permute_dims(b * b, (1, 0)))
            else:
                cov = k_test_test - xp.matmul(
                    b[None, ...] * weights[:, None, :], xp.permute_dims(b, (1, 0))[None, ...]
                )
        else:
            assert nngp_test is not None  # _check_extras asks for both
            eye = xp.eye(n, dtype=k_train.dtype, device=device(k_train))
            vt = xp.permute_dims(vecs, (1, 0))
            middle = xp.matmul(vt, xp.matmul(nngp_train + noise * eye, vecs))  # Vᵀ Σ̂ V
            cross = xp.matmul(vt, xp.permute_dims(nngp_test, (1, 0)))  # Vᵀ Σ_X*, (N, N*)
            left = xp.matmul(bg, middle[None, ...])  # (T, N*, N)
            if diagonal:
                cov = (
                    _diag(xp, k_test_test)[None, :]
                    + xp.sum(left * bg, axis=-1)
                    - 2.0 * xp.sum(bg * xp.permute_dims(cross, (1, 0))[None, ...], axis=-1)
                )
            else:
                bgt = xp.permute_dims(bg, (0, 2, 1))
                term = xp.matmul(bg, cross[None, ...])  # A Σ_X*
                cov = (
                    k_test_test[None, ...]
                    + xp.matmul(left, bgt)
                    - term
                    - xp.permute_dims(term, (0, 2, 1))
                )
        if not diagonal:  # exact symmetry, lost to rounding in the products
            cov = 0.5 * (cov + xp.permute_dims(cov, (0, 2, 1)))
    if squeeze:
        mean = mean[..., 0]
    if scalar_t:
        mean = mean[0, ...]
        cov = None if cov is None else cov[0, ...]
    return Gaussian(mean, cov)


def _check_extras(
    xp: Namespace,
    n: int,
    n_test: int,
    k_test_test: Array | None,
    nngp_train: Array | None,
    nngp_test: Array | None,
    diagonal: bool,
) -> None:
    if not isinstance(diagonal, bool):
        raise TypeError(f"`diagonal` must be a bool; got {type(diagonal).__name__}")
    if k_test_test is not None:
        square = (n_test, n_test)
        if tuple(k_test_test.shape) != square and not (
            diagonal and tuple(k_test_test.shape) == (n_test,)
        ):
            what = f"{square} or ({n_test},) with diagonal=True" if diagonal else f"{square}"
            raise ValueError(
                f"`k_test_test` must have shape {what}; got {tuple(k_test_test.shape)}"
            )
    if (nngp_train is None) != (nngp_test is None):
        raise ValueError("`nngp_train` and `nngp_test` go together: pass both or neither")
    if nngp_train is not None and nngp_test is not None:
        check_ndim("nngp_train", nngp_train, (2,), f"({n}, {n})")
        if tuple(nngp_train.shape) != (n, n):
            raise ValueError(
                f"`nngp_train` must have shape ({n}, {n}) like `k_train`; got "
                f"{tuple(nngp_train.shape)}"
            )
        if tuple(nngp_test.shape) != (n_test, n):
            raise ValueError(
                f"`nngp_test` must have shape ({n_test}, {n}) like `k_test`; got "
                f"{tuple(nngp_test.shape)}"
            )
    check_finite(xp, k_test_test=k_test_test, nngp_train=nngp_train, nngp_test=nngp_test)


def _nonnegative(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"`{name}` must be a real number; got {type(value).__name__}")
    if not 0 <= value < math.inf:
        raise ValueError(f"`{name}` must be finite and >= 0; got {value!r}")
    return float(value)


def _times(xp: Namespace, t: float | Array, like: Array) -> tuple[Array, bool]:
    """Times as a (T,) array in ``like``'s dtype and device, and whether ``t`` was a scalar
    (a Python number or a 0-D array)."""
    if not hasattr(t, "shape"):
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not t >= 0:
            raise ValueError(f"`t` must be a number in [0, inf]; got {t!r}")
        return xp.asarray([float(t)], dtype=like.dtype, device=device(like)), True
    _, (times, _) = resolve(t=t, like=like)
    check_ndim("t", times, (0, 1), "() or (T,)")
    if not _all_true(xp, times >= 0):  # also false for NaN
        raise ValueError("`t` must be in [0, inf] (no NaN)")
    # a float64 `t` must not promote the kernels' float32
    return xp.reshape(xp.astype(times, like.dtype), (-1,)), times.ndim == 0


def _diag(xp: Namespace, k: Array) -> Array:
    return k if k.ndim == 1 else xp.linalg.diagonal(k)
