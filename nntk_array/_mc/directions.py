"""Perturbation directions u_m (the rows of U, shape (M, P)), produced in blocks on demand.

A Monte Carlo kernel needs every row of U twice: once to perturb the model and once for the
Gram matrix G = U Uᵀ. Storing U costs M·P numbers (2.3 GB at M = 1024, P = 559,105), so rows
are regenerated instead: random numbers come in fixed tiles of ``ROW_TILE`` x ``COL_TILE``,
each from its own counter-derived stream (:meth:`Generator.spawn`), so any block of rows or
of columns can be rebuilt exactly and the numbers do not depend on chunk sizes or memory
budgets. Tiles drawn for the perturbed evaluations are kept while a byte budget allows, so
small problems draw each number once; a model that perturbs layer by layer reads U once by
columns instead (:class:`Sweep`), and the Gram is summed from the same blocks.

Samplers (``sampling=``):

``"iid"``, ``"antithetic"``
    Independent standard normal rows (antithetic pairs are formed by the estimator).
``"orthogonal"``
    Rows orthogonal within groups of at most P rows (QR of a Gaussian block, each row
    rescaled to the χ_P norm of its Gaussian pre-image, so every row is still N(0, I)).
``"qmc"``
    A randomly shifted rank-1 lattice per group, mapped through Φ⁻¹: every row is N(0, I),
    rows within a group are jointly stratified.

Rows of one group are dependent; rows of different groups are independent. The unbiased
kernel estimator pairs only rows from different groups (docs: Mathematics, 'Kernel
estimators').
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

from array_api_compat import array_namespace, is_writeable_array
from array_api_compat import device as array_device

from .._special import ndtri
from .._typing import Array, Device, DType, Namespace
from ..backends.inplace import writeable
from ..backends.linalg import gram
from ..backends.random import Generator, draw_parallel

__all__ = [
    "COL_TILE",
    "ROW_TILE",
    "SAMPLINGS",
    "Directions",
    "Sweep",
    "check_explicit",
    "make_directions",
]

SAMPLINGS = ("iid", "antithetic", "orthogonal", "qmc")
ROW_TILE = 32
COL_TILE = 8192
# First element of every stream path, so the streams of different uses never coincide.
_TILES, _RADII, _GROUPS, _LATTICE = range(4)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


class Directions:
    """The rows u_1..u_M of U, available as row blocks and (for some samplers) column blocks.

    Attributes
    ----------
    num_rows, num_params : int
        M and P.
    group_size : int
        Rows ``[g * group_size, (g + 1) * group_size)`` form group g; 1 means independent rows.
    has_columns : bool
        Whether :meth:`columns` is available (needed by the column-streaming Gram route).
    """

    def __init__(
        self, xp: Namespace, num_rows: int, num_params: int, dtype: DType, device: Device
    ) -> None:
        self.xp, self.dtype, self.device = xp, dtype, device
        self.num_rows, self.num_params = num_rows, num_params
        self.group_size = 1
        self.has_columns = True
        #: rows can be had in any number (not only whole tiles) without a copy of a tile's
        #: height: explicit rows, and generated ones held whole
        self.any_rows = False
        #: the library's arrays can be filled in place (blocks are then drawn into buffers)
        self.writeable = writeable(xp, device)
        self._gen: Generator

    def rows(self, start: int, stop: int, *, fresh: bool = False) -> Array:
        """Rows ``start:stop`` of U, shape (stop - start, P).

        With ``fresh`` the caller may update the array in place: it is new, or a buffer of
        the directions that the next ``fresh`` call overwrites (use it before asking again).
        """
        raise NotImplementedError

    def columns(self, start: int, stop: int, *, out: Array | None = None) -> Array:
        """Columns ``start:stop`` of U for all M rows, shape (M, stop - start).

        The result may be a buffer that the next call overwrites: use it before asking again.
        With ``out`` (an array of that shape the library can write, such as a view into a
        larger buffer) the columns are written there and ``out`` is returned.
        """
        raise NotImplementedError

    def held(self) -> Array | None:
        """All of U, (M, P), when it is in memory anyway (explicit rows, or generated rows
        that fit the cache), else ``None``."""
        return None

    def column_blocks(
        self, start: int, stop: int, max_rows: int, rows: tuple[int, int] | None = None
    ) -> Iterator[tuple[int, int, Array]]:
        """``(r0, r1, U[r0:r1, start:stop])`` over the rows ``rows`` (default all), about
        ``max_rows`` at a time, so that a column pass needs memory independent of M."""
        lo, hi = rows or (0, self.num_rows)
        for r0 in range(lo, hi, max_rows):
            r1 = min(r0 + max_rows, hi)
            yield r0, r1, self.columns(start, stop)[r0:r1, :]

    def sweep(self, acc: DType) -> Sweep:
        """U read once from its first column to its last (:class:`Sweep`), its Gram in
        ``acc`` summed on the way."""
        return Sweep(self, acc)

    def radial_uniforms(self, start: int, stop: int) -> Array | None:
        """One U(0, 1) number per row (radii of uniform-ball perturbations); ``None`` if the
        rows are user-given (they are then used as the perturbations themselves)."""
        xp, gen = self.xp, self._gen
        r0, r1 = start // ROW_TILE, _ceil_div(stop, ROW_TILE)
        parts = [
            gen.spawn(_RADII, i).uniform(
                (min(ROW_TILE, self.num_rows - i * ROW_TILE),), dtype=self.dtype
            )
            for i in range(r0, r1)
        ]
        block = parts[0] if len(parts) == 1 else xp.concat(parts)
        lo = start - r0 * ROW_TILE
        return block[lo : lo + stop - start]

    @property
    def groups(self) -> list[tuple[int, int]]:
        """``(start, stop)`` of every group of dependent rows."""
        g, m = self.group_size, self.num_rows
        return [(s, min(s + g, m)) for s in range(0, m, g)]


class Sweep:
    """Columns of U given in consecutive blocks from 0 to P, for a model that perturbs layer
    by layer (``apply_by_columns``): tiles are drawn straight into the block that first
    reaches them and the columns of a tile that a block leaves over are kept for the next,
    so each number is drawn once however the blocks fall across tiles; the Gram G = U Uᵀ is
    summed from the blocks as they pass.

    Call it as ``sweep(start, stop)`` with ``start`` where the last block stopped; the block
    is valid until the next call. :attr:`gram` is complete once :attr:`done`. Memory: one
    buffer of the widest block and two tile columns, and a tile column of leftovers.
    """

    def __init__(self, dirs: Directions, acc: DType) -> None:
        self._dirs, self._acc = dirs, acc
        self.position = 0  # the first column not given yet
        self._left: Array | None = None  # columns [position, drawn): drawn, not given yet
        self._buffer: Array | None = None  # reused: fresh blocks would cost page faults
        self.gram: Array | None = None

    @property
    def done(self) -> bool:
        """Whether every column has been given."""
        return self.position == self._dirs.num_params

    def __call__(self, start: int, stop: int) -> Array:
        dirs = self._dirs
        xp, p, m = dirs.xp, dirs.num_params, dirs.num_rows
        if start != self.position or not start < stop <= p:
            raise ValueError(
                f"the model must read the directions' columns in consecutive blocks from 0 to "
                f"P = {p}: asked for {start}:{stop} after column {self.position}"
            )
        left = self._left
        have = 0 if left is None else left.shape[1]
        if stop <= start + have:  # inside the tiles the last block drew
            assert left is not None
            held = left
        else:
            drawn, end = start + have, min(_ceil_div(stop, COL_TILE) * COL_TILE, p)
            if not dirs.writeable:  # immutable arrays: joined, not filled
                new = dirs.columns(drawn, end)
                held = new if left is None else xp.concat([left, new], axis=1)
            else:
                if self._buffer is None or self._buffer.shape[1] < end - start:
                    # freed first; room for a tile column more: blocks of one size fall
                    # differently across tiles
                    self._buffer = None
                    width = end - start + COL_TILE
                    self._buffer = xp.empty((m, width), dtype=dirs.dtype, device=dirs.device)
                held = self._buffer[:, : end - start]
                if left is not None:
                    held[:, :have] = left
                dirs.columns(drawn, end, out=held[:, have:])
        block = held[:, : stop - start]
        # what is left of the last tile column outlives the buffer's next use: a copy
        rest = held[:, stop - start :]
        self._left = None if rest.shape[1] == 0 else xp.asarray(rest, copy=True)
        part = gram(xp, xp.astype(block, self._acc, copy=False))
        self.gram = part if self.gram is None else self.gram + part
        self.position = stop
        return block


class _Explicit(Directions):
    """User-given rows: the estimate is a deterministic function of them."""

    def __init__(self, samples: Array) -> None:
        super().__init__(
            array_namespace(samples),
            samples.shape[0],
            samples.shape[1],
            samples.dtype,
            array_device(samples),
        )
        self._u = samples
        self.any_rows = True

    def rows(self, start: int, stop: int, *, fresh: bool = False) -> Array:
        block = self._u[start:stop, :]
        return self.xp.asarray(block, copy=True) if fresh else block

    def columns(self, start: int, stop: int, *, out: Array | None = None) -> Array:
        if out is None:
            return self._u[:, start:stop]
        out[...] = self._u[:, start:stop]
        return out

    def held(self) -> Array | None:
        return self._u

    def column_blocks(
        self, start: int, stop: int, max_rows: int, rows: tuple[int, int] | None = None
    ) -> Iterator[tuple[int, int, Array]]:
        lo, hi = rows or (0, self.num_rows)
        for r0 in range(lo, hi, max_rows):
            r1 = min(r0 + max_rows, hi)
            yield r0, r1, self._u[r0:r1, start:stop]

    def radial_uniforms(self, start: int, stop: int) -> Array | None:
        return None


class _Tiled(Directions):
    """Base of generated directions: tiles (i, j) of ROW_TILE x COL_TILE from spawned streams."""

    def __init__(
        self,
        gen: Generator,
        num_rows: int,
        num_params: int,
        dtype: DType,
        cache_bytes: int,
    ) -> None:
        super().__init__(gen.xp, num_rows, num_params, dtype, gen.device)
        self._gen = gen
        self._cache: dict[tuple[int, int], Array] = {}
        self._cache_left = cache_bytes
        self._itemsize = 4 if dtype == gen.xp.float32 else 8
        self._columns: Array | None = None
        self._rows: Array | None = None
        # all of U fits the cache: held whole, drawn at the first use (one array, the tiles
        # drawn straight into it), rows and columns are views of it
        self._whole: Array | None = None
        self.any_rows = num_rows * num_params * self._itemsize <= cache_bytes

    def _tile_shape(self, i: int, j: int) -> tuple[int, int]:
        rows = min(ROW_TILE, self.num_rows - i * ROW_TILE)
        cols = min(COL_TILE, self.num_params - j * COL_TILE)
        return rows, cols

    def _draw(self, i: int, j: int, out: Array | None = None) -> Array:
        """Tile (i, j), written into ``out`` (a view of its shape) when given."""
        raise NotImplementedError

    def _draw_grid(self, rows: range, cols: range, shape: tuple[int, int]) -> Array | None:
        """Tiles ``rows`` × ``cols`` drawn as one block of ``shape`` where the generator can
        (JAX), else ``None``."""
        return None

    def _block(self, rows: range, cols: range, *, keep: bool, out: Array | None = None) -> Array:
        """Tiles ``rows`` × ``cols`` as one array: tiles cached earlier are copied in, the
        others drawn in parallel (straight into the block where the library can write into
        arrays, so no tile-sized temporaries or concatenations); with ``keep`` new tiles are
        cached while the byte budget allows. ``out`` is a buffer of the block's shape to fill.
        """
        xp = self.xp
        keys = [(i, j) for i in rows for j in cols]
        height = sum(self._tile_shape(i, cols[0])[0] for i in rows)
        width = sum(self._tile_shape(rows[0], j)[1] for j in cols)
        if not self.writeable:
            if not keep and not any(k in self._cache for k in keys):
                block = self._draw_grid(rows, cols, (height, width))
                if block is not None:
                    return block
            return _grid(xp, self._tiles(keys, keep=keep), len(rows), len(cols))
        if out is None or tuple(out.shape) != (height, width):
            out = xp.empty((height, width), dtype=self.dtype, device=self.device)
        draws, fresh = [], []
        for i, j in keys:
            r0, c0 = (i - rows[0]) * ROW_TILE, (j - cols[0]) * COL_TILE
            h, w = self._tile_shape(i, j)
            view = out[r0 : r0 + h, c0 : c0 + w]
            if (i, j) in self._cache:
                view[...] = self._cache[i, j]
            else:
                draws.append(_bind(self._draw, i, j, view))
                fresh.append(((i, j), view))
        draw_parallel(draws, xp=xp, device=self.device)
        if keep:
            self._keep(fresh, copy=True)
        return out

    def _keep(self, tiles: list[tuple[tuple[int, int], Array]], *, copy: bool) -> None:
        """Cache new tiles (copies of them with ``copy``) while the byte budget allows."""
        for k, t in tiles:
            size = math.prod(t.shape) * self._itemsize
            if size > self._cache_left:
                break
            self._cache[k] = self.xp.asarray(t, copy=True) if copy else t
            self._cache_left -= size

    def _tiles(self, keys: list[tuple[int, int]], *, keep: bool) -> list[Array]:
        missing = [k for k in keys if k not in self._cache]
        drawn = draw_parallel(
            [_bind(self._draw, i, j) for i, j in missing], xp=self.xp, device=self.device
        )
        fresh = dict(zip(missing, drawn, strict=True))
        if keep:
            self._keep(list(fresh.items()), copy=False)
        return [self._cache[k] if k in self._cache else fresh[k] for k in keys]

    def _all(self) -> Array | None:
        """U whole, when it is held whole (drawn at the first call)."""
        if self.any_rows and self._whole is None:
            ni, nj = _ceil_div(self.num_rows, ROW_TILE), _ceil_div(self.num_params, COL_TILE)
            self._whole = self._block(range(ni), range(nj), keep=False)
        return self._whole

    def rows(self, start: int, stop: int, *, fresh: bool = False) -> Array:
        xp = self.xp
        whole = self._all()
        if whole is not None:
            # a fresh block is one its caller may overwrite: no copy where arrays are immutable
            copy = fresh and is_writeable_array(whole)
            return xp.asarray(whole[start:stop, :], copy=True) if copy else whole[start:stop, :]
        i0, i1 = start // ROW_TILE, _ceil_div(stop, ROW_TILE)
        nj = _ceil_div(self.num_params, COL_TILE)
        if i1 - i0 == 1 and nj == 1 and (i0, 0) in self._cache and not fresh:
            block = self._cache[i0, 0]
        elif fresh:  # one buffer for every drawn block: fresh blocks cost page faults
            block = self._rows = self._block(range(i0, i1), range(nj), keep=True, out=self._rows)
        else:
            block = self._block(range(i0, i1), range(nj), keep=True)
        lo = start - i0 * ROW_TILE
        if lo == 0 and block.shape[0] == stop - start:
            return block
        block = block[lo : lo + stop - start, :]
        return xp.asarray(block, copy=True) if fresh else block

    def held(self) -> Array | None:
        return self._all()

    def column_blocks(
        self, start: int, stop: int, max_rows: int, rows: tuple[int, int] | None = None
    ) -> Iterator[tuple[int, int, Array]]:
        r_lo, r_hi = rows or (0, self.num_rows)
        whole = self._all()
        if whole is not None:
            for r0 in range(r_lo, r_hi, max_rows):
                r1 = min(r0 + max_rows, r_hi)
                yield r0, r1, whole[r0:r1, start:stop]
            return
        j0, j1 = start // COL_TILE, _ceil_div(stop, COL_TILE)
        step = max(1, max_rows // ROW_TILE)
        lo = start - j0 * COL_TILE
        buffer = None
        for i0 in range(r_lo // ROW_TILE, _ceil_div(r_hi, ROW_TILE), step):
            i1 = min(i0 + step, _ceil_div(r_hi, ROW_TILE))
            # each block is consumed before the next is drawn: one buffer serves them all
            block = buffer = self._block(range(i0, i1), range(j0, j1), keep=False, out=buffer)
            r0, r1 = max(r_lo, i0 * ROW_TILE), min(r_hi, i1 * ROW_TILE)
            if r0 != i0 * ROW_TILE or r1 - r0 != block.shape[0]:  # rows cut inside a tile
                block = block[r0 - i0 * ROW_TILE : r1 - i0 * ROW_TILE, :]
            if lo != 0 or block.shape[1] != stop - start:
                block = block[:, lo : lo + stop - start]
            yield r0, r1, block

    def columns(self, start: int, stop: int, *, out: Array | None = None) -> Array:
        whole = self._all()
        if whole is not None:
            if out is None:
                return whole[:, start:stop]
            out[...] = whole[:, start:stop]
            return out
        j0, j1 = start // COL_TILE, _ceil_div(stop, COL_TILE)
        ni = _ceil_div(self.num_rows, ROW_TILE)
        if (
            out is not None
            and start == j0 * COL_TILE
            and stop == min(j1 * COL_TILE, self.num_params)
        ):
            return self._block(range(ni), range(j0, j1), keep=False, out=out)  # whole tiles
        # the previous call's block is reused: callers consume a column block before asking
        # for the next (the Gram route), and a fresh M × COL_TILE block per call costs page
        # faults on every tile
        block = self._columns = self._block(range(ni), range(j0, j1), keep=False, out=self._columns)
        if out is not None:
            out[...] = block[:, start - j0 * COL_TILE : stop - j0 * COL_TILE]
            return out
        lo = start - j0 * COL_TILE
        if lo == 0 and block.shape[1] == stop - start:
            return block
        return block[:, lo : lo + stop - start]


def _prime_at_least(n: int) -> int:
    q = max(n, 2)
    while any(q % d == 0 for d in range(2, math.isqrt(q) + 1)):
        q += 1
    return q


def _bind(
    fn: Callable[..., Array], i: int, j: int, out: Array | None = None
) -> Callable[[], Array]:
    return lambda: fn(i, j, out)


def _grid(xp: Namespace, tiles: list[Array], n_rows: int, n_cols: int) -> Array:
    """Assemble a row-major list of tiles into one array."""
    if n_cols == 1:
        return tiles[0] if n_rows == 1 else xp.concat(tiles, axis=0)
    rows = [xp.concat(tiles[r * n_cols : (r + 1) * n_cols], axis=1) for r in range(n_rows)]
    return rows[0] if n_rows == 1 else xp.concat(rows, axis=0)


class _Gaussian(_Tiled):
    """Independent standard normal rows."""

    def _draw(self, i: int, j: int, out: Array | None = None) -> Array:
        return self._gen.spawn_normal(
            (_TILES, i, j), self._tile_shape(i, j), dtype=self.dtype, out=out
        )

    def _draw_grid(self, rows: range, cols: range, shape: tuple[int, int]) -> Array | None:
        return self._gen.spawn_normal_grid(
            _TILES, rows, cols, shape, (ROW_TILE, COL_TILE), dtype=self.dtype
        )


class _Lattice(_Tiled):
    """Randomly shifted rank-1 lattice rules, one per group, mapped to N(0, I) rows.

    Row k of group g (n rows) is Φ⁻¹(frac(k z / q + Δ)), q the smallest prime >= n, with a
    generating vector z drawn uniformly from {1, ..., q-1} and a shift Δ ~ U[0, 1)^P, both per
    group and column tile.
    The shift makes every row exactly N(0, I); the lattice stratifies the group jointly.
    """

    def __init__(
        self,
        gen: Generator,
        num_rows: int,
        num_params: int,
        dtype: DType,
        group_size: int,
        cache_bytes: int,
    ) -> None:
        super().__init__(gen, num_rows, num_params, dtype, cache_bytes)
        self.group_size = group_size

    def _draw(self, i: int, j: int, out: Array | None = None) -> Array:
        tile = self._lattice(i, j)
        if out is None:
            return tile
        out[...] = tile
        return out

    def _lattice(self, i: int, j: int) -> Array:
        xp = self.xp
        dev = self.device
        rows, cols = self._tile_shape(i, j)
        first = i * ROW_TILE
        parts = []
        for g in range(first // self.group_size, (first + rows - 1) // self.group_size + 1):
            g0 = g * self.group_size
            n = min(self.group_size, self.num_rows - g0)
            lo, hi = max(first, g0), min(first + rows, g0 + n)
            params = self._gen.spawn(_LATTICE, g, j).uniform((2, cols), dtype=self.dtype)
            shift = params[0:1, :]
            q = _prime_at_least(n)  # every z in 1..q-1 is a unit mod q: n distinct levels
            ints = xp.__array_namespace_info__().default_dtypes(device=dev)["integral"]
            z = xp.astype(xp.floor(params[1:2, :] * (q - 1)), ints) + 1
            k = xp.reshape(xp.arange(lo - g0, hi - g0, dtype=ints, device=dev), (-1, 1))
            x = xp.astype((k * z) % q, self.dtype) / q + shift
            x = x - xp.floor(x)
            tiny = 2.0 ** (-24 if self.dtype == xp.float32 else -53)
            parts.append(ndtri(xp, xp.clip(x, tiny, 1.0 - tiny)))
        return parts[0] if len(parts) == 1 else xp.concat(parts, axis=0)


class _Orthogonal(Directions):
    """Rows orthogonal within each group (group size <= P), each marginally N(0, I)."""

    def __init__(
        self, gen: Generator, num_rows: int, num_params: int, dtype: DType, group_size: int
    ) -> None:
        super().__init__(gen.xp, num_rows, num_params, dtype, gen.device)
        if not hasattr(gen.xp, "linalg"):
            raise TypeError(
                f"sampling='orthogonal' needs the linalg extension (QR), which "
                f"{gen.xp.__name__} lacks; use sampling='iid' or 'qmc'"
            )
        self._gen = gen
        self.group_size = group_size
        self.has_columns = False
        self._last: tuple[int, Array] | None = None

    def _group(self, g: int) -> Array:
        if self._last is not None and self._last[0] == g:
            return self._last[1]
        xp = self.xp
        start, stop = self.groups[g]
        z = self._gen.spawn(_GROUPS, g).normal((stop - start, self.num_params), dtype=self.dtype)
        q, r = xp.linalg.qr(xp.permute_dims(z, (1, 0)))  # (P, n), (n, n)
        # Sign-fixing makes Q Haar distributed; the χ_P norm of each Gaussian row restores a
        # N(0, I) marginal, independent of the direction.
        signs = xp.sign(xp.linalg.diagonal(r))
        norms = xp.sqrt(xp.sum(z * z, axis=1))
        rows = xp.permute_dims(q, (1, 0)) * (signs * norms)[:, None]
        self._last = (g, rows)
        return rows

    def rows(self, start: int, stop: int, *, fresh: bool = False) -> Array:
        xp = self.xp
        parts = []
        for g, (g0, g1) in enumerate(self.groups):
            lo, hi = max(start, g0), min(stop, g1)
            if lo < hi:
                parts.append(self._group(g)[lo - g0 : hi - g0, :])
        if len(parts) > 1:
            return xp.concat(parts, axis=0)
        return xp.asarray(parts[0], copy=True) if fresh else parts[0]


def check_explicit(samples: Array, num_params: int, sampling: str, seed: object) -> None:
    """Raise ``ValueError`` unless explicit directions are an (M, P) array used as given:
    iid or antithetic sampling, and no seed."""
    if samples.ndim != 2 or samples.shape[1] != num_params or samples.shape[0] < 1:
        raise ValueError(
            f"`samples` must have shape (M, {num_params}) with M >= 1; got {tuple(samples.shape)}"
        )
    if sampling not in ("iid", "antithetic"):
        raise ValueError(
            "explicit `samples` are used as given: `sampling` must be 'iid' or 'antithetic'"
        )
    if seed is not None:
        raise ValueError("explicit `samples` need no `seed`")


def make_directions(
    xp: Namespace,
    samples: int | Array,
    sampling: str,
    seed: object,
    *,
    num_params: int,
    dtype: DType,
    device: Device,
    group_size: int,
    cache_bytes: int,
) -> Directions:
    """The directions of a Monte Carlo estimate: explicit (M, P) rows used as given, or the
    sampler ``sampling`` (one of :data:`SAMPLINGS`) drawing ``samples`` rows from ``seed`` (an
    int, a native generator or ``None``) in groups of ``group_size`` dependent rows."""
    if not isinstance(samples, int):
        return _Explicit(samples)
    gen = Generator(seed, xp=xp, device=device)
    if sampling in ("iid", "antithetic"):
        return _Gaussian(gen, samples, num_params, dtype, cache_bytes)
    if sampling == "qmc":
        return _Lattice(gen, samples, num_params, dtype, group_size, cache_bytes)
    return _Orthogonal(gen, samples, num_params, dtype, group_size)
