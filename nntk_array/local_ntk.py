"""The exact local neural tangent kernel Θ(x, x') = J(x) J(x')ᵀ (entry point)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from ._mc.local import blockwise, contract
from ._mc.plan import ntk_blocks
from ._typing import Array
from ._validate import check_choice, check_finite, check_positive_int
from ._xp import is_dask, resolve
from .models.protocol import Model, bind
from .options import Resources

__all__ = ["ntk"]

OUTPUTS = ("mean", "full")

ModelFn = Callable[[Array, Array], Array]


def ntk(
    f: Model | ModelFn,
    theta: Array,
    x1: Array,
    x2: Array | None = None,
    *,
    outputs: str = "mean",
    batch_size: int | None = None,
    memory_budget: int | None = None,
) -> Array:
    """Exact local NTK Θ(x, x') = Σ_p ∂f(x)/∂θ_p ∂f(x')/∂θ_p at ``theta``.

    A model that offers structured NTK terms (the built-in :class:`MLP` does) is contracted
    layer by layer in pure array-API code: any backend (NumPy, array-api-strict, CuPy, torch,
    JAX), no autodiff and no (N, P) Jacobian. For any other model or callable the Jacobian
    comes from ``torch.func`` or ``jax`` autodiff, one block of inputs at a time (compiled
    once per block shape on JAX): each input's Jacobian by ``vmap(jacrev)`` over the block
    (``jacfwd`` when the model has fewer parameters than outputs), or, for a model that
    declares ``independent_inputs = False`` (a torch module in training mode), ``jacrev``
    of the whole block.

    Parameters
    ----------
    f : model or callable
        A model (see :class:`nntk_array.Model`) or any ``f(thetas, x)`` mapping parameters
        of shape (B, P) and inputs of shape (N, ...) to outputs of shape (B, N) or (B, N, O).
    theta : array, shape (P,)
        Parameters at which the kernel is taken.
    x1 : array, shape (N1, ...)
    x2 : array, shape (N2, ...), optional
        Defaults to ``x1``; the symmetric kernel is then computed once per block pair.
    outputs : {"mean", "full"}, default "mean"
        ``"mean"`` averages the kernel over the O outputs (neural-tangents'
        ``trace_axes=(-1,)``); ``"full"`` returns every output pair.
    batch_size : int, optional
        Inputs per block (the one meaning of ``batch_size`` in this library). By default
        blocks are sized to ``memory_budget``; the result is the same for any block size
        (for a model that treats its inputs independently). Given, it overrides the budget.
    memory_budget : int, optional
        Bytes (default 256 MiB) for the per-block temporaries: a block's factors (the MLP's
        per-layer factors, or an autodiff Jacobian of N_block × O × P numbers) and the
        temporaries of computing them (autodiff's, measured at about twice the Jacobian),
        those of a second block while the first is held, and one block pair's products. A
        model with many parameters gets small blocks; every block's factors are kept when
        they fit. **What grows beyond it:** the N1 × N2 kernel (× O² for ``"full"``) and its
        assembly from blocks, and the model's own activations where they dwarf O × P
        numbers per input. The same meaning as in :func:`nntk_array.nntk`
        (:class:`nntk_array.Resources`).

    Returns
    -------
    array, shape (N1, N2), or (N1, N2, O, O) for ``outputs="full"``
        In the inputs' (common) floating dtype, namespace and device.

    Raises
    ------
    TypeError
        Mixed array libraries; integer, boolean or complex inputs; a user callable on a
        library without autodiff (NumPy, CuPy, array-api-strict).
    ValueError
        Wrong shapes, no inputs, mixed devices, NaN/inf inputs, bad ``outputs``; a
        ``memory_budget`` < 1, or too small for one input's factors (without ``batch_size``).
    TypeError
        A non-integer ``batch_size`` or ``memory_budget``.

    Notes
    -----
    Dask arrays ``x1``/``x2`` (NumPy or CuPy chunks) give a lazy Dask kernel, one task per
    pair of row blocks (the upper triangle when ``x2`` is None); each task is this function
    on the blocks, so the numbers equal the in-memory call's. There the Dask chunks are the
    blocks: size them to the memory you have (``memory_budget`` and ``batch_size`` apply
    to the in-memory checks only).

    Examples
    --------
    >>> import numpy as np
    >>> import nntk_array as nk
    >>> model = nk.MLP(1, (64,), activation="relu")
    >>> theta = model.init(0, xp=np)
    >>> x = np.linspace(-1.0, 1.0, 5)[:, None]
    >>> K = nk.ntk(model, theta, x)
    >>> K.shape, bool(np.allclose(K, K.T))
    ((5, 5), True)
    """
    check_choice("outputs", outputs, OUTPUTS)
    if batch_size is not None:
        batch_size = check_positive_int("batch_size", batch_size)
    memory_budget = Resources(memory_budget=memory_budget).memory_budget
    if is_dask(theta, x1, x2):
        from .distributed.dask import ntk_graph

        return ntk_graph(
            ntk,
            f,
            theta,
            x1,
            x2,
            outputs=outputs,
            batch_size=batch_size,
            memory_budget=memory_budget,
        )
    xp, (theta, x1, x2) = resolve(theta=theta, x1=x1, x2=x2)
    model = bind(f, xp, theta, x1, x2)
    check_finite(xp, theta=theta, x1=x1, x2=x2)
    full = outputs == "full"
    size, cache = ntk_blocks(
        batch_size,
        x1.shape[0],
        None if x2 is None else x2.shape[0],
        n_out=model.num_outputs,
        full=full,
        per_input=model.ntk_numbers_per_input,
        itemsize=4 if x1.dtype == xp.float32 else 8,
        mode=model.jacobian_mode,
        budget=memory_budget,
    )
    features = partial(model.ntk_terms, xp, theta)
    pair = partial(contract, xp, n_out=model.num_outputs, full=full)
    return blockwise(xp, features, pair, x1, x2, size, cache=cache)
