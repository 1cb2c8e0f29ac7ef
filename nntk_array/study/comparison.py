"""The kernel comparison: four networks, their kernels, every target, every seed.

For each seed s, input design and network (initialized with seed s), the kernels are
computed once on the training and test inputs together, then every target of the design is
fitted with hyperparameters chosen by cross-validation (:mod:`.protocol`):

ReLU net and sign net (``nk.MLP``)
    the local NTK, the infinite-width NTK (for sign: neural-tangents' convention, derivative
    term 0), the Monte Carlo NNTK and the infinite-width NNTK (σ for both chosen by CV);
quantized ReLU net (:class:`.QuantizedMLP`)
    the local NTK (identically zero) and the Monte Carlo NNTK;
noisy ReLU net (:class:`.NoisyMLP`)
    the local NTK of one noisy forward pass and the Monte Carlo NNTK.

Monte Carlo NNTKs are estimated to a requested precision: ``nk.nntk(..., rtol=rtol,
error="centred", max_samples=...)`` with perturbation seed 1000 + s (the same directions for
every σ of a seed); the achieved bound and M are recorded per estimate.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from array_api_compat import array_namespace, device

from .. import analytic
from .._typing import Array, Namespace
from ..local_ntk import ntk
from ..metrics import band_error, kernel_alignment
from ..models import MLP
from ..nonlocal_ntk import nntk
from ..options import Estimate
from ..testing import to_numpy
from .models import NoisyMLP, QuantizedMLP
from .problems import Problem
from .protocol import cross_validate, fit, folds, select

__all__ = [
    "LOCAL",
    "NNTK_INF",
    "NNTK_MC",
    "NTK_INF",
    "Candidate",
    "Network",
    "compare_seed",
    "networks",
]

LOCAL = "local NTK"
NTK_INF = "NTK, infinite width"
NNTK_MC = "NNTK (Monte Carlo)"
NNTK_INF = "NNTK, infinite width"
PERTURBATION_SEED = 1000
NOISE_SEED = 3000


@dataclass(frozen=True)
class Network:
    """A network of the study: ``build(d, s)`` makes it for input dimension d and seed s;
    ``activation`` names its infinite-width closed forms (``None``: none); ``sigmas`` is its
    σ grid."""

    name: str
    build: Callable[[int, int], Any]
    activation: str | None
    sigmas: tuple[float, ...]

    @property
    def kernels(self) -> tuple[str, ...]:
        """The kernel labels of this network, the local NTK first.

        Examples
        --------
        >>> Network("n", lambda d, s: None, None, (0.3,)).kernels
        ('local NTK', 'NNTK (Monte Carlo)')
        """
        if self.activation is None:
            return (LOCAL, NNTK_MC)
        return (LOCAL, NTK_INF, NNTK_MC, NNTK_INF)


def networks(
    *,
    width: int,
    sigmas: tuple[float, ...],
    costly_sigmas: tuple[float, ...],
    quant_step: float,
    noise: float,
) -> tuple[Network, ...]:
    """The study's four networks (one hidden layer of ``width`` units each).

    Parameters
    ----------
    width : int
    sigmas : tuple of float
        σ grid of the ReLU and sign nets.
    costly_sigmas : tuple of float
        σ grid of the quantized and noisy nets (their estimators have no exact readout
        treatment, or noise of their own: each σ costs more).
    quant_step : float
        Grid spacing of the quantized net.
    noise : float
        Pre-activation noise scale τ of the noisy net.

    Returns
    -------
    tuple of Network

    Examples
    --------
    >>> [n.name for n in networks(width=8, sigmas=(0.3,), costly_sigmas=(0.3,),
    ...                           quant_step=0.5, noise=0.5)]
    ['ReLU net', 'sign net', 'quantized ReLU net', 'noisy ReLU net']
    """
    return (
        Network("ReLU net", lambda d, s: MLP(d, (width,), 1, "relu"), "relu", sigmas),
        Network("sign net", lambda d, s: MLP(d, (width,), 1, "sign"), "sign", sigmas),
        Network(
            "quantized ReLU net",
            lambda d, s: QuantizedMLP(d, (width,), step=quant_step),
            None,
            costly_sigmas,
        ),
        Network(
            "noisy ReLU net",
            lambda d, s: NoisyMLP(d, width, noise=noise, seed=NOISE_SEED + s),
            None,
            costly_sigmas,
        ),
    )


@dataclass(frozen=True)
class Candidate:
    """One kernel on all inputs (train rows first) with its σ (``None`` if it has none) and,
    for a Monte Carlo estimate, its M and achieved centred error bound."""

    kernel: Array
    sigma: float | None
    samples: int | None = None
    error_bound: float | None = None


def _error_bound(xp: Namespace, value: Array, stderr: Array) -> float:
    """‖se‖_F / ‖C K C‖_F, the ``error="centred"`` measure of :func:`nntk_array.nntk`."""
    c = value - xp.mean(value, axis=0, keepdims=True)
    c = c - xp.mean(c, axis=1, keepdims=True)
    return math.sqrt(float(xp.sum(stderr * stderr)) / float(xp.sum(c * c)))


def _kernels(
    net: Network, model: Any, theta: Array, x: Array, seed: int, *, rtol: float, max_samples: int
) -> dict[str, list[Candidate]]:
    xp = array_namespace(theta, x)
    out: dict[str, list[Candidate]] = {LOCAL: [Candidate(ntk(model, theta, x), None)]}
    if net.activation is not None:
        out[NTK_INF] = [Candidate(analytic.ntk(x, activation=net.activation), None)]
    mc = []
    for sigma in net.sigmas:
        with warnings.catch_warnings():  # the cap is part of the protocol: recorded, not warned
            warnings.filterwarnings("ignore", message=".*max_samples=", category=RuntimeWarning)
            est = nntk(
                model,
                theta,
                x,
                sigma=sigma,
                seed=PERTURBATION_SEED + seed,
                rtol=rtol,
                error="centred",
                max_samples=max_samples,
            )
        assert isinstance(est, Estimate)
        bound = _error_bound(xp, est.value, est.stderr)
        mc.append(Candidate(est.value, sigma, int(est.samples), bound))
    out[NNTK_MC] = mc
    if net.activation is not None:
        out[NNTK_INF] = [
            Candidate(analytic.ntk(x, activation=net.activation, sigma=s), s) for s in net.sigmas
        ]
    return out


def compare_seed(
    seed: int,
    problem: Problem,
    nets: tuple[Network, ...],
    *,
    config: Any,
    advance: Callable[[str], None],
) -> tuple[list[dict[str, Any]], dict[tuple[str, str], list[Candidate]], dict[str, Any]]:
    """Run one seed on one input design.

    Parameters
    ----------
    seed : int
    problem : Problem
    nets : tuple of Network
    config : StudyConfig
    advance : callable
        Called with a label after each network's kernels.

    Returns
    -------
    records : list of dict
        One per (target, network, kernel): test errors, choices, Monte Carlo precision.
    candidates : dict
        The kernels per (network, kernel label).
    fits : dict
        Test predictions per (target, network, kernel) of the ridge fit (host arrays).

    Examples
    --------
    >>> import numpy as np
    >>> from dataclasses import replace
    >>> from nntk_array.study import StudyConfig
    >>> from nntk_array.study.problems import make_problems
    >>> cfg = replace(StudyConfig.quick(), max_samples=256)
    >>> one, _ = make_problems(np, n_train=9, n_test=8, dtype=np.float64)
    >>> nets = networks(width=8, sigmas=(0.3,), costly_sigmas=(1.0,), quant_step=0.5,
    ...                 noise=0.5)
    >>> records, kernels, fits = compare_seed(0, one, nets, config=cfg,
    ...                                       advance=lambda label: None)
    >>> len(records), kernels[("ReLU net", NNTK_MC)][0].kernel.shape
    (36, (17, 17))
    """
    x_tr, x_te = problem.x_train, problem.x_test
    xp = array_namespace(x_tr)
    n = x_tr.shape[0]
    x = problem.x_all
    parts = folds(n, config.folds, seed)
    records: list[dict[str, Any]] = []
    candidates: dict[tuple[str, str], list[Candidate]] = {}
    fits: dict[str, Any] = {}
    zero = xp.zeros((1,), dtype=x.dtype, device=device(x))
    for net in nets:
        model = net.build(problem.dim, seed)
        theta = model.init(seed, xp=xp, dtype=x.dtype, device=device(x))
        kernels = _kernels(
            net, model, theta, x, seed, rtol=config.rtol, max_samples=config.max_samples
        )
        advance(f"seed {seed}, {problem.dim}-D, {net.name}")
        for label, cands in kernels.items():
            candidates[(net.name, label)] = cands
        for target in problem.targets:
            y_tr, y_te = target.fn(xp, x_tr), target.fn(xp, x_te)
            dist = target.distance(xp, x_te)
            for label, cands in kernels.items():
                cvs = [
                    cross_validate(
                        c.kernel[:n, :n],
                        y_tr,
                        parts,
                        ridges=config.ridges,
                        times=config.flow_times,
                    )
                    for c in cands
                ]
                by_ridge = select([cv.ridge for cv in cvs], config.ridges)
                by_time = select([cv.flow for cv in cvs], config.flow_times)
                chosen = cands[by_ridge.kernel]
                k_tr, k_te = chosen.kernel[:n, :n], chosen.kernel[n:, :n]
                pred = fit(k_tr, y_tr, k_te, ridge=by_ridge.value, time=None)
                flowed = cands[by_time.kernel].kernel
                flow_pred = fit(
                    flowed[:n, :n], y_tr, flowed[n:, :n], ridge=None, time=by_time.value
                )
                err = pred - y_te
                zero_kernel = not bool(xp.any(k_tr != 0.0))
                records.append(
                    {
                        "target": target.name,
                        "network": net.name,
                        "kernel": label,
                        "seed": seed,
                        "ridge_mse": float(xp.mean(err * err)),
                        "flow_mse": float(xp.mean((flow_pred - y_te) ** 2)),
                        "band_error": float(band_error(dist, err, zero, width=config.band)),
                        "alignment": None if zero_kernel else float(kernel_alignment(k_tr, y_tr)),
                        "sigma": chosen.sigma,
                        "ridge": by_ridge.value,
                        "cv_ridge_mse": by_ridge.cv_error,
                        "flow_sigma": cands[by_time.kernel].sigma,
                        "flow_time": by_time.value,
                        "cv_flow_mse": by_time.cv_error,
                        "samples": chosen.samples,
                        "error_bound": chosen.error_bound,
                    }
                )
                fits[f"{target.name}|{net.name}|{label}"] = to_numpy(pred)
    return records, candidates, fits
