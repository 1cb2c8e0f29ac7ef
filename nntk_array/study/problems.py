"""The regression problems of the study: non-smooth targets on 1-D and 2-D inputs.

Every target is an array-API function of inputs (N, d) to values (N,), with the distance of
each input to the set where the target jumps or kinks (for the band error). Inputs are drawn
once per problem on the host (uniform grids in 1-D, uniform random points in 2-D, NumPy seed
``DATA_SEED``) and moved to the study's library: the seeds of the study vary the networks and
the perturbations, not the data (a choice of ours).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .._typing import Array, Namespace

__all__ = ["DATA_SEED", "TARGETS", "Problem", "Target", "make_problems"]

DATA_SEED = 20250101
SAWTOOTH_PERIODS = 2  # periods on [-1, 1]: jumps at ±0.25 and ±0.75


@dataclass(frozen=True)
class Target:
    """A target function and the distance of inputs to its non-smooth set.

    ``fn(xp, x)`` and ``distance(xp, x)`` map inputs (N, d) to (N,); ``formula`` is how the
    report names it.
    """

    name: str
    dim: int
    formula: str
    fn: Callable[[Namespace, Array], Array]
    distance: Callable[[Namespace, Array], Array]


def _sawtooth(xp: Namespace, x: Array) -> Array:
    k = SAWTOOTH_PERIODS
    return 2.0 * (k * x[:, 0] - xp.floor(k * x[:, 0] + 0.5))


def _to_points(points: tuple[float, ...]) -> Callable[[Namespace, Array], Array]:
    def distance(xp: Namespace, x: Array) -> Array:
        gaps = [xp.abs(x[:, 0] - p) for p in points]
        out = gaps[0]
        for g in gaps[1:]:
            out = xp.minimum(out, g)
        return out

    return distance


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("sign", 1, "sign(x)", lambda xp, x: xp.sign(x[:, 0]), _to_points((0.0,))),
        Target(
            "sawtooth",
            1,
            f"2(kx - floor(kx + 1/2)), k = {SAWTOOTH_PERIODS}",
            _sawtooth,
            _to_points((-0.75, -0.25, 0.25, 0.75)),
        ),
        Target("relu", 1, "max(x, 0)", lambda xp, x: xp.maximum(x[:, 0], 0.0), _to_points((0.0,))),
        Target(
            "quadrants",
            2,
            "sign(x1 x2) on [-1, 1]^2",
            lambda xp, x: xp.sign(x[:, 0] * x[:, 1]),
            lambda xp, x: xp.minimum(xp.abs(x[:, 0]), xp.abs(x[:, 1])),
        ),
    )
}


@dataclass(frozen=True)
class Problem:
    """One input design: training and test inputs (N, d) in the study's library, and the
    targets defined on them."""

    dim: int
    x_train: Array
    x_test: Array
    targets: tuple[Target, ...]

    @property
    def x_all(self) -> Array:
        """Training inputs, then test inputs: the kernels are estimated on both at once."""
        from array_api_compat import array_namespace

        xp = array_namespace(self.x_train)
        return xp.concat([self.x_train, self.x_test], axis=0)


def make_problems(
    xp: Namespace, *, n_train: int, n_test: int, dtype: object, device: object = None
) -> tuple[Problem, ...]:
    """The study's input designs: a 1-D grid for the 1-D targets and a 2-D sample.

    1-D: ``n_train`` and ``n_test`` points on uniform grids of [-1, 1] (the test grid offset
    by half a step where the sizes allow, so no test point repeats a training point). 2-D:
    ``n_train`` and ``n_test`` uniform random points of [-1, 1]² (NumPy seed ``DATA_SEED``).

    Parameters
    ----------
    xp : namespace
    n_train, n_test : int
    dtype : dtype of ``xp``
    device : device, optional

    Returns
    -------
    tuple of Problem

    Examples
    --------
    >>> import numpy as np
    >>> one, two = make_problems(np, n_train=8, n_test=16, dtype=np.float64)
    >>> one.x_train.shape, two.x_test.shape, [t.name for t in two.targets]
    ((8, 1), (16, 2), ['quadrants'])
    """
    rng = np.random.default_rng(DATA_SEED)
    step = 2.0 / n_test
    grid_test = np.linspace(-1.0 + step / 2, 1.0 - step / 2, n_test)
    designs = {
        1: (np.linspace(-1.0, 1.0, n_train)[:, None], grid_test[:, None]),
        2: (rng.uniform(-1.0, 1.0, (n_train, 2)), rng.uniform(-1.0, 1.0, (n_test, 2))),
    }
    problems = []
    for dim, (x_tr, x_te) in designs.items():
        targets = tuple(t for t in TARGETS.values() if t.dim == dim)
        problems.append(
            Problem(
                dim,
                xp.asarray(x_tr, dtype=dtype, device=device),
                xp.asarray(x_te, dtype=dtype, device=device),
                targets,
            )
        )
    return tuple(problems)
