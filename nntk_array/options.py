"""The options of the Monte Carlo kernels as small validated specs, and their result.

:func:`~nntk_array.nntk` and :func:`~nntk_array.nonlocal_grad` take their many options either
as keywords (``sigma=``, ``form=``, ``estimator="plugin"``, ``memory_budget=``, …) or grouped:

- :class:`Smoothing`: which nonlocal gradient (σ, Gaussian or paper form, radial density,
  scale);
- :class:`Estimator`: how it is estimated (estimator, sampling of the directions, quadrature,
  accumulation dtype);
- :class:`Resources`: how much memory and how many perturbations per model call.

Each spec validates itself when built, so a bad option fails before any work starts, and one
spec can be reused across calls. With ``return_stderr=True`` the functions return an
:class:`Estimate`, which unpacks like the ``(value, stderr)`` tuple of earlier versions.
"""

from __future__ import annotations

import numbers
import operator
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ._typing import Array
from ._validate import check_choice, check_positive_float, check_positive_int

__all__ = [
    "ACCUMULATE",
    "ESTIMATORS",
    "FORMS",
    "PERTURBATIONS",
    "RADIALS",
    "REDUCTIONS",
    "ROUTES",
    "SAMPLINGS",
    "SCALES",
    "Estimate",
    "Estimator",
    "Resources",
    "Smoothing",
]

FORMS = ("gaussian", "paper")
RADIALS = ("gaussian", "ball")
SCALES = ("gradient-consistent", "literal")
SAMPLINGS = ("iid", "antithetic", "orthogonal", "qmc")
ESTIMATORS = ("unbiased", "plugin", "sketch", "directional")
ROUTES = ("auto", "gram", "stream")
ACCUMULATE = ("input", "float64")
REDUCTIONS = ("readout", "units", "jvp")
PERTURBATIONS = ("gaussian", "lowrank")
#: the rank of low-rank weight perturbations when none is given
DEFAULT_RANK = 4


@dataclass(frozen=True)
class Smoothing:
    """Which nonlocal gradient: the perturbation scale and the form of the operator.

    Parameters
    ----------
    sigma : float
        Perturbation scale σ > 0. Gaussian form: h ~ N(0, σ²I). Paper form: the paper's γ
        with ρ_γ ∝ exp(−‖h‖²/γ²) is γ = √2 σ; with ``radial="ball"``, σ is the radius.
    form : {"gaussian", "paper"}
        ``"gaussian"``: Stein form, G f = E[(f(θ+h) − f(θ)) h]/σ², the gradient of f
        smoothed by N(0, σ²I). ``"paper"``: G f = c E[(f(θ+h) − f(θ)) h/‖h‖²].
    radial : {"gaussian", "ball"}
        Radial density of the paper form (the Gaussian form has no other).
    scale : {"gradient-consistent", "literal"}
        Paper form only: c = P (G f → ∇f as σ → 0) or c = 1 (the literal operator, ∇f/P for
        linear f, so the kernel is 1/P² of the consistent one).
    perturbation : {"gaussian", "lowrank"}
        The perturbation family of the Gaussian form. ``"gaussian"`` (default): h ~ N(0, σ²I).
        ``"lowrank"``: every weight matrix W (fan_in × fan_out) the model declares
        (``matrix_blocks``, as :class:`~nntk_array.MLP` does) is perturbed by
        E = (σ/√r) Σ_k a_k b_kᵀ with a_k, b_k ~ N(0, I), every other parameter by σ u,
        u ~ N(0, I): the same covariance σ²I, but the estimate targets the low-rank smoothed
        kernel, which tends to the Gaussian NNTK like 1/r and equals the local NTK for
        affine, quadratic and deep linear f (only :func:`nntk_array.nntk` takes it; docs:
        Options, 'Low-rank perturbations').
    rank : int, optional
        The rank r >= 1 of ``perturbation="lowrank"`` (default 4); only with ``"lowrank"``.

    Raises
    ------
    TypeError
        ``sigma`` is not a real number, ``rank`` not an int.
    ValueError
        ``sigma`` is not finite and > 0, an unknown option, ``radial``/``scale`` set for
        the Gaussian form (where they would mean nothing), ``rank`` < 1 or given without
        ``perturbation="lowrank"``, or ``"lowrank"`` with the paper form.

    Examples
    --------
    >>> import nntk_array as nk
    >>> nk.Smoothing(0.3, form="paper", radial="ball")  # doctest: +NORMALIZE_WHITESPACE
    Smoothing(sigma=0.3, form='paper', radial='ball', scale='gradient-consistent',
              perturbation='gaussian', rank=None)
    >>> nk.Smoothing(0.1, perturbation="lowrank").rank
    4
    """

    sigma: float
    form: str = "gaussian"
    radial: str = "gaussian"
    scale: str = "gradient-consistent"
    perturbation: str = "gaussian"
    rank: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "sigma", check_positive_float("sigma", self.sigma))
        check_choice("form", self.form, FORMS)
        check_choice("radial", self.radial, RADIALS)
        check_choice("scale", self.scale, SCALES)
        check_choice("perturbation", self.perturbation, PERTURBATIONS)
        if self.perturbation == "gaussian":
            if self.rank is not None:
                raise ValueError(
                    f"`rank` applies to perturbation='lowrank' only; got rank={self.rank!r} "
                    "with perturbation='gaussian'"
                )
        else:
            if self.form != "gaussian":
                raise ValueError(
                    "perturbation='lowrank' is a family of the Gaussian (Stein) form; "
                    f"got form={self.form!r}"
                )
            rank = DEFAULT_RANK if self.rank is None else check_positive_int("rank", self.rank)
            object.__setattr__(self, "rank", rank)
        if self.form == "gaussian":
            for name, value, default in (
                ("radial", self.radial, "gaussian"),
                ("scale", self.scale, "gradient-consistent"),
            ):
                if value != default:
                    raise ValueError(
                        f"`{name}` applies to form='paper' only; with form='gaussian' leave it "
                        f"{default!r} (got {value!r})"
                    )


@dataclass(frozen=True)
class Estimator:
    """How the nonlocal gradient or kernel is estimated from perturbations.

    Parameters
    ----------
    name : {"unbiased", "plugin", "sketch", "directional"}
        The kernel estimator (see :func:`nntk_array.nntk`); :func:`nntk_array.nonlocal_grad`
        ignores it.
    sampling : {"iid", "antithetic", "orthogonal", "qmc"}
        How the perturbation directions are drawn.
    quadrature : int, default 5
        Gauss–Hermite nodes of the ``"directional"`` estimator (>= 2).
    accumulate : {"input", "float64"}
        Dtype of differences, Gram and contractions; ``"float64"`` protects float32 inputs
        from cancellation in the U-statistic.
    variance_reduction : "auto", "none", or names from {"readout", "units", "jvp"}
        Exactly unbiased variance reduction of the ``"unbiased"`` kernel estimator (see
        :func:`nntk_array.nntk`): ``"auto"`` applies every one the model supports;
        ``"none"`` is the plain U-statistic. Stored as ``"auto"`` or a sorted tuple.

    Raises
    ------
    ValueError
        An unknown option, ``quadrature < 2``, or ``"units"`` without ``"readout"``.
    TypeError
        ``quadrature`` is not an integer, ``variance_reduction`` not a string or a
        sequence of strings.

    Examples
    --------
    >>> import nntk_array as nk
    >>> nk.Estimator("sketch", sampling="orthogonal").name
    'sketch'
    """

    name: str = "unbiased"
    sampling: str = "iid"
    quadrature: int = 5
    accumulate: str = "input"
    variance_reduction: str | tuple[str, ...] = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "variance_reduction", reductions_spec(self.variance_reduction))
        check_choice("estimator", self.name, ESTIMATORS)
        check_choice("sampling", self.sampling, SAMPLINGS)
        check_choice("accumulate", self.accumulate, ACCUMULATE)
        q = check_positive_int("quadrature", self.quadrature)
        if q < 2:
            raise ValueError(f"`quadrature` must be >= 2; got {q}")
        object.__setattr__(self, "quadrature", q)


@dataclass(frozen=True)
class Resources:
    """How much memory a Monte Carlo call may use and how it batches its model calls.

    Parameters
    ----------
    memory_budget : int, optional
        Bytes for perturbation chunks, model activations and cached random tiles (default
        384 MiB). What grows beyond it is said in each function's docstring.
    samples_per_call : int, optional
        Perturbations per batched model call; by default as many as fit in a quarter of the
        budget.
    route : {"auto", "gram", "stream"}
        How :func:`nntk_array.nntk` contracts: through the M × M Gram of the directions
        (cost ~M²P) or by streaming column blocks of the directions (cost ~N M P).

    Raises
    ------
    TypeError
        A non-integer ``memory_budget`` or ``samples_per_call``.
    ValueError
        A value < 1 or an unknown ``route``.

    Examples
    --------
    >>> import nntk_array as nk
    >>> nk.Resources(memory_budget=64 * 2**20).route
    'auto'
    """

    memory_budget: int | None = None
    samples_per_call: int | None = None
    route: str = "auto"

    def __post_init__(self) -> None:
        if self.memory_budget is not None:
            object.__setattr__(
                self, "memory_budget", check_positive_int("memory_budget", self.memory_budget)
            )
        if self.samples_per_call is not None:
            object.__setattr__(
                self,
                "samples_per_call",
                check_positive_int("samples_per_call", self.samples_per_call),
            )
        check_choice("route", self.route, ROUTES)


class Estimate:
    """A Monte Carlo estimate, its standard error and the number of samples behind it.

    It unpacks like a ``(value, stderr)`` tuple, so ``K, se = nk.nntk(..., return_stderr=True)``
    works as before.

    Parameters
    ----------
    value : array
        The estimate (a kernel or a gradient).
    stderr : array
        Entrywise standard error, same shape.
    samples : int
        The number M of perturbations used.

    Examples
    --------
    >>> import numpy as np
    >>> from nntk_array import Estimate
    >>> est = Estimate(np.ones(2), np.zeros(2), samples=64)
    >>> value, stderr = est
    >>> est.samples, value.shape
    (64, (2,))
    """

    __slots__ = ("samples", "stderr", "value")

    def __init__(self, value: Array, stderr: Array, *, samples: int) -> None:
        self.value, self.stderr, self.samples = value, stderr, samples

    def __iter__(self) -> Iterator[Array]:
        return iter((self.value, self.stderr))

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> Array:
        return (self.value, self.stderr)[index]

    def __repr__(self) -> str:
        shape = tuple(getattr(self.value, "shape", ()))
        return f"Estimate(value shape {shape}, stderr, samples={self.samples})"


def sample_count(samples: object) -> int | None:
    """``samples`` as a count M (any integer, NumPy/array integer scalars included), or
    ``None`` for an explicit (M, P) array.

    Raises
    ------
    TypeError
        Neither an integer nor an array (a float, a bool, a string).
    ValueError
        An integer < 1.
    """
    if hasattr(samples, "shape") and len(samples.shape) != 0:
        return None
    if isinstance(samples, bool):
        raise TypeError("`samples` must be a positive integer or an (M, P) array; got a bool")
    try:  # ints, NumPy integer scalars and 0-d integer arrays of any library
        m = operator.index(samples)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(
            f"`samples` must be a positive integer or an (M, P) array; got {type(samples).__name__}"
        ) from None
    if m < 1:
        raise ValueError(f"`samples` must be >= 1; got {m}")
    return m


def check_seed(seed: object) -> object:
    """``seed`` if it is ``None``, an int >= 0 or (checked later by the RNG seam) a native
    generator; floats, strings and bools are refused here with a ``TypeError``."""
    if seed is None:
        return None
    if isinstance(seed, (bool, float, str, bytes)):
        raise TypeError(
            f"`seed` must be an int or a native generator of the arrays' library; got "
            f"{type(seed).__name__}"
        )
    if isinstance(seed, numbers.Integral) and seed < 0:
        raise ValueError(f"`seed` must be >= 0; got {seed!r}")
    return int(seed) if isinstance(seed, numbers.Integral) else seed


def fixed_seed(seed: object, reason: str) -> int:
    """``seed`` as an int >= 0, for callers that regenerate one perturbation stream many times
    (``reason`` says why a native generator or ``None`` will not do)."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"`seed` must be an int: {reason}; got {type(seed).__name__}")
    check_seed(seed)  # >= 0
    return int(seed)


def renamed(new: str, old: str, new_value: Any, old_value: Any, default: Any = None) -> Any:
    """The value of a renamed keyword: ``old`` still works, with a ``DeprecationWarning``."""
    if old_value is None:
        return new_value
    if new_value is not default and not (isinstance(new_value, float) and new_value == default):
        raise TypeError(f"give `{new}` or its old name `{old}`, not both")
    warnings.warn(
        f"`{old}` is deprecated and will be removed in a future release; use `{new}`",
        DeprecationWarning,
        stacklevel=3,
    )
    return old_value


def grouped(
    name: str, spec: Any, spec_type: type, defaults: dict[str, Any], given: dict[str, Any]
) -> Any:
    """A spec from the grouped argument or from its loose keywords, not a mix of both.

    ``given`` holds the loose keywords as passed, ``defaults`` their default values.
    """
    if spec is None:
        return spec_type(**given)
    if not isinstance(spec, spec_type):
        raise TypeError(f"`{name}` must be an nk.{spec_type.__name__}; got {type(spec).__name__}")
    clash = [k for k, v in given.items() if v is not defaults[k] and v != defaults[k]]
    if clash:
        raise TypeError(f"give `{name}` or the keywords {', '.join(map(repr, clash))}, not both")
    return spec


def smoothing_spec(
    smoothing: Any,
    sigma: Any,
    form: str,
    radial: str,
    scale: str,
    perturbation: str = "gaussian",
    rank: Any = None,
) -> Smoothing:
    """The :class:`Smoothing` of a call, from the spec or from its loose keywords."""
    if smoothing is None and sigma is None:
        raise TypeError("`sigma` is required (or pass `smoothing=nk.Smoothing(sigma, ...)`)")
    defaults = {
        "sigma": None,
        "form": "gaussian",
        "radial": "gaussian",
        "scale": "gradient-consistent",
        "perturbation": "gaussian",
        "rank": None,
    }
    given = {
        "sigma": sigma,
        "form": form,
        "radial": radial,
        "scale": scale,
        "perturbation": perturbation,
        "rank": rank,
    }
    spec: Smoothing = grouped("smoothing", smoothing, Smoothing, defaults, given)
    return spec


def estimator_spec(
    estimator: str | Estimator,
    sampling: str,
    quadrature: int,
    accumulate: str,
    variance_reduction: Any = "auto",
) -> Estimator:
    """The :class:`Estimator` of a call: a spec, or a name and the loose keywords."""
    given: dict[str, Any] = {
        "sampling": sampling,
        "quadrature": quadrature,
        "accumulate": accumulate,
        "variance_reduction": variance_reduction,
    }
    if not isinstance(estimator, Estimator):
        return Estimator(estimator, **given)
    defaults = {
        "sampling": "iid",
        "quadrature": 5,
        "accumulate": "input",
        "variance_reduction": "auto",
    }
    spec: Estimator = grouped("estimator", estimator, Estimator, defaults, given)
    return spec


def reductions_spec(value: object) -> str | tuple[str, ...]:
    """``"auto"``, or the requested variance reductions as a sorted tuple (``"none"``: ())."""
    if value == "auto":
        return "auto"
    if value == "none":
        return ()
    names = (value,) if isinstance(value, str) else value
    if not isinstance(names, (tuple, list, set, frozenset)) or not all(
        isinstance(n, str) for n in names
    ):
        raise TypeError(
            "`variance_reduction` must be 'auto', 'none', a name or a sequence of names from "
            f"{REDUCTIONS}; got {value!r}"
        )
    for n in names:
        check_choice("variance_reduction", n, REDUCTIONS)
    if "units" in names and "readout" not in names:
        raise ValueError(
            "`variance_reduction` 'units' (per-unit sums given the readout) needs 'readout'"
        )
    return tuple(sorted(set(names)))


def resources_spec(
    resources: Any, memory_budget: Any, samples_per_call: Any, route: str
) -> Resources:
    """The :class:`Resources` of a call, from the spec or from its loose keywords."""
    defaults = {"memory_budget": None, "samples_per_call": None, "route": "auto"}
    given = {"memory_budget": memory_budget, "samples_per_call": samples_per_call, "route": route}
    spec: Resources = grouped("resources", resources, Resources, defaults, given)
    return spec
