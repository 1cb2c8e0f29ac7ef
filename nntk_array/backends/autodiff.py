"""Derivatives of user models through the library's own autodiff (torch.func, JAX).

A user model is batched: ``f(thetas, x)`` maps parameters of shape (B, P) and inputs of shape
(N, ...) to outputs of shape (B, N) or (B, N, O). :func:`jacobian` and :func:`jvp` (forward
mode) differentiate one parameter vector's outputs, t ↦ f(t[None, :], x)[0], with ``x`` an
argument of the differentiated function, not a value captured in a fresh closure.

:func:`jacobian` has three modes (:mod:`nntk_array._mc.plan` chooses among them):
``"batch"``, reverse mode through the whole block (``jacrev``: N·O backward passes of all N
inputs, so ~N² O work; the only mode for a model whose outputs mix its inputs), and, for
models that treat inputs independently, ``"reverse"`` and ``"forward"``: one input at a time
under ``vmap`` (``vmap(jacrev)``, O backward passes per input, or ``vmap(jacfwd)``, P
forward passes per input), as the torch.func NTK tutorial does.

That matters on JAX, where ``jax.jit`` compiles once per function object and argument shapes
and dtypes: a closure over each block of inputs is a new function, traced and compiled again
for every block and every call. Here the jitted programs are cached per model (weakly, so a
model's programs go when the model goes), and a new block of the same shape reuses them.
"""

from __future__ import annotations

import inspect
import threading
import weakref
from collections.abc import Callable
from typing import Any, NamedTuple

from array_api_compat import is_jax_namespace, is_torch_namespace

from .._typing import Array, Namespace

__all__ = ["JACOBIAN_MODES", "has_autodiff", "jacobian", "jvp", "residual_grad"]

Model = Callable[[Array, Array], Array]

JACOBIAN_MODES = ("batch", "reverse", "forward")


class _Programs(NamedTuple):
    """The jitted derivatives of one JAX model."""

    jacobian: Callable[[Array, Array], Array]
    jvp: Callable[[Array, Array, Array], tuple[Array, Array]]
    reverse: Callable[[Array, Array], Array]
    forward: Callable[[Array, Array], Array]
    residual: Callable[[Array, Array, Array], tuple[Array, Array]]


# model (or a bound method's instance) -> {None or the method's function: its programs}
_JAX_PROGRAMS: weakref.WeakKeyDictionary[Any, dict[Any, _Programs]] = weakref.WeakKeyDictionary()
_JAX_LOCK = threading.Lock()  # Dask runs blocks in threads


def has_autodiff(xp: Namespace) -> bool:
    """Whether :func:`jacobian` and :func:`jvp` work for arrays of ``xp``."""
    return bool(is_torch_namespace(xp) or is_jax_namespace(xp))


def jacobian(f: Model, theta: Array, x: Array, *, xp: Namespace, mode: str = "batch") -> Array:
    """Jacobian of a batched model's outputs in its parameters.

    Parameters
    ----------
    f : callable
        The user's batched model ``f(thetas, x)``: parameters (B, P) and inputs (N, ...) to
        outputs (B, N) or (B, N, O).
    theta : array, shape (P,)
    x : array, shape (N, ...)
        The inputs, an argument of the differentiated function (not captured in a closure).
    xp : namespace
        ``theta``'s namespace; torch and JAX only.
    mode : {"batch", "reverse", "forward"}, default "batch"
        ``"batch"``: ``jacrev`` of the whole block's outputs (exact for any model).
        ``"reverse"`` / ``"forward"``: ``vmap`` over the inputs of ``jacrev`` / ``jacfwd`` of
        one input's outputs, f(t[None, :], x[i:i+1]); equal to ``"batch"`` when the model
        treats its inputs independently (the output for x[i] depends on x[i] only).

    Returns
    -------
    array, shape (N, P) or (N, O, P)
        The Jacobian of t ↦ f(t[None, :], x)[0] at ``theta``: ``out.shape[1:] + (P,)`` for
        the model's output ``out``.

    Raises
    ------
    TypeError
        ``xp`` has no autodiff.
    ValueError
        ``theta`` is not 1-D, or an unknown ``mode``.

    Notes
    -----
    On JAX the jitted ``jax.jacrev`` is cached per ``f`` (held weakly), so ``f`` is traced and
    compiled once per input shape and dtype, not once per call or block. An ``f`` that cannot
    be hashed or weakly referenced is not cached: it is compiled on every call.
    """
    _check_autodiff(xp)
    _check_theta(theta)
    if mode not in JACOBIAN_MODES:
        raise ValueError(f"`mode` must be one of {JACOBIAN_MODES}; got {mode!r}")
    if is_torch_namespace(xp):
        from torch.func import jacfwd, jacrev, vmap

        one = _one_output(lambda: f)
        if mode == "batch":
            return jacrev(one)(theta, x)
        derivative = jacrev if mode == "reverse" else jacfwd
        single = vmap(derivative(_one_input(one)), in_dims=(None, 0), randomness="different")
        return single(theta, x)
    programs = _jax_programs(f)
    return {"batch": programs.jacobian, "reverse": programs.reverse, "forward": programs.forward}[
        mode
    ](theta, x)


def jvp(f: Model, theta: Array, x: Array, tangent: Array, *, xp: Namespace) -> tuple[Array, Array]:
    """Forward-mode Jacobian-vector product of a batched model's outputs in its parameters.

    Parameters
    ----------
    f : callable
        The user's batched model ``f(thetas, x)``, as for :func:`jacobian`.
    theta : array, shape (P,)
    x : array, shape (N, ...)
    tangent : array, shape (P,)
        The direction in parameter space.
    xp : namespace
        ``theta``'s namespace; torch and JAX only.

    Returns
    -------
    out : array, shape (N,) or (N, O)
        f(theta[None, :], x)[0].
    jv : array, shape of ``out``
        J · tangent, the directional derivative of ``out`` along ``tangent``.

    Raises
    ------
    TypeError
        ``xp`` has no autodiff.
    ValueError
        ``theta`` is not 1-D or ``tangent`` does not have its shape.

    Notes
    -----
    On JAX the jitted ``jax.jvp`` is cached per ``f`` as in :func:`jacobian`.
    """
    _check_autodiff(xp)
    _check_theta(theta)
    if tuple(tangent.shape) != tuple(theta.shape):
        raise ValueError(
            f"`tangent` must have the shape of `theta`, {tuple(theta.shape)}; "
            f"got {tuple(tangent.shape)}"
        )
    if is_torch_namespace(xp):
        from torch.func import jvp as torch_jvp

        one = _one_output(lambda: f)
        out, jv = torch_jvp(lambda t: one(t, x), (theta,), (tangent,))
        return out, jv
    return _jax_programs(f).jvp(theta, x, tangent)


def residual_grad(
    f: Model, theta: Array, x: Array, y: Array, *, xp: Namespace
) -> tuple[Array, Array]:
    """Outputs of a batched model and the gradient of its squared loss, one reverse pass.

    Parameters
    ----------
    f : callable
        The user's batched model ``f(thetas, x)``, as for :func:`jacobian`.
    theta : array, shape (P,)
    x : array, shape (N, ...)
    y : array
        Targets, of the shape of ``f(theta[None, :], x)[0]``.
    xp : namespace
        ``theta``'s namespace; torch and JAX only.

    Returns
    -------
    out : array
        f(theta[None, :], x)[0].
    grad : array, shape (P,)
        Jᵀ (out − y), the gradient of ½‖out − y‖² in ``theta``, from one vector-Jacobian
        product (no Jacobian is formed).

    Raises
    ------
    TypeError
        ``xp`` has no autodiff.
    ValueError
        ``theta`` is not 1-D.

    Notes
    -----
    On JAX the jitted program is cached per ``f`` as in :func:`jacobian`.
    """
    _check_autodiff(xp)
    _check_theta(theta)
    if is_torch_namespace(xp):
        from torch.func import vjp

        one = _one_output(lambda: f)
        out, pullback = vjp(lambda t: one(t, x), theta)
        (grad,) = pullback(out - y)
        return out, grad
    return _jax_programs(f).residual(theta, x, y)


def _check_autodiff(xp: Namespace) -> None:
    if not has_autodiff(xp):
        raise TypeError(
            f"the exact NTK of a user callable needs automatic differentiation, which "
            f"{xp.__name__} arrays do not have. Pass torch or JAX arrays, use the built-in "
            "nk.MLP (whose NTK needs no autodiff), or use nk.nntk, which needs no derivatives"
        )


def _check_theta(theta: Array) -> None:
    if theta.ndim != 1:
        raise ValueError(f"`theta` must have shape (P,); got shape {tuple(theta.shape)}")


def _one_output(get_model: Callable[[], Model | None]) -> Model:
    """t, x ↦ f(t[None, :], x)[0], for the model ``get_model()`` (a weak reference, or not)."""

    def one(t: Array, x: Array) -> Array:
        model = get_model()
        if model is None:
            raise ReferenceError("the model was garbage-collected while being differentiated")
        out: Array = model(t[None, :], x)
        return out[0, ...]

    return one


def _one_input(one: Model) -> Model:
    """t, xi ↦ one(t, xi[None])[0]: one input's outputs, (O,) or ()."""

    def single(t: Array, xi: Array) -> Array:
        out: Array = one(t, xi[None, ...])
        return out[0, ...]

    return single


def _jax_programs(f: Model) -> _Programs:
    """The jitted derivatives of ``f``, built on first use and cached while ``f`` lives."""
    # A bound method is a new object at every attribute access: key on its instance instead.
    owner, member = (f.__self__, f.__func__) if inspect.ismethod(f) else (f, None)
    try:
        # The programs hold the model weakly: a strong reference from a value of the
        # WeakKeyDictionary to its key would keep the model alive for ever.
        ref = weakref.WeakMethod(f) if member is not None else weakref.ref(f)
        with _JAX_LOCK:
            programs = _JAX_PROGRAMS.get(owner, {}).get(member)
            if programs is None:
                programs = _build_jax_programs(_one_output(ref))
                _JAX_PROGRAMS.setdefault(owner, {})[member] = programs
    except TypeError:  # unhashable or not weakly referenceable: compiled for this call only
        return _build_jax_programs(_one_output(lambda: f))
    return programs


def _build_jax_programs(one: Model) -> _Programs:
    import jax

    def directional(t: Array, x: Array, v: Array) -> tuple[Array, Array]:
        out, jv = jax.jvp(lambda s: one(s, x), (t,), (v,))
        return out, jv

    def residual(t: Array, x: Array, y: Array) -> tuple[Array, Array]:
        out, pullback = jax.vjp(lambda s: one(s, x), t)
        return out, pullback(out - y)[0]

    single = _one_input(one)
    # One compiled program instead of op-by-op dispatch of the reverse pass (~20x faster);
    # jit compiles lazily, so the unused modes cost nothing.
    return _Programs(
        jacobian=jax.jit(jax.jacrev(one)),
        jvp=jax.jit(directional),
        reverse=jax.jit(jax.vmap(jax.jacrev(single), in_axes=(None, 0))),
        forward=jax.jit(jax.vmap(jax.jacfwd(single), in_axes=(None, 0))),
        residual=jax.jit(residual),
    )
