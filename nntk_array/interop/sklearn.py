"""scikit-learn kernels of a network: its NTK and its nonlocal NTK as ``Kernel`` objects.

:class:`NTKKernel` and :class:`NNTKKernel` are ``sklearn.gaussian_process.kernels.Kernel``
subclasses, so ``GaussianProcessRegressor(kernel=...)``, ``KernelRidge(kernel=...)`` and
``SVR(kernel=...)`` take them as they are, and they combine with scikit-learn's own kernels
(``ConstantKernel() * NTKKernel(...) + WhiteKernel()``). They have no hyperparameters of their
own (the network is fixed): a regressor's optimizer only fits the kernels they are combined
with. Needs the ``sklearn`` extra (``pip install "nntk-array[sklearn]"``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from array_api_compat import array_namespace, device
from sklearn.gaussian_process.kernels import Kernel

from .._typing import Array
from ..options import Estimator, Resources, Smoothing
from ..testing import to_numpy
from ._kernel import KernelFn, local_kernel, nonlocal_kernel

__all__ = ["NNTKKernel", "NTKKernel"]


class _NetworkKernel(Kernel):  # type: ignore[misc]  # sklearn has no type information
    """What both kernels do with scikit-learn's NumPy inputs: convert them to the parameters'
    library, evaluate the bound kernel there and hand NumPy float64 back."""

    def _kernel(self) -> KernelFn:
        raise NotImplementedError

    def _inputs(self, name: str, x: Any) -> Array:
        """``x`` (N, d) in the parameters' library, dtype and device."""
        x = np.asarray(x)
        if x.ndim != 2:
            raise ValueError(
                f"`{name}` must have shape (N, d), one row per input (scikit-learn passes "
                f"2-D inputs; reshape inside the model for others); got shape {x.shape}"
            )
        if x.dtype.kind not in "fiu":
            raise TypeError(f"`{name}` must hold real numbers; got dtype={x.dtype}")
        params = self.params
        return array_namespace(params).asarray(x, dtype=params.dtype, device=device(params))

    def __call__(
        self, X: Any, Y: Any = None, eval_gradient: bool = False
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """The kernel K(X, Y).

        Parameters
        ----------
        X : array-like, shape (N1, d)
        Y : array-like, shape (N2, d), optional
            Defaults to ``X`` (then the symmetric kernel is computed once).
        eval_gradient : bool, default False
            Also return the gradient with respect to the hyperparameters: there are none, so
            it has shape (N1, N1, 0). Only with ``Y=None``.

        Returns
        -------
        K : ndarray of float64, shape (N1, N2)
        K_gradient : ndarray, shape (N1, N1, 0)
            With ``eval_gradient=True``.

        Raises
        ------
        ValueError
            ``eval_gradient`` with ``Y``, or inputs that are not 2-D or do not fit the model.
        TypeError
            Inputs that are not real numbers.
        """
        if eval_gradient and Y is not None:
            raise ValueError("Gradient can only be evaluated when Y is None.")
        fn = self._kernel()  # from the attributes as they are now: set_params may change them
        x1 = self._inputs("X", X)
        # pairwise_kernels and SVR pass Y = X for the training kernel: one symmetric call
        x2 = None if Y is None or Y is X else self._inputs("Y", Y)
        k = to_numpy(fn(x1, x2)).astype(np.float64, copy=False)
        if eval_gradient:
            return k, np.empty((*k.shape, 0))
        return k

    def diag(self, X: Any) -> np.ndarray:
        """The diagonal K(x_i, x_i), shape (N,), float64.

        Computed in blocks of a few hundred inputs (the diagonals of K(X_b, X_b)), so the
        N × N kernel is never formed; for the NNTK each block evaluates the model under all M
        perturbations, as one call on all of ``X`` would.
        """
        fn = self._kernel()
        x = self._inputs("X", X)
        parts = [np.diagonal(to_numpy(k)) for k in fn.diagonal_blocks(x)]
        diagonal: np.ndarray = np.concatenate(parts).astype(np.float64, copy=False)
        return diagonal

    def is_stationary(self) -> bool:
        """False: a network's kernel depends on the inputs, not on their difference."""
        return False

    def __repr__(self) -> str:
        # the model and its P parameters by type and shape: their values would fill screens
        shown = [f"model={type(self.model).__name__}", f"params=<{self.params.dtype} array>"]
        shown += [
            f"{k}={v!r}"
            for k, v in self.get_params(deep=False).items()
            if k not in ("model", "params")
        ]
        return f"{type(self).__name__}({', '.join(shown)})"


class NTKKernel(_NetworkKernel):
    """The exact local NTK of a network, Θ(x, x') = ∇θf(x)·∇θf(x'), as a scikit-learn kernel.

    Parameters
    ----------
    model : model or callable
        ``nk.MLP``, ``nk.from_torch(module)``, ``nk.from_jax(...)`` or any model or
        callable that :func:`nntk_array.ntk` takes.
    params : array, shape (P,)
        The network's parameters θ, in the library the kernel is computed with (NumPy, torch,
        JAX, CuPy; on their device). Named ``params`` because scikit-learn kernels keep
        ``theta`` for their log-hyperparameters.

    Notes
    -----
    scikit-learn passes NumPy float64 rows (N, d); they are converted to ``params``' library,
    dtype and device, :func:`nntk_array.ntk` runs there, and the kernel comes back as NumPy
    float64. Models averaging O > 1 outputs give the output-averaged kernel. ``clone`` (which
    every scikit-learn estimator applies to its kernel) deep-copies ``model`` and ``params``.

    Raises
    ------
    TypeError
        ``model`` is not a model or callable; ``params`` is not a real floating array.
    ValueError
        ``params`` is not (P,) for the model.

    Examples
    --------
    >>> import pytest; _ = pytest.importorskip("sklearn")
    >>> import numpy as np
    >>> import nntk_array as nk
    >>> from nntk_array.interop.sklearn import NTKKernel
    >>> from sklearn.kernel_ridge import KernelRidge
    >>> model = nk.MLP(1, (32,))
    >>> kernel = NTKKernel(model, model.init(0, xp=np))
    >>> x = np.linspace(-1.0, 1.0, 8)[:, None]
    >>> bool(np.allclose(kernel(x), nk.ntk(model, kernel.params, x)))
    True
    >>> KernelRidge(alpha=1e-3, kernel=kernel).fit(x, np.sin(3 * x[:, 0])).predict(x).shape
    (8,)
    """

    def __init__(self, model: Any, params: Array) -> None:
        # scikit-learn's clone and get_params need the arguments stored unchanged
        self.model = model
        self.params = params
        local_kernel(model, params)  # fail now, not inside a solver

    def _kernel(self) -> KernelFn:
        return local_kernel(self.model, self.params)


class NNTKKernel(_NetworkKernel):
    """The Monte Carlo nonlocal NTK of a network as a scikit-learn kernel.

    Every evaluation (K(X, X) to fit, K(X*, X) and the diagonal to predict) calls
    :func:`nntk_array.nntk` with the same int ``seed``, so it draws the same M perturbations
    (they depend on the seed, M, P, the sampling, the dtype and the device, not on the inputs):
    all calls are blocks of one kernel estimate, and predictions are consistent with the fit.

    Parameters
    ----------
    model : model or callable
        As in :class:`NTKKernel`; no gradients are needed (sign activations, quantized
        weights, noisy models).
    params : array, shape (P,)
        The network's parameters θ (see :class:`NTKKernel`).
    sigma : float, optional
        Perturbation scale σ > 0 (or give ``smoothing``).
    samples : int or array of shape (M, P)
        The number of perturbations M, or explicit unit-scale directions.
    seed : int, default 0
        Seed of the perturbations; an int, never ``None`` or a generator (see above).
    estimator : str or nk.Estimator, default "unbiased"
        As in :func:`nntk_array.nntk`. Solvers that factor the kernel (a Gaussian process's
        Cholesky, SVR) need it positive semidefinite: ``"sketch"`` and ``"plugin"`` are; the
        default U-statistic is not, so give it a noise term (``alpha``, ``WhiteKernel``)
        large enough, or choose a PSD estimator.
    smoothing : nk.Smoothing, optional
        σ and the form of the nonlocal gradient as one spec (then leave ``sigma`` out).
    resources : nk.Resources, optional
        Memory budget and batching of the model calls.

    Notes
    -----
    Inputs, output and ``clone`` as for :class:`NTKKernel`. Attention weights are not
    offered: they depend on the inputs of each call unless fixed reference inputs are given,
    so call :func:`nntk_array.nntk` on train and test inputs together and use
    ``kernel="precomputed"`` instead.

    Raises
    ------
    TypeError
        A bad ``model`` or ``params``; ``seed`` not an int; ``sigma`` and ``smoothing`` both
        missing or both given; a non-integer ``samples``; a spec of the wrong type.
    ValueError
        ``params`` of the wrong length, ``sigma <= 0``, ``samples < 1``, an unknown
        estimator or option.

    Examples
    --------
    >>> import pytest; _ = pytest.importorskip("sklearn")
    >>> import numpy as np
    >>> import nntk_array as nk
    >>> from nntk_array.interop.sklearn import NNTKKernel
    >>> from sklearn.gaussian_process import GaussianProcessRegressor
    >>> model = nk.MLP(1, (32,), activation="sign")
    >>> theta = model.init(0, xp=np)
    >>> kernel = NNTKKernel(model, theta, sigma=0.3, samples=256, seed=0, estimator="sketch")
    >>> x = np.linspace(-1.0, 1.0, 8)[:, None]
    >>> want = nk.nntk(model, theta, x, sigma=0.3, samples=256, seed=0, estimator="sketch")
    >>> bool(np.allclose(kernel(x), want))
    True
    >>> gp = GaussianProcessRegressor(kernel, alpha=1e-2).fit(x, np.sign(x[:, 0]))
    >>> gp.predict(np.array([[0.5]])).shape
    (1,)
    """

    def __init__(
        self,
        model: Any,
        params: Array,
        *,
        sigma: float | None = None,
        samples: int | Array,
        seed: int = 0,
        estimator: str | Estimator = "unbiased",
        smoothing: Smoothing | None = None,
        resources: Resources | None = None,
    ) -> None:
        self.model = model
        self.params = params
        self.sigma = sigma
        self.samples = samples
        self.seed = seed
        self.estimator = estimator
        self.smoothing = smoothing
        self.resources = resources
        self._kernel()  # fail now, not inside a solver

    def _kernel(self) -> KernelFn:
        return nonlocal_kernel(
            self.model,
            self.params,
            sigma=self.sigma,
            samples=self.samples,
            seed=self.seed,
            estimator=self.estimator,
            smoothing=self.smoothing,
            resources=self.resources,
        )
