"""Per-chunk compilation on JAX: the engine's hot loop bodies as cached ``jax.jit`` programs.

JAX runs eager code one operation at a time: every slice, product and reduction is its own
dispatch and writes its own array, so the perturbed evaluations of a Monte Carlo kernel (the
model's forward pass on a chunk of B parameter sets, (B, N, width) activations per layer)
ran several times slower than the same code compiled, where XLA fuses the layers and never
writes most of those activations. The engine therefore asks :func:`program` for a compiled
version of each loop body (one chunk's perturbed evaluations, one chunk's variance-reduced
sums) and calls it for every chunk.

Why per chunk and not the whole call: the engine's loops over chunks and random tiles are
Python loops; traced as one program they unroll (a hundred chunks at N = 320, M = 2048;
thousands of tiles on a large network) and XLA then took 1-3 minutes to compile one call
(measured), and may keep every chunk's temporaries at once. A loop body compiles in about a
second, once, and each chunk's temporaries are freed before the next, as eagerly.

What a program is cached on: the *owner* (the user's model object, held weakly, so a
model's programs go when the model goes), set by the entry point with :func:`programs_of`,
and a hashable *key* (what the body does: the reduction, σ, the sampling), at most
:data:`PROGRAMS_PER_OWNER` keys per owner (least recently used dropped). An owner that
names the function it computes by a hashable ``jax_program_key`` (the built-in MLP: its
architecture) shares its programs with every owner of the same key instead, held in a cache
of :data:`SHARED_PROGRAMS` programs: models built afresh per seed or per experiment then
compile once, not once each. Arrays (parameters,
inputs, directions) are arguments, so a new seed, new parameter values or the next chunk
reuse the program; ``jax.jit`` keeps one compiled version per argument shapes and dtypes,
so new input shapes (or a last, shorter chunk) compile once more. Inside a user's
``jax.jit`` or ``jax.grad`` the programs are called with tracers and inline as usual.
"""

from __future__ import annotations

import inspect
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

__all__ = ["PROGRAMS_PER_OWNER", "SHARED_PROGRAMS", "cached_jit", "program", "programs_of"]

#: compiled programs kept per model (each a different loop body or set of options)
PROGRAMS_PER_OWNER = 8
#: compiled programs kept for models with a ``jax_program_key``, all keys together
SHARED_PROGRAMS = 64

_PROGRAMS: weakref.WeakKeyDictionary[Any, OrderedDict[Hashable, Callable[..., Any]]] = (
    weakref.WeakKeyDictionary()
)
_SHARED: OrderedDict[Hashable, Callable[..., Any]] = OrderedDict()
_LOCK = threading.Lock()  # Dask runs blocks in threads
_OWNER: ContextVar[Any] = ContextVar("nntk_array_program_owner", default=None)


@contextmanager
def programs_of(owner: Any) -> Iterator[None]:
    """Within the block, :func:`program` caches its programs on ``owner`` (the user's model).

    Entry points enter it for JAX arrays only; elsewhere :func:`program` returns ``None``.
    """
    token = _OWNER.set(owner)
    try:
        yield
    finally:
        _OWNER.reset(token)


def program(
    key: Hashable, build: Callable[[Callable[[], Any]], Callable[..., Any]]
) -> Callable[..., Any] | None:
    """The compiled program of ``key`` for the model of the enclosing :func:`programs_of`
    (see :func:`cached_jit`), or ``None`` outside one: the caller then runs eagerly."""
    owner = _OWNER.get()
    return None if owner is None else cached_jit(owner, key, build)


def cached_jit(
    owner: Any, key: Hashable, build: Callable[[Callable[[], Any]], Callable[..., Any]]
) -> Callable[..., Any] | None:
    """``jax.jit(build(get_owner))``, cached per ``owner`` (weakly) and ``key``.

    ``build`` receives a function that returns the owner (from a weak reference: the program
    must not keep its own cache entry alive) and returns the function to compile; apart from
    the owner it must capture only what ``key`` determines. A bound method is cached on its
    instance. Returns ``None`` where the program cannot be cached (an owner that cannot be
    weakly referenced, a key that cannot be hashed): compiling for one call would cost more
    than running it eagerly.
    """
    import jax

    method = inspect.ismethod(owner)
    holder = owner.__self__ if method else owner
    full_key = (owner.__func__ if method else None, key)
    shared = getattr(holder, "jax_program_key", None)
    if shared is not None:  # owners of one key compute the same function: the first serves
        return _cached(
            _SHARED, (shared, full_key), SHARED_PROGRAMS, lambda: jax.jit(build(lambda: owner))
        )
    try:
        ref: Callable[[], Any] = weakref.WeakMethod(owner) if method else weakref.ref(owner)
        with _LOCK:
            programs = _PROGRAMS.setdefault(holder, OrderedDict())
    except TypeError:
        return None

    def get_owner() -> Any:
        target = ref()
        if target is None:
            raise ReferenceError("the model was garbage-collected while being evaluated")
        return target

    return _cached(programs, full_key, PROGRAMS_PER_OWNER, lambda: jax.jit(build(get_owner)))


def _cached(
    cache: OrderedDict[Hashable, Callable[..., Any]],
    key: Hashable,
    limit: int,
    make: Callable[[], Callable[..., Any]],
) -> Callable[..., Any] | None:
    """``cache[key]``, made and stored if missing (at most ``limit`` entries, least recently
    used dropped); ``None`` for a key that cannot be hashed."""
    try:
        with _LOCK:
            found = cache.get(key)
            if found is not None:
                cache.move_to_end(key)
                return found
    except TypeError:
        return None
    compiled = make()
    with _LOCK:
        cache[key] = compiled
        while len(cache) > limit:
            cache.popitem(last=False)
    return compiled
