"""Random numbers on the input's device and dtype, from each library's native generator.

The array API standard has no random module. :class:`Generator` wraps NumPy's
``Generator``, a ``torch.Generator`` on the target device, ``cupy.random`` or a JAX key that
is split per draw. Libraries without a generator of their own (array-api-strict and any other
standard library) draw with NumPy on the host and transfer; that is the only route that
touches the host, and it is taken only for host libraries.

Streams are reproducible within one library and device (same seed, same numbers), not across
libraries: to reproduce one estimate exactly on another backend, pass explicit samples. JAX
draws use threefry without its partitionable layout, whatever ``jax_threefry_partitionable``
says (see :func:`_jax_threefry`).

:meth:`Generator.spawn` derives independent child streams from a path of integers (a
counter-based scheme: ``SeedSequence`` spawn keys, or ``jax.random.fold_in``), so a block of
random numbers can be regenerated on demand instead of stored.
"""

from __future__ import annotations

import functools
import math
import numbers
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from array_api_compat import (
    is_cupy_namespace,
    is_jax_namespace,
    is_numpy_namespace,
    is_torch_namespace,
)

from .._typing import Array, Device, DType, Namespace, SeedLike

__all__ = ["Generator", "draw_parallel"]


def _seed_value(seed: object) -> int | None:
    """The int seed to use, or ``None`` when ``seed`` should be a native generator."""
    if seed is None:
        return int(np.random.SeedSequence().generate_state(1, dtype=np.uint64)[0] >> 1)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        return None
    if seed < 0:
        raise ValueError(f"`seed` must be >= 0; got {seed!r}")
    return int(seed)


class Generator:
    """A random generator bound to one array namespace, device and library stream.

    Parameters
    ----------
    seed : int, native generator or None
        An ``int`` >= 0 seeds the library's own generator; ``None`` draws fresh entropy.
        A native generator is used as is: ``numpy.random.Generator`` (NumPy and
        array-api-strict), ``torch.Generator`` (torch; must be on ``device``, index
        included), a JAX key
        (``jax.random.key`` or ``PRNGKey``), ``cupy.random.Generator`` (CuPy).
    xp : namespace
        The array namespace of the arrays to produce.
    device : device, optional
        Where draws land; the library's default device when ``None``.

    Raises
    ------
    TypeError
        ``seed`` is neither an int nor a generator of ``xp``'s library.
    ValueError
        ``seed`` is a negative int; a ``torch.Generator`` on another device than ``device``.
    """

    def __init__(self, seed: SeedLike, *, xp: Namespace, device: Device = None) -> None:
        self.xp = xp
        self.device = device
        value = _seed_value(seed)
        if is_jax_namespace(xp):
            self._kind = "jax"
            self._state = self._jax_key(seed, value)
            self._root = self._state
        elif is_torch_namespace(xp):
            self._kind = "torch"
            self._state = self._torch_generator(seed, value, device)
        elif is_cupy_namespace(xp):
            self._kind = "cupy"
            self._state = self._cupy_generator(seed, value)
        else:
            self._kind = "host"
            if value is not None:
                # SFC64: the fastest of NumPy's bit generators for bulk normal draws
                self._state = np.random.Generator(np.random.SFC64(value))
            elif isinstance(seed, np.random.Generator):
                self._state = seed
            else:
                raise TypeError(
                    f"`seed` must be an int or a numpy.random.Generator for "
                    f"{xp.__name__}; got {type(seed).__name__}"
                )
        # Children of a native generator descend from one number drawn from it.
        self._entropy = value

    def spawn(self, *path: int) -> Generator:
        """An independent child stream, the same for the same seed and ``path``.

        The parent's own stream is not advanced (except once, on first use, for a native
        non-JAX generator, from which one entropy number is drawn).
        """
        if self._kind == "jax":
            import jax

            key = self._root
            with _jax_threefry():
                for i in path:
                    key = jax.random.fold_in(key, i)
            return Generator(key, xp=self.xp, device=self.device)
        if self._entropy is None:
            self._entropy = self._draw_entropy()
        state = np.random.SeedSequence(self._entropy, spawn_key=path).generate_state(
            1, dtype=np.uint64
        )
        return Generator(int(state[0] >> 1), xp=self.xp, device=self.device)

    def spawn_normal(
        self,
        path: tuple[int, ...],
        shape: tuple[int, ...],
        *,
        dtype: DType,
        out: Array | None = None,
    ) -> Array:
        """``spawn(*path).normal(shape, dtype=dtype, out=out)``, the same numbers; on JAX one
        compiled program per shape instead of a dispatch per fold-in, split and draw (the
        random tiles of a kernel are many such draws)."""
        if self._kind != "jax":
            return self.spawn(*path).normal(shape, dtype=dtype, out=out)
        import jax.numpy as jnp

        with _jax_threefry():
            drawn = _jax_spawn_normal()(
                self._root, jnp.asarray(path, dtype=jnp.uint32), shape, dtype
            )
        if self.device is not None:
            import jax

            drawn = jax.device_put(drawn, self.device)
        return drawn

    def spawn_normal_grid(
        self,
        prefix: int,
        rows: range,
        cols: range,
        shape: tuple[int, int],
        tile: tuple[int, int],
        *,
        dtype: DType,
    ) -> Array | None:
        """The tiles ``spawn_normal((prefix, i, j), ...)`` for i in ``rows``, j in ``cols``
        joined into one block of ``shape``, tiles of ``tile`` (those of the last row and
        column may be smaller): on JAX one compiled program per block shape, instead of a
        dispatch per tile and the tiles' concatenation; ``None`` on other libraries (they
        draw tiles straight into a buffer)."""
        if self._kind != "jax":
            return None
        import jax
        import jax.numpy as jnp

        with _jax_threefry():
            drawn = _jax_normal_grid()(
                self._root,
                jnp.asarray([prefix, rows.start, cols.start], dtype=jnp.uint32),
                (len(rows), len(cols)),
                shape,
                tile,
                dtype,
            )
        return drawn if self.device is None else jax.device_put(drawn, self.device)

    def _draw_entropy(self) -> int:
        if self._kind == "torch":
            import torch

            g = self._state
            return int(torch.randint(0, 2**62, (1,), generator=g, device=g.device).item())
        if self._kind == "cupy":
            return int(self._state.integers(0, 2**62, size=1).item())
        return int(self._state.integers(0, 2**62))

    @staticmethod
    def _bad(seed: object, lib: str, native: str) -> TypeError:
        return TypeError(
            f"`seed` must be an int or a {native} for {lib}; got {type(seed).__name__}"
        )

    def _jax_key(self, seed: object, value: int | None) -> Array:
        import jax

        if value is not None:
            return jax.random.key(value)
        if isinstance(seed, jax.Array) and (
            jax.numpy.issubdtype(seed.dtype, jax.dtypes.prng_key) or seed.shape == (2,)
        ):
            return seed
        raise self._bad(seed, "JAX", "JAX PRNG key")

    @staticmethod
    def _torch_generator(seed: object, value: int | None, device: Device) -> object:
        import torch

        dev = torch.device("cpu" if device is None else device)
        if value is not None:
            return torch.Generator(device=dev).manual_seed(value)
        if isinstance(seed, torch.Generator):
            # The full device, index included: torch draws on the generator's device, so a
            # generator on cuda:1 for arrays on cuda:0 would fail later, far from the cause.
            if not _same_device(seed.device, dev):
                raise ValueError(
                    f"`rng` (or `seed`) is a torch.Generator on {_full_device(seed.device)} but "
                    f"the arrays are on {_full_device(dev)}; create the generator on the arrays' "
                    "device: torch.Generator(device=...)"
                )
            return seed
        raise Generator._bad(seed, "torch", "torch.Generator")

    @staticmethod
    def _cupy_generator(seed: object, value: int | None) -> object:
        import cupy

        if value is not None:
            return cupy.random.default_rng(value)
        if isinstance(seed, cupy.random.Generator):
            return seed
        raise Generator._bad(seed, "CuPy", "cupy.random.Generator")

    def normal(self, shape: tuple[int, ...], *, dtype: DType, out: Array | None = None) -> Array:
        """Standard normal draws of ``shape`` in ``dtype`` on the generator's device.

        With ``out`` (an array of ``shape`` and ``dtype`` that the library can write, such as
        a view into a larger block) the numbers are written there and ``out`` is returned:
        the same numbers as without it, without a temporary of the draw's size where the
        library can fill the view directly (NumPy and torch, contiguous views).
        """
        if out is None or self._kind in ("jax", "cupy") or not _fills(self.xp):
            drawn = self._draw("normal", shape, dtype)
            if out is None:
                return drawn
            out[...] = drawn
            return out
        if self._kind == "torch":
            import torch

            g = self._state
            target = out if out.is_contiguous() else _scratch(shape, dtype, out.device)
            torch.randn(shape, generator=g, dtype=dtype, device=g.device, out=target)
        else:
            target = out if out.flags.c_contiguous else _scratch(shape, dtype, None)
            self._state.standard_normal(out=target, dtype=dtype)
        if target is not out:
            out[...] = target
        return out

    def uniform(self, shape: tuple[int, ...], *, dtype: DType) -> Array:
        """Uniform draws on [0, 1) of ``shape`` in ``dtype`` on the generator's device."""
        return self._draw("uniform", shape, dtype)

    def _draw(self, dist: str, shape: tuple[int, ...], dtype: DType) -> Array:
        xp, dev = self.xp, self.device
        if self._kind == "jax":
            import jax

            draw = jax.random.normal if dist == "normal" else jax.random.uniform
            with _jax_threefry():  # the split too: it draws bits
                self._state, key = jax.random.split(self._state)
                out = draw(key, shape, dtype=dtype)
            return out if dev is None else jax.device_put(out, dev)
        if self._kind == "torch":
            import torch

            sample = torch.randn if dist == "normal" else torch.rand
            g = self._state
            return sample(shape, generator=g, dtype=dtype, device=g.device)
        if self._kind == "cupy":
            import cupy

            g = self._state
            with cupy.cuda.Device(getattr(dev, "id", dev)):
                if dist == "normal":
                    return g.standard_normal(shape, dtype=dtype)
                return g.random(shape, dtype=dtype)
        rng = self._state
        if is_numpy_namespace(xp):
            if dist == "normal":
                return rng.standard_normal(shape, dtype=dtype)
            return rng.random(shape, dtype=dtype)
        host = rng.standard_normal(shape) if dist == "normal" else rng.random(shape)
        return xp.asarray(host, dtype=dtype, device=dev)


def _jax_threefry() -> Any:
    """The context of every JAX draw: threefry without its partitionable layout (JAX's
    default since 0.5), which only matters for arrays sharded over several devices and draws
    at about 1.6x the cost on a CPU (18 million float32 normals: 0.15 s against 0.27 s on
    this project's 2 cores); read when a draw is traced, so it holds under ``jax.jit`` too."""
    import jax

    return jax.threefry_partitionable(False)


def _jax_path_normal(
    root: Array, path: Sequence[Array], shape: tuple[int, ...], dtype: DType
) -> Array:
    """What ``spawn(*path).normal(shape)`` draws on JAX (the fold-ins, the draw's split, the
    draw), for the compiled draws, so that they give the same numbers."""
    import jax

    key = root
    for i in path:
        key = jax.random.fold_in(key, i)
    return jax.random.normal(jax.random.split(key)[1], shape, dtype=dtype)


@functools.cache
def _jax_spawn_normal() -> Callable[..., Array]:
    """The jitted fold-ins, split and normal draw of :meth:`Generator.spawn_normal`."""
    import jax

    def draw(root: Array, path: Array, shape: tuple[int, ...], dtype: DType) -> Array:
        return _jax_path_normal(root, [path[k] for k in range(path.shape[0])], shape, dtype)

    compiled: Callable[..., Array] = jax.jit(draw, static_argnums=(2, 3))
    return compiled


@functools.cache
def _jax_normal_grid() -> Callable[..., Array]:
    """The compiled block of tiles of :meth:`Generator.spawn_normal_grid`: the tiles of full
    size drawn together (``vmap`` over their indices draws the numbers each would alone),
    the shorter last row and column of tiles likewise, and the parts joined in the program."""
    import jax
    import jax.numpy as jnp

    def draw(
        root: Array,
        start: Array,
        grid: tuple[int, int],
        shape: tuple[int, int],
        tile: tuple[int, int],
        dtype: DType,
    ) -> Array:
        (n_i, n_j), (height, width), (th, tw) = grid, shape, tile
        prefix, i0, j0 = start[0], start[1], start[2]

        def one(i: Array, j: Array, size: tuple[int, int]) -> Array:
            return _jax_path_normal(root, (prefix, i, j), size, dtype)

        last_h, last_w = height - (n_i - 1) * th, width - (n_j - 1) * tw
        full_i = n_i if last_h == th else n_i - 1  # rows of tiles of full height
        full_j = n_j if last_w == tw else n_j - 1
        i = i0 + jnp.arange(n_i, dtype=jnp.uint32)
        j = j0 + jnp.arange(n_j, dtype=jnp.uint32)

        def band(ii: Array, h: int) -> Array:  # one row of tiles per ii, (len(ii)·h, width)
            parts = []
            if full_j:
                t = jax.vmap(jax.vmap(lambda a, b: one(a, b, (h, tw)), (None, 0)), (0, None))(
                    ii, j[:full_j]
                )  # (rows, full_j, h, tw)
                parts.append(jnp.reshape(jnp.transpose(t, (0, 2, 1, 3)), (-1, full_j * tw)))
            if full_j < n_j:
                t = jax.vmap(lambda a: one(a, j[-1], (h, last_w)))(ii)
                parts.append(jnp.reshape(t, (-1, last_w)))
            return parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=1)

        bands = []
        if full_i:
            bands.append(band(i[:full_i], th))
        if full_i < n_i:
            bands.append(band(i[-1:], last_h))
        return bands[0] if len(bands) == 1 else jnp.concatenate(bands, axis=0)

    compiled: Callable[..., Array] = jax.jit(draw, static_argnums=(2, 3, 4, 5))
    return compiled


def _fills(xp: Namespace) -> bool:
    """Whether the generator can write into arrays of ``xp`` (NumPy and torch)."""
    return bool(is_numpy_namespace(xp) or is_torch_namespace(xp))


_local = threading.local()


def _scratch(shape: tuple[int, ...], dtype: DType, dev: Device) -> Array:
    """A contiguous array of ``shape`` over a reusable buffer (one per thread, dtype and
    device, grown to the largest draw): draws into non-contiguous views go through it, since
    fresh blocks of this size cost page faults on every draw."""
    buffers = _local.__dict__.setdefault("buffers", {})
    key, size = (str(dtype), str(dev)), math.prod(shape)
    if key not in buffers or buffers[key].shape[0] < size:
        if dev is None:
            buffers[key] = np.empty(size, dtype=dtype)
        else:
            import torch

            buffers[key] = torch.empty(size, dtype=dtype, device=dev)
    return buffers[key][:size].reshape(shape)


def _full_device(dev: Device) -> object:
    """A ``torch.device`` with its index resolved: ``"cuda"`` means the current CUDA device.

    A device without an index is the library's current one of its type (torch allocates there),
    so ``"cuda"`` and ``"cuda:0"`` are one device while device 0 is current. The CPU is one
    device whatever its index (``"cpu"``, ``"cpu:0"``).
    """
    import torch

    dev = torch.device(dev)
    if dev.type == "cpu":
        return torch.device("cpu")
    if dev.index is not None:
        return dev
    module = getattr(torch, dev.type, None)
    is_available = getattr(module, "is_available", None)
    current = getattr(module, "current_device", None)
    # Without the accelerator no array can be there either; index 0 is its only candidate.
    index = int(current()) if callable(is_available) and is_available() and callable(current) else 0
    return torch.device(dev.type, index)


def _same_device(a: Device, b: Device) -> bool:
    """Whether two torch devices (objects or strings) are the same device, index included."""
    return bool(_full_device(a) == _full_device(b))


def draw_parallel(
    draws: Sequence[Callable[[], Array]], *, xp: Namespace, device: Device = None
) -> list[Array]:
    """Run independent draws, on all CPU cores for host libraries.

    NumPy and torch release the GIL while filling arrays, so separate generators fill separate
    blocks concurrently; random numbers are a large share of a Monte Carlo kernel's cost on
    the CPU. Device libraries (CuPy, CUDA torch, JAX) are asynchronous already: sequential.
    """
    workers = min(len(draws), os.cpu_count() or 1)
    if workers < 2 or not host_draws(xp, device):
        return [d() for d in draws]
    return list(_pool(workers).map(lambda d: d(), draws))


def host_draws(xp: Namespace, device: Device = None) -> bool:
    """Whether ``xp`` draws on ``device`` synchronously on the CPU (NumPy, array-api-strict,
    CPU torch), where a random number costs hundreds of multiply-adds; JAX, CuPy and CUDA
    torch queue their draws."""
    if is_jax_namespace(xp) or is_cupy_namespace(xp):
        return False
    if is_torch_namespace(xp):
        import torch

        return bool(torch.device("cpu" if device is None else device).type == "cpu")
    return True


_pools: dict[int, ThreadPoolExecutor] = {}
# a forked child inherits the pools but not their threads: it starts its own
os.register_at_fork(after_in_child=_pools.clear)


def _pool(workers: int) -> ThreadPoolExecutor:
    """One long-lived pool per size: its threads keep their scratch buffers between calls."""
    if workers not in _pools:
        _pools[workers] = ThreadPoolExecutor(workers, thread_name_prefix="nntk-draw")
    return _pools[workers]
