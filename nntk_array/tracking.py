"""Kernel tracking: the NTK or NNTK at parameter checkpoints of a training run.

How far a network's kernel moves during training says how well the kernel regime (fixed
kernel, linearized dynamics) describes it. For the Monte Carlo NNTK the change K_t − K_0 is
a difference of two estimates; with independent perturbations its variance is the sum of
both estimates' variances and can swamp a small change. Common random numbers fix that:
every checkpoint is evaluated with the same perturbation stream (one integer seed), so the
Monte Carlo errors of nearby checkpoints are strongly correlated and cancel in the
difference.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from array_api_compat import device, is_array_api_obj

from ._typing import Array, Namespace
from ._validate import check_choice
from ._xp import resolve
from .local_ntk import ntk
from .metrics import kernel_alignment
from .models.protocol import Model
from .nonlocal_ntk import nntk
from .options import fixed_seed

__all__ = ["KernelTrack", "track_kernel"]

KINDS = ("ntk", "nntk")


@dataclass(frozen=True)
class KernelTrack:
    """Kernels along a training run and how they changed.

    Parameters
    ----------
    relative_change : array, shape (T,)
        ‖K_t − K_0‖_F / ‖K_0‖_F per checkpoint (0 at the first); 0 where K_0 = 0.
    alignment : array of shape (T,), or None
        Centred kernel-target alignment :func:`nntk_array.kernel_alignment` of each K_t
        with the targets ``y``; ``None`` when no targets were given.
    kernels : tuple of T arrays of shape (N, N), or None
        The kernels, or ``None`` with ``keep_kernels=False``.
    seed : int or None
        The perturbation seed every NNTK checkpoint used (drawn once when none was given);
        ``None`` for the NTK.

    Examples
    --------
    >>> import numpy as np
    >>> import nntk_array as nk
    >>> model = nk.MLP(1, (16,))
    >>> theta = model.init(0, xp=np)
    >>> x = np.linspace(-1.0, 1.0, 4)[:, None]
    >>> track = nk.track_kernel(model, [theta, theta], x)
    >>> track.relative_change
    array([0., 0.])
    >>> track.seed is None
    True
    """

    relative_change: Array
    alignment: Array | None
    kernels: tuple[Array, ...] | None
    seed: int | None


def track_kernel(
    f: Model | Callable[[Array, Array], Array],
    thetas: Sequence[Array] | Array,
    x: Array,
    *,
    kind: str = "ntk",
    y: Array | None = None,
    sigma: float | None = None,
    samples: int | Array | None = None,
    seed: Any = None,
    keep_kernels: bool = True,
    **options: Any,
) -> KernelTrack:
    """The NTK or NNTK of ``f`` on inputs ``x`` at each checkpoint, with common random numbers.

    For ``kind="nntk"`` every checkpoint uses the same perturbation stream: the same integer
    ``seed`` (or the same explicit ``samples``) regenerates the same directions, so the
    Monte Carlo errors of nearby checkpoints are nearly equal and cancel in K_t − K_0. With
    independent streams the change's variance would be the sum of two estimates' variances.

    Parameters
    ----------
    f : model or callable
        As in :func:`nntk_array.ntk` (``kind="ntk"``) or :func:`nntk_array.nntk`.
    thetas : sequence of arrays of shape (P,), or array of shape (T, P)
        The checkpoints, first one the reference K_0.
    x : array, shape (N, ...)
        Inputs; the kernels are (N, N).
    kind : {"ntk", "nntk"}
    y : array of shape (N,), optional
        Targets: with them each kernel's alignment with ``y`` is reported.
    sigma, samples : optional
        The NNTK's perturbation scale and number of perturbations (or explicit (M, P)
        directions); required for ``kind="nntk"``, refused for ``"ntk"``.
    seed : int, optional
        The one perturbation seed of all NNTK checkpoints; drawn once when omitted (and
        reported in the result). A native generator would advance from one checkpoint to the
        next and break the common random numbers, so only integers are taken.
    keep_kernels : bool, default True
        Return every kernel; with ``False`` only K_0 and the current kernel are held, and
        only the summaries come back.
    **options
        Further keywords of :func:`nntk_array.nntk` or :func:`nntk_array.ntk` (estimator,
        sampling, memory budget, ...); not ``return_stderr``.

    Returns
    -------
    KernelTrack
        ``relative_change`` (T,), ``alignment`` (T,) or None, ``kernels`` or None, ``seed``.

    Raises
    ------
    TypeError
        Checkpoints or targets of different libraries or non-floating dtypes, a non-integer
        ``seed``, a non-bool ``keep_kernels``; those of the kernel function.
    ValueError
        No checkpoints, checkpoints of different shapes or not 1-D, an unknown ``kind``,
        ``sigma``/``samples``/``seed`` with ``kind="ntk"`` or missing with ``"nntk"``,
        ``return_stderr``; those of the kernel function (checked at the first checkpoint).

    Examples
    --------
    >>> import numpy as np
    >>> import nntk_array as nk
    >>> model = nk.MLP(1, (16,), activation="sign")
    >>> theta = model.init(0, xp=np)
    >>> x = np.linspace(-1, 1, 6)[:, None]
    >>> track = nk.track_kernel(
    ...     model, [theta, theta, theta + 0.05], x, kind="nntk", sigma=0.3, samples=64, seed=0
    ... )
    >>> [round(float(c), 3) for c in track.relative_change[:2]]   # one stream: no noise
    [0.0, 0.0]
    >>> bool(track.relative_change[2] > 0)
    True
    """
    check_choice("kind", kind, KINDS)
    if not isinstance(keep_kernels, bool):
        raise TypeError(f"`keep_kernels` must be a bool; got {type(keep_kernels).__name__}")
    if "return_stderr" in options:
        raise ValueError("`return_stderr` is not tracked: call nk.nntk at a checkpoint for it")
    xp, checkpoints = _checkpoints(thetas, y, x)
    if kind == "ntk":
        for name, value in (("sigma", sigma), ("samples", samples), ("seed", seed)):
            if value is not None:
                raise ValueError(f"`{name}` is for kind='nntk' only")

        def kernel(theta: Array) -> Array:
            return ntk(f, theta, x, **options)
    else:
        if sigma is None and "smoothing" not in options:
            raise ValueError("kind='nntk' needs `sigma` (or a `smoothing` spec)")
        if samples is None:
            raise ValueError("kind='nntk' needs `samples`")
        seed = fixed_seed(
            secrets.randbits(62) if seed is None else seed,
            "common random numbers need a stream that every checkpoint regenerates",
        )

        def kernel(theta: Array) -> Array:
            return nntk(f, theta, x, sigma=sigma, samples=samples, seed=seed, **options)

    first = kernel(checkpoints[0])
    first_norm = xp.sqrt(xp.sum(first * first))
    safe_norm = xp.where(first_norm > 0, first_norm, 1.0)
    kept = [first]
    changes = [xp.zeros((), dtype=first.dtype, device=device(first))]
    alignments = [] if y is None else [kernel_alignment(first, y)]
    for theta in checkpoints[1:]:
        current = kernel(theta)
        diff = current - first
        changes.append(xp.where(first_norm > 0, xp.sqrt(xp.sum(diff * diff)) / safe_norm, 0.0))
        if y is not None:
            alignments.append(kernel_alignment(current, y))
        if keep_kernels:
            kept.append(current)
    return KernelTrack(
        relative_change=xp.stack(changes),
        alignment=None if y is None else xp.stack(alignments),
        kernels=tuple(kept) if keep_kernels else None,
        seed=seed if kind == "nntk" else None,
    )


def _checkpoints(thetas: Any, y: Array | None, x: Array) -> tuple[Namespace, list[Array]]:
    """The namespace and the checkpoints as a list of (P,) arrays of one library and shape;
    the targets checked against the inputs."""
    if is_array_api_obj(thetas):
        if thetas.ndim != 2:
            raise ValueError(
                f"`thetas` must be a sequence of (P,) arrays or a (T, P) array; got shape "
                f"{tuple(thetas.shape)}"
            )
        checkpoints = [thetas[i, :] for i in range(thetas.shape[0])]
    elif isinstance(thetas, Sequence):
        checkpoints = list(thetas)
    else:
        raise TypeError(
            f"`thetas` must be a sequence of (P,) arrays or a (T, P) array; got "
            f"{type(thetas).__name__}"
        )
    if not checkpoints:
        raise ValueError("`thetas` must hold at least one checkpoint")
    xp, _ = resolve(**{f"thetas[{i}]": t for i, t in enumerate(checkpoints)}, y=y)
    shape = tuple(checkpoints[0].shape)
    for i, theta in enumerate(checkpoints):
        if theta.ndim != 1 or tuple(theta.shape) != shape:
            raise ValueError(
                f"`thetas[{i}]` must have the shape {shape} of `thetas[0]` (P,); got "
                f"{tuple(theta.shape)}"
            )
    n = x.shape[0]
    if y is not None and (y.ndim != 1 or y.shape[0] != n):
        raise ValueError(f"`y` must have shape ({n},) to match `x`; got {tuple(y.shape)}")
    return xp, checkpoints
