"""GPyTorch kernels of a network: its NTK and its nonlocal NTK as ``gpytorch.kernels.Kernel``.

:class:`NTKKernel` and :class:`NNTKKernel` compute the kernel of a network evaluated on torch
tensors (``nk.from_torch(module)``, or ``nk.MLP`` with torch parameters) for the inputs GPyTorch
passes, as a dense tensor; the NNTK of a positive semidefinite estimator can instead come as a
low-rank ``linear_operator`` R Rᵀ. Their parameters are fixed (no hyperparameters to train):
an ``ExactGP`` trains the likelihood's noise and the other kernels around them. Needs the
``gpytorch`` extra (``pip install "nntk-array[gpytorch]"``).
"""

from __future__ import annotations

from typing import Any

from array_api_compat import array_namespace, is_torch_array
from gpytorch.kernels import Kernel
from linear_operator.operators import (
    LinearOperator,
    LowRankRootLinearOperator,
    MatmulLinearOperator,
)

from .._mc.roots import ROOTED
from .._typing import Array
from ..operators import nntk_features
from ..options import Estimator, Resources, Smoothing
from ._kernel import KernelFn, local_kernel, nonlocal_kernel

__all__ = ["NNTKKernel", "NTKKernel"]


class _NetworkKernel(Kernel):  # type: ignore[misc]  # gpytorch is not followed by mypy
    """What both kernels do with GPyTorch's inputs: check them against the parameters and
    evaluate the bound kernel, densely or (``_root``) as a low-rank operator."""

    def __init__(self, fn: KernelFn, *, active_dims: tuple[int, ...] | None) -> None:
        if not is_torch_array(fn.params):
            raise TypeError(
                "`params` must be a torch.Tensor (GPyTorch works on tensors): use "
                "nk.from_torch(module).theta0 or model.init(seed, xp=torch); got "
                f"{type(fn.params).__name__}"
            )
        super().__init__(active_dims=active_dims)
        self._fn = fn

    @property
    def model(self) -> Any:
        """The network (a model or callable)."""
        return self._fn.model

    @property
    def params(self) -> Array:
        """The network's parameters θ, shape (P,)."""
        return self._fn.params

    @property
    def is_stationary(self) -> bool:
        """False: a network's kernel depends on the inputs, not on their difference."""
        return False

    def _root(self, x: Array) -> Array | None:
        """R with K(x, x) = R Rᵀ when the kernel is to be low-rank, else None."""
        return None

    def _check(self, name: str, x: Array) -> None:
        if x.ndim != 2:
            raise ValueError(
                f"`{name}` must have shape (N, d); batches of inputs (shape {tuple(x.shape)}) "
                "are not supported"
            )
        params = self.params
        if x.dtype != params.dtype:
            raise TypeError(
                f"`{name}` has dtype {x.dtype} but `params` has {params.dtype}: the kernel is "
                "computed in the parameters' dtype; cast the inputs (x.to(params.dtype)) or "
                "build the network in the inputs' dtype"
            )
        if x.device != params.device:
            raise ValueError(
                f"`{name}` is on {x.device} but `params` on {params.device}; move them to one "
                "device"
            )

    def forward(
        self,
        x1: Array,
        x2: Array,
        diag: bool = False,
        last_dim_is_batch: bool = False,
        **params: Any,
    ) -> Array | LinearOperator:
        """The kernel K(x1, x2), (N1, N2), or its diagonal (N,) with ``diag=True``.

        Parameters
        ----------
        x1 : torch.Tensor, shape (N1, d)
        x2 : torch.Tensor, shape (N2, d)
            Equal to ``x1`` (the same tensor or equal values) gives the symmetric kernel.
        diag : bool, default False
            Only the diagonal (``x1`` and ``x2`` equal), computed in blocks of inputs,
            never as the N × N matrix.
        last_dim_is_batch : bool, default False
            Not supported (deprecated in GPyTorch).

        Returns
        -------
        torch.Tensor or LinearOperator
            In the parameters' dtype and device: a dense (N1, N2) tensor, or for
            ``NNTKKernel(low_rank=True)`` a ``LowRankRootLinearOperator`` (symmetric) or a
            ``MatmulLinearOperator`` R1 R2ᵀ; the diagonal as an (N,) tensor.

        Raises
        ------
        ValueError
            ``last_dim_is_batch``, inputs that are not (N, d) or do not fit the model, inputs
            on another device than the parameters.
        TypeError
            Inputs of another dtype than the parameters.
        """
        if last_dim_is_batch:
            raise ValueError("`last_dim_is_batch=True` is not supported by network kernels")
        self._check("x1", x1)
        self._check("x2", x2)
        symmetric = x1 is x2 or (x1.shape == x2.shape and bool(x1.equal(x2)))
        root = self._root(x1)
        if diag:
            if root is not None:
                return (root * root).sum(dim=-1)
            return array_namespace(x1).concat([k.diagonal() for k in self._fn.diagonal_blocks(x1)])
        if root is None:
            dense: Array = self._fn(x1, None if symmetric else x2)
            return dense
        if symmetric:
            return LowRankRootLinearOperator(root)
        root2 = self._root(x2)
        assert root2 is not None  # low rank for x1, so for x2
        return MatmulLinearOperator(root, root2.mT)


class NTKKernel(_NetworkKernel):
    """The exact local NTK of a network on torch tensors, as a GPyTorch kernel.

    Parameters
    ----------
    model : model or callable
        ``nk.from_torch(module)``, ``nk.MLP`` or any model or callable that
        :func:`nntk_array.ntk` takes on torch tensors.
    params : torch.Tensor, shape (P,)
        The network's parameters θ (``model.theta0`` for ``from_torch``). The inputs must
        have their dtype and device; moving the kernel (``.to``, ``.double()``) does not
        move them.
    active_dims : tuple of int, optional
        Columns of the inputs the kernel reads (GPyTorch's option).

    Notes
    -----
    Inputs are (N, d) tensors; a network with other input shapes reshapes them itself (e.g.
    ``torch.nn.Unflatten`` first). The kernel is a dense tensor from :func:`nntk_array.ntk`,
    and its diagonal is computed in blocks of inputs.

    Raises
    ------
    TypeError
        ``params`` is not a real floating torch tensor, ``model`` not a model or callable.
    ValueError
        ``params`` is not (P,) for the model.

    Examples
    --------
    >>> import pytest; torch = pytest.importorskip("torch"); _ = pytest.importorskip("gpytorch")
    >>> import nntk_array as nk
    >>> from nntk_array.interop.gpytorch import NTKKernel
    >>> net = torch.nn.Sequential(torch.nn.Linear(1, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    >>> model = nk.from_torch(net)
    >>> kernel = NTKKernel(model, model.theta0)
    >>> x = torch.linspace(-1, 1, 5)[:, None]
    >>> torch.allclose(kernel(x).to_dense(), nk.ntk(model, model.theta0, x))
    True
    """

    def __init__(
        self, model: Any, params: Array, *, active_dims: tuple[int, ...] | None = None
    ) -> None:
        super().__init__(local_kernel(model, params), active_dims=active_dims)


class NNTKKernel(_NetworkKernel):
    """The Monte Carlo nonlocal NTK of a network on torch tensors, as a GPyTorch kernel.

    Every evaluation calls :func:`nntk_array.nntk` with the same int ``seed``, hence the same
    M perturbations (they depend on the seed, M, P, the sampling, the dtype and the device, not
    on the inputs): the blocks GPyTorch asks for (train-train, test-train, test diagonal) are
    blocks of one kernel estimate.

    Parameters
    ----------
    model, params, active_dims
        As in :class:`NTKKernel`; no gradients are needed.
    sigma, samples, seed, estimator, smoothing, resources
        As in :class:`nntk_array.interop.sklearn.NNTKKernel`: the options of
        :func:`nntk_array.nntk`, with an int ``seed`` (default 0). An exact GP factors the
        kernel plus noise: the default U-statistic is not positive semidefinite, so give the
        likelihood enough noise or choose ``"sketch"``, ``"plugin"`` or ``"directional"``.
    low_rank : bool, default False
        Return K = R Rᵀ as a ``LowRankRootLinearOperator(R)``, which GPyTorch can solve with the
        Woodbury identity in O(N r²) instead of O(N³). Only for the estimators that are
        Gram matrices: ``"sketch"`` and ``"directional"`` (r = O·M, low rank when M < N) and
        ``"plugin"`` (r = O·P, the plug-in nonlocal gradients); R Rᵀ equals the dense
        kernel up to rounding.

    Raises
    ------
    TypeError
        As for :class:`nntk_array.interop.sklearn.NNTKKernel`; ``params`` not a torch tensor.
    ValueError
        As for :class:`nntk_array.interop.sklearn.NNTKKernel`; ``low_rank`` with an estimator
        that has no root (``"unbiased"``).

    Examples
    --------
    >>> import pytest; torch = pytest.importorskip("torch"); _ = pytest.importorskip("gpytorch")
    >>> import nntk_array as nk
    >>> from nntk_array.interop.gpytorch import NNTKKernel
    >>> model = nk.MLP(1, (16,), activation="sign")
    >>> theta = model.init(0, xp=torch, dtype=torch.float64)
    >>> opts = dict(sigma=0.3, samples=8, seed=0, estimator="sketch")
    >>> kernel = NNTKKernel(model, theta, low_rank=True, **opts)
    >>> x = torch.linspace(-1, 1, 20, dtype=torch.float64)[:, None]
    >>> K = kernel(x).evaluate_kernel()
    >>> type(K).__name__, K.root.shape
    ('LowRankRootLinearOperator', torch.Size([20, 8]))
    >>> torch.allclose(K.to_dense(), nk.nntk(model, theta, x, **opts))
    True
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
        low_rank: bool = False,
        active_dims: tuple[int, ...] | None = None,
    ) -> None:
        fn = nonlocal_kernel(
            model,
            params,
            sigma=sigma,
            samples=samples,
            seed=seed,
            estimator=estimator,
            smoothing=smoothing,
            resources=resources,
        )
        if not isinstance(low_rank, bool):
            raise TypeError(f"`low_rank` must be a bool; got {type(low_rank).__name__}")
        assert fn.options is not None
        name = fn.options["estimator"].name
        if low_rank and name not in ROOTED:
            raise ValueError(
                f"`low_rank=True` needs an estimator whose estimate is R Rᵀ "
                f"({', '.join(map(repr, ROOTED))}); estimator={name!r} has no such root"
            )
        super().__init__(fn, active_dims=active_dims)
        self.low_rank = low_rank

    def _root(self, x: Array) -> Array | None:
        if not self.low_rank:
            return None
        fn = self._fn
        assert fn.options is not None  # an NNTK with an estimator of ROOTED
        root: Array = nntk_features(fn.model, fn.params, x, **fn.options)
        return root
