"""Smoothing forms: how directions become perturbations, which evaluations they need, and
how the differences are weighted.

For a row u_m of the directions a form returns the perturbation h_m = t_m u_m and the weight
w_m that turns the model difference into a gradient row, ĝ = mean_m D_m w_m u_m:

- :class:`Stein` (Gaussian form): h = σu, w = 1/σ, D = f(θ+h) − f(θ);
- :class:`Radial` (paper form): h = σu (Gaussian radial density) or radius σV^{1/P} along
  u/‖u‖ (uniform ball), w = c t/‖h‖², D = f(θ+h) − f(θ);
- :class:`GaussHermite` (directional smoothing): unit directions ξ = u/‖u‖, w = 1,
  D = Σ_q coef_q [f(θ + σ r_q ξ) − f(θ − σ r_q ξ)].

With ``antithetic`` pairs the first two use D = f(θ+h) − f(θ−h) and half the weight.
(docs: Mathematics, 'Nonlocal gradients' and 'Kernel estimators'.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from .._typing import Array
from .directions import Directions

__all__ = [
    "Form",
    "GaussHermite",
    "Perturbed",
    "Radial",
    "Shifted",
    "Stein",
    "gauss_hermite",
    "make_form",
]


class Shifted(Protocol):
    """The model at shifted parameters (:func:`~nntk_array._mc.differences.shifting`)."""

    def __call__(
        self, theta: Array, h: Array | None, scale: float = 1.0, *, spend: bool = False
    ) -> Array:
        """f(θ + scale·h) (B, N, O) for rows h (B, P), f(θ) (1, N, O) for ``h=None``; with
        ``spend`` θ + scale·h may be formed in the place of h."""
        ...


@dataclass
class Perturbed:
    """A block of perturbations scale·h: h (rows, P), t and w (floats or (rows,) arrays)
    with scale·h = t·u, and the squared norms |u|² (rows,) where asked for or needed.

    ``scale`` is 1 unless the form left the scaling to the evaluation, which joins it to the
    shift θ + scale·h (immutable arrays, whose every scaling is a new block)."""

    h: Array
    t: float | Array
    w: float | Array
    u_sq: Array | None
    scale: float = 1.0


class Form:
    """The interface of a smoothing form (see the module docstring)."""

    sigma: float
    #: whether the differences need f(θ) (one extra evaluation in all)
    needs_base: bool
    #: model evaluations per direction
    evaluations: int
    #: full-size copies of a drawn block alive while it is perturbed (the memory plan's count)
    copies: int

    def perturb(self, dirs: Directions, start: int, stop: int, *, norms: bool) -> Perturbed:
        """Rows ``start:stop`` as perturbations; ``norms`` asks for |u|² too."""
        raise NotImplementedError

    def difference(
        self,
        evaluate: Shifted,
        theta: Array,
        h: Array,
        base: Array | None,
        *,
        scale: float = 1.0,
        spend: bool = False,
    ) -> Array:
        """The differences D (B, N, O) for perturbations scale·h (h: (B, P)); with ``spend``
        the form may overwrite h (the caller no longer needs it), sparing a (B, P)
        temporary."""
        raise NotImplementedError


class _FiniteDifference(Form):
    """One-sided differences f(θ+h) − f(θ), or mirrored pairs f(θ+h) − f(θ−h)."""

    antithetic: bool

    @property
    def needs_base(self) -> bool:  # type: ignore[override]
        return not self.antithetic

    @property
    def evaluations(self) -> int:  # type: ignore[override]
        return 2 if self.antithetic else 1

    def difference(
        self,
        evaluate: Shifted,
        theta: Array,
        h: Array,
        base: Array | None,
        *,
        scale: float = 1.0,
        spend: bool = False,
    ) -> Array:
        # f(θ − h) first: a spent h no longer holds h afterwards
        minus = evaluate(theta, h, -scale) if self.antithetic else base
        return evaluate(theta, h, scale, spend=spend) - minus


@dataclass(frozen=True)
class Stein(_FiniteDifference):
    """Gaussian (Stein) form: h = σu, w = 1/σ; mirrored pairs with ``antithetic``."""

    sigma: float
    antithetic: bool = False

    @property
    def copies(self) -> int:  # type: ignore[override]
        return 3 if self.antithetic else 2

    def perturb(self, dirs: Directions, start: int, stop: int, *, norms: bool) -> Perturbed:
        xp = dirs.xp
        h = dirs.rows(start, stop, fresh=True)
        u_sq = xp.sum(h * h, axis=1) if norms else None
        w = 0.5 / self.sigma if self.antithetic else 1.0 / self.sigma
        if not dirs.writeable:  # σ joins the shift θ + σu (one compiled program on JAX)
            return Perturbed(h, self.sigma, w, u_sq, scale=self.sigma)
        h *= self.sigma  # a fresh block: scaled in place, no second full-size temporary
        return Perturbed(h, self.sigma, w, u_sq)


@dataclass(frozen=True)
class Radial(_FiniteDifference):
    """Paper form: c E[(f(θ+h) − f(θ)) h/‖h‖²] with a Gaussian or uniform-ball radius."""

    sigma: float
    scale: float
    ball: bool = False
    antithetic: bool = False
    copies = 3

    def perturb(self, dirs: Directions, start: int, stop: int, *, norms: bool) -> Perturbed:
        xp = dirs.xp
        u = dirs.rows(start, stop)
        sq = xp.sum(u * u, axis=1)
        uniforms = dirs.radial_uniforms(start, stop) if self.ball else None
        if uniforms is None:  # Gaussian radial density, or explicit rows used as given
            t: float | Array = self.sigma
            h = self.sigma * u
            w: float | Array = self.scale / (self.sigma * sq)
        else:  # uniform in the σ-ball: radius σ V^{1/P} along u/|u|
            t = self.sigma * uniforms ** (1.0 / u.shape[1]) / xp.sqrt(sq)
            h = u * t[:, None]
            w = self.scale / (t * sq)
        if self.antithetic:
            w = 0.5 * w
        return Perturbed(h, t, w, sq)


@dataclass(frozen=True)
class GaussHermite(Form):
    """Directional Gaussian smoothing along unit directions with Gauss–Hermite nodes."""

    sigma: float
    nodes: tuple[tuple[float, float], ...]
    needs_base = False
    copies = 3

    @property
    def evaluations(self) -> int:  # type: ignore[override]
        return 2 * len(self.nodes)

    def perturb(self, dirs: Directions, start: int, stop: int, *, norms: bool) -> Perturbed:
        xp = dirs.xp
        u = dirs.rows(start, stop)
        sq = xp.sum(u * u, axis=1)
        t = self.sigma / xp.sqrt(sq)
        return Perturbed(u * t[:, None], t, xp.ones_like(sq), sq)

    def difference(
        self,
        evaluate: Shifted,
        theta: Array,
        h: Array,
        base: Array | None,
        *,
        scale: float = 1.0,
        spend: bool = False,
    ) -> Array:
        d = None
        for radius, coef in self.nodes:
            term = evaluate(theta, h, radius * scale) - evaluate(theta, h, -radius * scale)
            d = coef * term if d is None else d + coef * term
        return d


def gauss_hermite(order: int, sigma: float) -> tuple[tuple[float, float], ...]:
    """Pairs (√2 v_q, √2 w_q v_q / (√π σ)) over the positive Gauss–Hermite nodes v_q.

    D_k f = Σ_q coef_q [f(θ + σ r_q ξ_k) − f(θ − σ r_q ξ_k)] is the directional Gaussian
    smoothing derivative with ``order`` nodes; the node at 0 has no weight.
    """
    v, w = np.polynomial.hermite.hermgauss(order)
    return tuple(
        (math.sqrt(2.0) * float(vq), math.sqrt(2.0) * float(wq * vq) / (math.sqrt(math.pi) * sigma))
        for vq, wq in zip(v, w, strict=True)
        if vq > 0
    )


def make_form(smoothing: Any, estimator_spec: Any, num_params: int) -> Form:
    """The smoothing form for a :class:`~nntk_array.Smoothing` and an
    :class:`~nntk_array.Estimator` spec."""
    if estimator_spec.name == "directional":
        nodes = gauss_hermite(estimator_spec.quadrature, smoothing.sigma)
        return GaussHermite(smoothing.sigma, nodes)
    antithetic = estimator_spec.sampling == "antithetic"
    if smoothing.form == "gaussian":
        return Stein(smoothing.sigma, antithetic)
    c = float(num_params) if smoothing.scale == "gradient-consistent" else 1.0
    return Radial(smoothing.sigma, c, smoothing.radial == "ball", antithetic)
