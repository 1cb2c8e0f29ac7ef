"""An adapter from a JAX pytree model ``apply_fn(params, x)`` to the model protocol.

Flax linen's ``model.apply``, Haiku's ``transformed.apply`` (with ``rng=None`` bound), an
Equinox module split into ``params, static = eqx.partition(m, eqx.is_inexact_array)`` and
called as ``lambda p, x: eqx.combine(p, static)(x)``, or a hand-written function of a dict of
arrays all have that form. The flat parameter vector θ is the pytree's leaves, raveled and
concatenated in ``jax.tree_util`` order (as ``jax.flatten_util.ravel_pytree`` does).

JAX is imported when a model is built, not when this module is: ``import nntk_array`` loads
no optional library.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from .._typing import Array

__all__ = ["JaxModel", "from_jax"]


def _is_jax_array(a: object) -> bool:
    import jax

    return isinstance(a, jax.Array)  # tracers under jit/vmap/grad included


class JaxModel:
    """A JAX pytree model as a :class:`~nntk_array.Model`; build one with :func:`from_jax`.

    Offers ``num_params``, ``apply``, and the capabilities ``check_x``, ``apply_unchecked``,
    ``jvp`` (forward mode, ``jax.jvp``) and ``eval_bytes_per_set``; its exact NTK comes from
    JAX's autodiff. One jitted program per method and model: calls with the same shapes and
    dtypes reuse it, and it inlines into a user's own ``jax.jit`` or ``jax.vmap``.

    Attributes
    ----------
    theta0 : jax.Array, shape (P,)
        The initial parameters, flattened.
    independent_inputs : bool
        Whether one input's outputs depend on that input only (the exact NTK then takes one
        input's Jacobian at a time under ``vmap``).
    num_params : int
        P.
    """

    def __init__(
        self,
        apply_fn: Callable[..., Any],
        params: Any,
        *,
        batch_axis: int | None = None,
        independent_inputs: bool = True,
    ) -> None:
        import jax
        import jax.numpy as jnp
        from jax.flatten_util import ravel_pytree

        if not callable(apply_fn):
            raise TypeError(
                f"`apply_fn` must be a callable apply_fn(params, x); got {type(apply_fn).__name__}"
            )
        if batch_axis is not None and (
            isinstance(batch_axis, bool) or not isinstance(batch_axis, int) or batch_axis != 0
        ):
            raise ValueError(
                "`batch_axis` must be None (apply_fn maps a batch x of shape (N, ...)) or 0 "
                f"(apply_fn maps one input; it is vmapped over x's first axis); got {batch_axis!r}"
            )
        if not isinstance(independent_inputs, bool):
            raise TypeError(
                f"`independent_inputs` must be a bool; got {type(independent_inputs).__name__}"
            )
        if batch_axis == 0 and not independent_inputs:
            raise ValueError(
                "`independent_inputs=False` contradicts `batch_axis=0`: an apply_fn mapped over "
                "the inputs one at a time cannot mix them"
            )
        leaves_with_path, treedef = jax.tree_util.tree_flatten_with_path(params)
        if not leaves_with_path:
            raise ValueError("`params` must hold at least one array; got an empty pytree")
        shapes: list[tuple[int, ...]] = []
        for path, leaf in leaves_with_path:
            dtype = jnp.result_type(leaf)  # Python scalars too, without converting them
            if not jnp.issubdtype(dtype, jnp.floating):
                raise TypeError(
                    f"`params` must hold real floating arrays only; the leaf at "
                    f"{jax.tree_util.keystr(path) or '<root>'} has dtype {dtype}. Close over "
                    "integer or boolean state in `apply_fn` instead"
                )
            shapes.append(tuple(int(d) for d in jnp.shape(leaf)))
        theta0, _ = ravel_pytree(params)
        self._apply_fn = apply_fn
        self._treedef = treedef
        self._shapes = tuple(shapes)
        self._sizes = tuple(math.prod(s) for s in shapes)
        self._batch_axis = batch_axis
        self.independent_inputs = independent_inputs
        self.theta0: Array = theta0
        self._num_params = int(theta0.shape[0])
        # The one compiled program per method: jit caches it per shape and dtype.
        self._apply_jit = jax.jit(jax.vmap(self._apply_one, in_axes=(0, None)))
        self._jvp_jit = jax.jit(jax.vmap(self._jvp_one, in_axes=(None, None, 0)))

    @property
    def num_params(self) -> int:
        """P, the number of scalars in ``params``.

        Examples
        --------
        >>> import pytest; jnp = pytest.importorskip("jax.numpy")
        >>> import nntk_array as nk
        >>> nk.from_jax(lambda p, x: x @ p["w"], {"w": jnp.ones((3, 2))}).num_params
        6
        """
        return self._num_params

    def __repr__(self) -> str:
        return f"JaxModel(num_params={self._num_params}, apply_fn={self._apply_fn!r})"

    def unravel(self, theta: Array) -> Any:
        """The pytree of parameters that a flat vector ``theta`` (shape (P,)) stands for.

        The leaves take ``theta``'s dtype (JAX's own ``unravel`` would refuse a dtype other
        than θ's): a float32 model evaluated at float64 θ runs in float64.

        Parameters
        ----------
        theta : jax.Array, shape (P,)

        Returns
        -------
        pytree
            The structure of the ``params`` the model was built from.

        Examples
        --------
        >>> import pytest; jnp = pytest.importorskip("jax.numpy")
        >>> import nntk_array as nk
        >>> model = nk.from_jax(lambda p, x: x @ p["w"], {"w": jnp.ones((3, 2))})
        >>> model.unravel(jnp.arange(6.0))["w"].shape
        (3, 2)
        """
        import jax

        leaves, start = [], 0
        for shape, size in zip(self._shapes, self._sizes, strict=True):
            leaves.append(theta[start : start + size].reshape(shape))
            start += size
        return jax.tree_util.tree_unflatten(self._treedef, leaves)

    def _apply_one(self, theta: Array, x: Array) -> Array:
        """One flat parameter vector's outputs, (N, O)."""
        import jax

        params = self.unravel(theta)
        if self._batch_axis is None:
            out = self._apply_fn(params, x)
        else:
            out = jax.vmap(lambda xi: self._apply_fn(params, xi))(x)
        n = x.shape[0]
        if not hasattr(out, "shape") or out.ndim == 0 or out.shape[0] != n:
            raise ValueError(
                f"`apply_fn(params, x)` must return an array whose first axis holds the {n} "
                f"inputs of x, shape (N, ...); it returned {getattr(out, 'shape', type(out))}"
            )
        return out.reshape(n, -1)

    def _jvp_one(self, theta: Array, x: Array, tangent: Array) -> Array:
        import jax

        _, jv = jax.jvp(lambda t: self._apply_one(t, x), (theta,), (tangent,))
        return jv

    def _check_theta(self, name: str, theta: Array, ndims: tuple[int, ...], what: str) -> None:
        if not _is_jax_array(theta):
            raise TypeError(f"`{name}` must be a JAX array; got {type(theta).__name__}")
        if theta.ndim not in ndims or theta.shape[-1] != self._num_params:
            raise ValueError(f"`{name}` must have shape {what}; got shape {tuple(theta.shape)}")
        import jax.numpy as jnp

        if not jnp.issubdtype(theta.dtype, jnp.floating):
            raise TypeError(f"`{name}` must have a real floating dtype; got {theta.dtype}")

    def check_x(self, name: str, x: Array) -> None:
        """Raise unless ``x`` is a JAX array of shape (N, ...).

        Parameters
        ----------
        name : str
            The argument's name, used in the message.
        x : array

        Raises
        ------
        TypeError
            ``x`` is not a JAX array.
        ValueError
            ``x`` is zero-dimensional.

        Examples
        --------
        >>> import numpy as np
        >>> import pytest; jnp = pytest.importorskip("jax.numpy")
        >>> import nntk_array as nk
        >>> model = nk.from_jax(lambda p, x: x @ p["w"], {"w": jnp.ones((3, 2))})
        >>> model.check_x("x1", np.ones((4, 3)))
        Traceback (most recent call last):
        ...
        TypeError: `x1` must be a JAX array; got ndarray
        """
        if not _is_jax_array(x):
            raise TypeError(f"`{name}` must be a JAX array; got {type(x).__name__}")
        if x.ndim < 1:
            raise ValueError(f"`{name}` must have shape (N, ...); got shape {tuple(x.shape)}")

    def apply(self, thetas: Array, x: Array) -> Array:
        """Evaluate the model at a batch of flat parameter vectors (``jax.vmap`` over them).

        Parameters
        ----------
        thetas : jax.Array, shape (B, P) or (P,)
        x : jax.Array, shape (N, ...)
            Inputs, shared by all parameter vectors.

        Returns
        -------
        jax.Array, shape (B, N, O), or (N, O) for ``thetas`` of shape (P,)
            ``apply_fn``'s outputs of shape (N, ...) with the trailing axes flattened into O
            (O = 1 for outputs of shape (N,)).

        Raises
        ------
        TypeError
            ``thetas`` or ``x`` is not a JAX array, or ``thetas`` has no real floating dtype.
        ValueError
            ``thetas`` has the wrong shape, ``x`` is zero-dimensional, or ``apply_fn`` does not
            return one output per input.

        Examples
        --------
        >>> import pytest; jnp = pytest.importorskip("jax.numpy")
        >>> import nntk_array as nk
        >>> model = nk.from_jax(lambda p, x: x @ p["w"], {"w": jnp.ones((3, 2))})
        >>> model.apply(jnp.zeros((4, 6)), jnp.ones((5, 3))).shape
        (4, 5, 2)
        """
        self._check_theta("thetas", thetas, (1, 2), f"(B, {self._num_params}) or (P,)")
        self.check_x("x", x)
        if thetas.ndim == 1:
            out: Array = self._apply_jit(thetas[None, :], x)[0]
            return out
        return self.apply_unchecked(thetas, x)

    def apply_unchecked(self, thetas: Array, x: Array) -> Array:
        """:meth:`apply` for ``thetas`` of shape (B, P), without argument checks.

        Examples
        --------
        >>> import pytest; jnp = pytest.importorskip("jax.numpy")
        >>> import nntk_array as nk
        >>> model = nk.from_jax(lambda p, x: x @ p["w"], {"w": jnp.ones((3, 2))})
        >>> model.apply_unchecked(model.theta0[None, :], jnp.ones((5, 3))).shape
        (1, 5, 2)
        """
        out: Array = self._apply_jit(thetas, x)
        return out

    def jvp(self, theta: Array, x: Array, tangents: Array) -> Array:
        """Jacobian-vector products J(x) vᵀ by forward mode (``jax.jvp``, vmapped over v).

        Parameters
        ----------
        theta : jax.Array, shape (P,)
        x : jax.Array, shape (N, ...)
        tangents : jax.Array, shape (K, P)
            Cast to ``theta``'s dtype.

        Returns
        -------
        jax.Array, shape (K, N, O)

        Raises
        ------
        TypeError, ValueError
            As for :meth:`apply`, naming ``theta`` or ``tangents``.

        Examples
        --------
        >>> import pytest; jnp = pytest.importorskip("jax.numpy")
        >>> import nntk_array as nk
        >>> model = nk.from_jax(lambda p, x: x @ p["w"], {"w": jnp.ones((3, 2))})
        >>> model.jvp(model.theta0, jnp.ones((5, 3)), jnp.eye(6)[:2]).shape
        (2, 5, 2)
        """
        p = self._num_params
        self._check_theta("theta", theta, (1,), f"({p},)")
        self._check_theta("tangents", tangents, (2,), f"(K, {p})")
        self.check_x("x", x)
        out: Array = self._jvp_jit(theta, x, tangents.astype(theta.dtype))
        return out

    def eval_bytes_per_set(self, n_inputs: int, itemsize: int) -> int:
        """An estimate of the bytes one parameter set needs in a batched evaluation.

        The model's internals are opaque, so this is a dense-network estimate: a copy of the
        parameters plus three activations of width W per input, W the largest last axis of any
        parameter leaf (a dense layer's width). Convolutions and attention hold more per input
        than that; wrap the model and override this method for them.

        Parameters
        ----------
        n_inputs : int
        itemsize : int
            Bytes per number.

        Returns
        -------
        int
            ``itemsize · (P + 3 · n_inputs · W)``.

        Examples
        --------
        >>> import pytest; jnp = pytest.importorskip("jax.numpy")
        >>> import nntk_array as nk
        >>> model = nk.from_jax(lambda p, x: x @ p["w"], {"w": jnp.ones((3, 2))})
        >>> model.eval_bytes_per_set(10, 4)   # 4 · (6 + 3 · 10 · 2)
        264
        """
        width = max((s[-1] for s in self._shapes if s), default=1)
        return int(itemsize) * (self._num_params + 3 * int(n_inputs) * width)


def from_jax(
    apply_fn: Callable[..., Any],
    params: Any,
    *,
    batch_axis: int | None = None,
    independent_inputs: bool = True,
) -> JaxModel:
    """Wrap a JAX pytree model ``apply_fn(params, x)`` as a model for the kernels.

    θ is ``jax.flatten_util.ravel_pytree(params)``: the leaves raveled and concatenated in
    ``jax.tree_util`` order. Its dtype is the params' (their common dtype if the leaves
    differ); the kernels promote θ and the inputs to a common dtype, and the model is then
    evaluated in that dtype.

    Parameters
    ----------
    apply_fn : callable
        ``apply_fn(params, x)``: flax linen's ``model.apply``, a Haiku ``apply`` with the rng
        bound, ``lambda p, x: eqx.combine(p, static)(x)`` for an Equinox module, or any
        function of a pytree of arrays. It must be traceable by JAX (``jit``, ``vmap``,
        ``jvp``, ``jacrev``); Python side effects run only while tracing.
    params : pytree of floating arrays
        The parameters at which the kernels are usually evaluated (``model.theta0``).
        Integer or boolean state (batch-norm counters, masks) belongs in ``apply_fn``'s
        closure.
    batch_axis : None or 0, optional
        ``None`` (default): ``apply_fn`` maps a batch ``x`` of shape (N, ...) to outputs of
        shape (N, ...). ``0``: ``apply_fn`` maps one input (an Equinox module's convention)
        and is vmapped over x's first axis.
    independent_inputs : bool, default True
        Whether one input's outputs depend on that input only. Pass ``False`` for a model
        whose outputs mix the inputs of a batch (batch statistics, e.g. flax's ``BatchNorm``
        with ``use_running_average=False``): the exact NTK then differentiates whole blocks
        of inputs instead of one input at a time, and, as for every kernel, the numbers depend
        on how the inputs are blocked.

    Returns
    -------
    JaxModel
        A :class:`~nntk_array.Model` with ``theta0``, ``unravel(theta)``, a batched
        ``apply(thetas, x)`` of shape (B, N, O), ``jvp`` and the other capabilities.

    Raises
    ------
    TypeError
        ``apply_fn`` is not callable, a leaf of ``params`` is not real floating, or
        ``independent_inputs`` is not a bool.
    ValueError
        ``params`` is empty, ``batch_axis`` is neither None nor 0, or
        ``independent_inputs=False`` with ``batch_axis=0``.

    Examples
    --------
    >>> import pytest; jnp = pytest.importorskip("jax.numpy")
    >>> import nntk_array as nk
    >>> params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
    >>> model = nk.from_jax(lambda p, x: jnp.tanh(x @ p["w"] + p["b"]), params)
    >>> model.num_params, model.theta0.shape
    (8, (8,))
    >>> nk.ntk(model, model.theta0, jnp.ones((4, 3))).shape
    (4, 4)
    """
    return JaxModel(apply_fn, params, batch_axis=batch_axis, independent_inputs=independent_inputs)
