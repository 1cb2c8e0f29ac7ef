"""A ``torch.nn.Module`` as a model: θ is the flat concatenation of its parameters.

:func:`nntk_array.from_torch` wraps a module in a :class:`TorchModel`, which implements the
model protocol (:mod:`nntk_array.models.protocol`) with ``torch.func``: ``apply`` evaluates a
batch of parameter vectors with ``functional_call`` under ``vmap`` (the inputs shared),
``jvp`` with ``torch.func.jvp`` vmapped over the tangents. torch is imported only when a
model is built.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator
from typing import Any

__all__ = ["TorchModel", "from_torch"]


class TorchModel:
    """A ``torch.nn.Module`` seen as a model of its flattened parameters.

    θ is the concatenation of the selected parameters, each flattened, in the order of
    ``module.named_parameters()``. The other parameters and all buffers (e.g. BatchNorm's
    running statistics) enter every evaluation unchanged, as constants. Build it with
    :func:`nntk_array.from_torch`.

    Evaluations run with the module in training mode ``train`` (restored afterwards). In
    training mode normalization layers use the batch statistics of the inputs ``x`` and do
    not update their running statistics; random layers (dropout) draw independently for every
    parameter vector of a batch. Attention (``nn.MultiheadAttention``,
    ``scaled_dot_product_attention``) runs on PyTorch's composite kernels, which
    ``torch.func`` can differentiate and batch; the fused ones cannot.

    Examples
    --------
    >>> import pytest; torch = pytest.importorskip("torch")
    >>> from nntk_array.models import TorchModel
    >>> model = TorchModel(torch.nn.Linear(3, 2))
    >>> model.num_params, model.names
    (8, ('weight', 'bias'))
    >>> model.apply(model.theta0[None, :], torch.ones(5, 3)).shape
    torch.Size([1, 5, 2])
    """

    def __init__(
        self, module: Any, *, params: Iterable[str] | None = None, train: bool = False
    ) -> None:
        import torch

        if not isinstance(module, torch.nn.Module):
            raise TypeError(f"`module` must be a torch.nn.Module; got {type(module).__name__}")
        if not isinstance(train, bool):
            raise TypeError(f"`train` must be a bool; got {type(train).__name__}")
        named = dict(module.named_parameters())
        if params is None:
            names = [n for n, p in named.items() if p.requires_grad]
        else:
            if isinstance(params, str):
                raise TypeError("`params` must be an iterable of parameter names, not a string")
            wanted = list(params)
            unknown = sorted(set(wanted) - set(named))
            if unknown:
                raise ValueError(
                    f"`params` names parameters the module does not have: {unknown}; "
                    f"it has {list(named)}"
                )
            if len(set(wanted)) != len(wanted):
                raise ValueError(f"`params` names a parameter more than once: {wanted}")
            names = [n for n in named if n in set(wanted)]
        if not names:
            raise ValueError("`module` has no parameters to take the kernel over (θ is empty)")
        first = named[names[0]]
        for n in names:
            p = named[n]
            if not p.is_floating_point():
                raise TypeError(f"parameter {n!r} must be floating; it is {p.dtype}")
            if p.dtype != first.dtype or p.device != first.device:
                raise ValueError(
                    f"the parameters in θ must share one dtype and device; {names[0]!r} is "
                    f"{first.dtype} on {first.device}, {n!r} is {p.dtype} on {p.device}"
                )
        self.module = module
        self.train = train
        self.names: tuple[str, ...] = tuple(names)
        self._shapes = tuple(tuple(named[n].shape) for n in names)
        self._sizes = tuple(math.prod(s) for s in self._shapes)
        self.dtype = first.dtype
        self.device = first.device
        # the widest layer, for the memory estimate (activations are not known up front)
        self._width = max((s[0] for s in self._shapes if len(s) > 0), default=1)

    @property
    def num_params(self) -> int:
        """P, the number of entries of the selected parameters.

        Examples
        --------
        >>> import pytest; torch = pytest.importorskip("torch")
        >>> TorchModel(torch.nn.Linear(3, 2), params=["weight"]).num_params
        6
        """
        return sum(self._sizes)

    @property
    def independent_inputs(self) -> bool:
        """Whether the outputs for one input depend on that input only: assumed in evaluation
        mode, not in training mode (batch statistics). With it, the exact NTK takes each
        input's Jacobian under ``vmap``; without it, the Jacobian of a whole block.

        Examples
        --------
        >>> import pytest; torch = pytest.importorskip("torch")
        >>> TorchModel(torch.nn.Linear(3, 2), train=True).independent_inputs
        False
        """
        return not self.train

    @property
    def theta0(self) -> Any:
        """The module's current parameters, flattened: a (P,) tensor on its device and dtype.

        Examples
        --------
        >>> import pytest; torch = pytest.importorskip("torch")
        >>> TorchModel(torch.nn.Linear(3, 2)).theta0.shape
        torch.Size([8])
        """
        import torch

        named = dict(self.module.named_parameters())
        return torch.cat([named[n].detach().reshape(-1) for n in self.names]).clone()

    def unflatten(self, theta: Any) -> dict[str, Any]:
        """Split a flat θ (P,) into the selected parameters, by name, in their shapes.

        The tensors are views of ``theta``. No argument checks.

        Parameters
        ----------
        theta : torch.Tensor, shape (P,)

        Returns
        -------
        dict[str, torch.Tensor]

        Examples
        --------
        >>> import pytest; torch = pytest.importorskip("torch")
        >>> model = TorchModel(torch.nn.Linear(3, 2))
        >>> {k: tuple(v.shape) for k, v in model.unflatten(model.theta0).items()}
        {'weight': (2, 3), 'bias': (2,)}
        """
        import torch

        # split, not slices: its backward concatenates the pieces' gradients, where each
        # slice's would be a zero-filled (P,) copy (4-8x slower Jacobians under vmap(jacrev))
        pieces = torch.split(theta, self._sizes, dim=-1)
        return {
            name: piece.reshape(shape)
            for name, piece, shape in zip(self.names, pieces, self._shapes, strict=True)
        }

    def __repr__(self) -> str:
        return (
            f"TorchModel({type(self.module).__name__}, num_params={self.num_params}, "
            f"train={self.train})"
        )

    @contextlib.contextmanager
    def _mode(self) -> Iterator[None]:
        """Set the training mode for one evaluation; in training mode, keep buffers constant.

        Attention runs on composite kernels that ``torch.func`` can transform: the fused
        inference kernels of ``nn.MultiheadAttention`` and ``nn.TransformerEncoderLayer``
        (their "fast path", taken in eval mode when no input requires grad) have no
        derivative, and the fused ``scaled_dot_product_attention`` kernels have no ``vmap``
        rule (a slow per-sample fallback) and no forward-mode derivative (``jvp``). So the
        fast path is off (``torch.backends.mha``, restored afterwards) and
        ``scaled_dot_product_attention`` uses its math backend; both compute the same
        function.
        """
        import torch
        from torch.nn.attention import SDPBackend, sdpa_kernel
        from torch.nn.modules.batchnorm import _NormBase

        mha = getattr(torch.backends, "mha", None)
        fastpath = mha.get_fastpath_enabled() if mha is not None else None
        modules = list(self.module.modules())
        previous = [m.training for m in modules]
        tracking = [(m, m.track_running_stats) for m in modules if isinstance(m, _NormBase)]
        try:
            if mha is not None:
                mha.set_fastpath_enabled(False)
            self.module.train(self.train)
            if self.train:  # batch statistics, running statistics left alone
                for m, _ in tracking:
                    m.track_running_stats = False
            with sdpa_kernel(SDPBackend.MATH):
                yield
        finally:
            for m, was in zip(modules, previous, strict=True):
                m.training = was
            for m, was in tracking:
                m.track_running_stats = was
            if mha is not None:
                mha.set_fastpath_enabled(fastpath)

    def _call(self, theta: Any, x: Any) -> Any:
        """The module's output for one parameter vector (P,): shape (N, ...)."""
        from torch.func import functional_call

        tensors = {n: p.detach() for n, p in self.module.named_parameters() if n not in self.names}
        tensors.update(self.unflatten(theta))
        return functional_call(self.module, tensors, (x,))

    def apply_unchecked(self, theta: Any, x: Any) -> Any:
        """:meth:`apply` without argument checks, for callers that validated once.

        Parameters
        ----------
        theta : torch.Tensor, shape (P,) or (B, P)
        x : torch.Tensor, shape (N, ...)

        Returns
        -------
        torch.Tensor, shape (N, O) for ``theta`` of shape (P,), (B, N, O) for a batch.

        Examples
        --------
        >>> import pytest; torch = pytest.importorskip("torch")
        >>> model = TorchModel(torch.nn.Linear(3, 2))
        >>> model.apply_unchecked(model.theta0, torch.ones(5, 3)).shape
        torch.Size([5, 2])
        """
        from torch.func import vmap

        n = x.shape[0]
        with self._mode():
            if theta.ndim == 1:
                return self._call(theta, x).reshape(n, -1)
            out = vmap(lambda t: self._call(t, x), randomness="different")(theta)
        return out.reshape(theta.shape[0], n, -1)

    def apply(self, theta: Any, x: Any) -> Any:
        """Evaluate the module for one or a batch of parameter vectors.

        Parameters
        ----------
        theta : torch.Tensor, shape (P,) or (B, P)
            On the module's device, in the dtype of its parameters.
        x : torch.Tensor, shape (N, ...)
            The module's inputs (its first dimension is the batch), same device and dtype.

        Returns
        -------
        torch.Tensor, shape (N, O) for ``theta`` of shape (P,), (B, N, O) for a batch;
        O is the number of outputs per input (the module's per-input output, flattened).

        Raises
        ------
        TypeError
            ``theta`` or ``x`` is not a torch tensor, not floating, or not in the parameters'
            dtype; the module does not return a tensor.
        ValueError
            Wrong shapes, or a tensor on another device.

        Examples
        --------
        >>> import pytest; torch = pytest.importorskip("torch")
        >>> model = TorchModel(torch.nn.Linear(3, 2))
        >>> thetas = torch.stack([model.theta0, 2 * model.theta0])
        >>> model.apply(thetas, torch.ones(5, 3)).shape
        torch.Size([2, 5, 2])
        """
        self.check_theta(theta, batched=True)
        self.check_x("x", x)
        out = self.apply_unchecked(theta, x)
        if out.dtype != self.dtype:
            raise TypeError(f"the module must return {self.dtype} outputs; got {out.dtype}")
        return out

    __call__ = apply

    def _check_tensor(self, name: str, a: Any) -> None:
        import torch

        if not isinstance(a, torch.Tensor):
            raise TypeError(f"`{name}` must be a torch.Tensor; got {type(a).__name__}")
        if a.dtype != self.dtype:
            raise TypeError(
                f"`{name}` must have the module parameters' dtype {self.dtype}; got {a.dtype}"
            )
        if a.device != self.device:
            raise ValueError(
                f"`{name}` must be on the module's device {self.device}; got {a.device}"
            )

    def check_theta(self, theta: Any, *, batched: bool) -> None:
        """Raise unless ``theta`` is a (P,) (or, if ``batched``, (B, P)) tensor like the module's.

        Parameters
        ----------
        theta : torch.Tensor
        batched : bool
            Whether a batch of parameter vectors, shape (B, P), is allowed.

        Raises
        ------
        TypeError
            Not a torch tensor, or not in the parameters' dtype.
        ValueError
            Wrong shape, or on another device.

        Examples
        --------
        >>> import pytest; torch = pytest.importorskip("torch")
        >>> TorchModel(torch.nn.Linear(3, 2)).check_theta(torch.zeros(7), batched=True)
        Traceback (most recent call last):
        ...
        ValueError: `theta` must have shape (P,) or (B, P) with P = 8; got shape (7,)
        """
        self._check_tensor("theta", theta)
        p = self.num_params
        what = f"(P,) or (B, P) with P = {p}" if batched else f"({p},)"
        if theta.ndim not in ((1, 2) if batched else (1,)) or theta.shape[-1] != p:
            raise ValueError(f"`theta` must have shape {what}; got shape {tuple(theta.shape)}")

    def check_x(self, name: str, x: Any) -> None:
        """Raise unless ``x`` is a tensor of inputs (N, ...) on the module's device and dtype.

        Parameters
        ----------
        name : str
            The argument's name, used in the messages.
        x : torch.Tensor

        Raises
        ------
        TypeError
            Not a torch tensor, or not in the parameters' dtype.
        ValueError
            A scalar, or on another device.

        Examples
        --------
        >>> import pytest; torch = pytest.importorskip("torch")
        >>> TorchModel(torch.nn.Linear(3, 2)).check_x("x1", torch.ones(4, 3, dtype=torch.int64))
        Traceback (most recent call last):
        ...
        TypeError: `x1` must have the module parameters' dtype torch.float32; got torch.int64
        """
        self._check_tensor(name, x)
        if x.ndim < 1:
            raise ValueError(f"`{name}` must have shape (N, ...); got a scalar")

    def eval_bytes_per_set(self, n_inputs: int, itemsize: int) -> int:
        """A rough estimate of the bytes one parameter set takes in a batched evaluation.

        The module's activations are not known without running it, so this counts the
        parameter vector twice (θ and the perturbation) and four activations per input as
        wide as the widest parameter tensor's first dimension (a Linear layer's outputs, a
        convolution's channels). Modules with large intermediate feature maps need more: pass
        ``memory_budget`` or ``samples_per_call`` to the kernels then.

        Parameters
        ----------
        n_inputs : int
        itemsize : int
            Bytes per number.

        Returns
        -------
        int

        Examples
        --------
        >>> import pytest; torch = pytest.importorskip("torch")
        >>> TorchModel(torch.nn.Linear(3, 2)).eval_bytes_per_set(10, 4)
        384
        """
        return itemsize * (2 * self.num_params + 4 * n_inputs * self._width)

    def jvp(self, theta: Any, x: Any, tangents: Any) -> Any:
        """Jacobian-vector products ∂f(x)/∂θ · v for a batch of tangents (``torch.func.jvp``).

        Parameters
        ----------
        theta : torch.Tensor, shape (P,)
        x : torch.Tensor, shape (N, ...)
        tangents : torch.Tensor, shape (K, P)

        Returns
        -------
        torch.Tensor, shape (K, N, O)

        Examples
        --------
        >>> import pytest; torch = pytest.importorskip("torch")
        >>> model = TorchModel(torch.nn.Linear(3, 2))
        >>> model.jvp(model.theta0, torch.ones(5, 3), torch.eye(8)[:4]).shape
        torch.Size([4, 5, 2])
        """
        from torch.func import jvp, vmap

        def one(v: Any) -> Any:
            return jvp(lambda t: self._call(t, x), (theta,), (v,))[1]

        with self._mode():
            out = vmap(one, randomness="different")(tangents)
        return out.reshape(tangents.shape[0], x.shape[0], -1)


def from_torch(
    module: Any, *, params: Iterable[str] | None = None, train: bool = False
) -> TorchModel:
    """Wrap a ``torch.nn.Module`` as a model whose θ is its flattened parameters.

    θ is the concatenation of the selected parameters, each flattened, in the order of
    ``module.named_parameters()``; the other parameters and all buffers (e.g. BatchNorm's
    running statistics) enter every evaluation unchanged. The model evaluates a batch of
    parameter vectors with ``torch.func.functional_call`` under ``vmap``, offers ``jvp``
    through ``torch.func.jvp``, and works with :func:`~nntk_array.ntk` (Jacobians by
    ``torch.func``), :func:`~nntk_array.nntk` and the other kernels. torch is imported only
    by this call, not by ``import nntk_array``.

    Parameters
    ----------
    module : torch.nn.Module
        Its inputs are (N, ...) tensors whose first dimension is the batch, and it returns one
        tensor (N, ...); the outputs per input are flattened to O numbers.
    params : iterable of str, optional
        Names (as in ``module.named_parameters()``) of the parameters that make up θ; by
        default those with ``requires_grad=True``.
    train : bool, default False
        The training mode of every evaluation (the module's own mode is restored after
        each). In training mode normalization layers use the batch statistics of the inputs
        without updating their running statistics, and dropout draws independently for every
        parameter vector.

    Returns
    -------
    TorchModel
        A model with ``num_params``, ``apply``, ``apply_unchecked``, ``check_x``,
        ``eval_bytes_per_set`` and ``jvp``, plus ``theta0`` (the module's current parameters
        as a flat tensor) and ``unflatten(theta)`` (a dict of named tensors).

    Raises
    ------
    TypeError
        ``module`` is not a ``torch.nn.Module``, ``params`` is a string, or a selected
        parameter is not floating.
    ValueError
        ``params`` names unknown parameters or one twice, selects nothing, or parameters of
        different dtypes or devices.

    Examples
    --------
    >>> import pytest; torch = pytest.importorskip("torch")
    >>> import nntk_array as nk
    >>> net = torch.nn.Sequential(torch.nn.Linear(1, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    >>> model = nk.from_torch(net)
    >>> model.num_params
    25
    >>> nk.ntk(model, model.theta0, torch.linspace(-1, 1, 3)[:, None]).shape
    torch.Size([3, 3])
    """
    return TorchModel(module, params=params, train=train)
