"""What the scikit-learn and GPyTorch kernels share: a model's kernel with its options fixed.

A :class:`KernelFn` is :func:`nntk_array.ntk` or :func:`nntk_array.nntk` with the model, its
parameters and every option bound, validated when it is built. The NNTK's seed must be an
int: a kernel object is evaluated many times (K(X, X) to fit, K(X*, X) and the diagonal to
predict), and only a fixed seed gives every call the same perturbations, hence blocks of one
kernel.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .._typing import Array
from .._validate import check_ndim
from .._xp import resolve
from ..local_ntk import ntk
from ..nonlocal_ntk import nntk
from ..options import (
    Estimator,
    Resources,
    Smoothing,
    estimator_spec,
    fixed_seed,
    resources_spec,
    sample_count,
    smoothing_spec,
)

__all__ = ["DIAG_ROWS", "KernelFn", "local_kernel", "nonlocal_kernel"]

#: rows per block of a diagonal: blocks of 256 × 256 kernel entries, never N × N
DIAG_ROWS = 256


@dataclass(frozen=True)
class KernelFn:
    """``nk.ntk`` (``options`` None) or ``nk.nntk(**options)`` of ``model`` at ``params``."""

    model: Any
    params: Array
    options: dict[str, Any] | None

    def __call__(self, x1: Array, x2: Array | None = None) -> Array:
        """The kernel (N1, N2) in the parameters' library, dtype and device."""
        if self.options is None:
            return ntk(self.model, self.params, x1, x2)
        k: Array = nntk(self.model, self.params, x1, x2, **self.options)
        return k

    def diagonal_blocks(self, x: Array) -> Iterator[Array]:
        """K(x_b, x_b) for consecutive blocks x_b of :data:`DIAG_ROWS` rows: their diagonals
        are the kernel's diagonal, at memory N·DIAG_ROWS instead of N²."""
        for start in range(0, x.shape[0], DIAG_ROWS):
            yield self(x[start : start + DIAG_ROWS, ...])


def _check_model(model: Any, params: Any) -> None:
    """``model`` is a model or a callable and ``params`` a real floating (P,) array of its
    length: checked here so that a bad kernel fails when built, not inside a solver."""
    if not (hasattr(model, "num_params") and hasattr(model, "apply")) and not callable(model):
        raise TypeError(
            "`model` must be a model (num_params and apply(thetas, x), e.g. nk.MLP or "
            f"nk.from_torch(module)) or a callable f(thetas, x); got {type(model).__name__}"
        )
    _, (params,) = resolve(params=params)
    check_ndim("params", params, (1,), "(P,)")
    p = getattr(model, "num_params", None)
    if p is not None and params.shape[0] != int(p):
        raise ValueError(
            f"`params` must have shape ({int(p)},) for this model; got {tuple(params.shape)}"
        )


def local_kernel(model: Any, params: Array) -> KernelFn:
    """The exact local NTK of ``model`` at ``params``, checked."""
    _check_model(model, params)
    return KernelFn(model, params, None)


def nonlocal_kernel(
    model: Any,
    params: Array,
    *,
    sigma: float | None,
    samples: int | Array,
    seed: object,
    estimator: str | Estimator,
    smoothing: Smoothing | None,
    resources: Resources | None,
) -> KernelFn:
    """The NNTK of ``model`` at ``params`` with these options (as in :func:`nk.nntk`),
    checked, with an int ``seed`` so that every call draws the same perturbations."""
    _check_model(model, params)
    seed = fixed_seed(
        seed,
        "every evaluation of the kernel (K(X, X), K(X*, X), the diagonal) must draw the same "
        "perturbations",
    )
    sample_count(samples)  # an int >= 1 or an (M, P) array; nk.nntk checks the array
    options = {
        "smoothing": smoothing_spec(
            smoothing, sigma, "gaussian", "gaussian", "gradient-consistent"
        ),
        "estimator": estimator_spec(estimator, "iid", 5, "input"),
        "resources": resources_spec(resources, None, None, "auto"),
        "samples": samples,
        "seed": seed,
    }
    return KernelFn(model, params, options)
