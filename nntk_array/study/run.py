"""The study's configuration and driver: every part, in order, with one progress bar."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from array_api_compat import array_namespace

from .._typing import Device, DType, Namespace
from ..testing import to_numpy
from .comparison import LOCAL, NNTK_MC, NTK_INF, Candidate, compare_seed, networks
from .convergence import ESTIMATORS, convergence
from .dynamics import RUNS, width_sweep
from .problems import TARGETS, make_problems
from .spectral import spectra

__all__ = ["StudyConfig", "StudyResult", "run_study", "total_steps"]


@dataclass(frozen=True)
class StudyConfig:
    """Every setting of the study (all of them choices of ours); :meth:`quick` is a small
    version for smoke tests.

    Examples
    --------
    >>> StudyConfig().seeds, StudyConfig.quick().seeds
    (5, 2)
    """

    seeds: int = 5
    width: int = 256
    n_train: int = 64
    n_test: int = 128
    sigmas: tuple[float, ...] = (0.1, 0.3, 1.0)
    costly_sigmas: tuple[float, ...] = (0.3, 1.0)
    quant_step: float = 0.5
    noise: float = 0.5
    rtol: float = 0.05
    max_samples: int = 2048
    folds: int = 4
    ridges: tuple[float, ...] = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
    flow_times: tuple[float, ...] = (1.0, 10.0, 1e2, 1e3, 1e4, 1e5, 1e6)
    band: float = 0.05
    level: float = 0.95
    dynamics_widths: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048)
    dynamics_seeds: int = 3
    dynamics_steps: int = 200
    dynamics_sigma: float = 0.3
    dynamics_n_train: int = 32
    dynamics_n_test: int = 64
    spectrum_top: int = 8
    convergence_samples: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048)
    convergence_repeats: int = 2
    convergence_sigma: float = 0.3

    @staticmethod
    def quick(seeds: int = 2) -> StudyConfig:
        """A configuration that runs in seconds: narrower nets, fewer points and widths.

        Parameters
        ----------
        seeds : int, default 2

        Returns
        -------
        StudyConfig

        Examples
        --------
        >>> StudyConfig.quick(3).width
        64
        """
        return replace(
            StudyConfig(),
            seeds=seeds,
            width=64,
            n_train=32,
            n_test=64,
            sigmas=(0.3, 1.0),
            costly_sigmas=(1.0,),
            max_samples=512,
            folds=3,
            dynamics_widths=(64, 256),
            dynamics_seeds=1,
            dynamics_steps=50,
            dynamics_n_train=16,
            dynamics_n_test=32,
            convergence_samples=(64, 256),
            convergence_repeats=1,
        )


@dataclass
class StudyResult:
    """Everything the study measured: per-seed records of each part, the seed-0 fits and
    kernel slices of the 1-D design (host arrays) and the seconds each part took."""

    config: StudyConfig
    comparison: list[dict[str, Any]]
    dynamics: list[dict[str, Any]]
    spectra: list[dict[str, Any]]
    convergence: list[dict[str, Any]]
    x_train: np.ndarray
    x_test: np.ndarray
    fits: dict[str, np.ndarray]
    slices: dict[str, dict[str, np.ndarray]]
    seconds: dict[str, float] = field(default_factory=dict)


def _slices(
    candidates: dict[tuple[str, str], list[Candidate]], n: int, mid: int
) -> dict[str, dict[str, np.ndarray]]:
    """K(x*, x₀)/K(x₀, x₀) over the test inputs x*, x₀ the test input ``mid``, per network."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for (network, label), cands in candidates.items():
        if label not in (LOCAL, NTK_INF, NNTK_MC):
            continue
        for c in cands:
            k = to_numpy(c.kernel).astype(np.float64)
            row = k[n:, n + mid]
            diag = k[n + mid, n + mid]
            name = label if c.sigma is None else f"NNTK sigma={c.sigma:g}"
            out.setdefault(network, {})[name] = row / diag if diag != 0 else row
    return out


def run_study(
    xp: Namespace,
    *,
    dtype: DType,
    device: Device = None,
    config: StudyConfig | None = None,
    progress: Callable[[str], None] | None = None,
) -> StudyResult:
    """Run the whole study on ``xp``'s library (NumPy, torch, JAX, CuPy, …).

    Parameters
    ----------
    xp : namespace
        The array namespace (e.g. ``array_api_compat.numpy`` or ``torch``).
    dtype : dtype of ``xp``
    device : device, optional
    config : StudyConfig, optional
        Defaults to ``StudyConfig()``.
    progress : callable, optional
        Called with a label after each unit of work (e.g. a :class:`ProgressBar`).

    Returns
    -------
    StudyResult

    Examples
    --------
    >>> import numpy as np
    >>> from dataclasses import replace
    >>> cfg = replace(StudyConfig.quick(), width=8, n_train=9, n_test=8, dynamics_widths=(8,),
    ...               dynamics_steps=2, convergence_samples=(32,))
    >>> result = run_study(np, dtype=np.float64, config=cfg)
    >>> sorted({r["network"] for r in result.comparison})
    ['ReLU net', 'noisy ReLU net', 'quantized ReLU net', 'sign net']
    """
    cfg = config or StudyConfig()
    xp = array_namespace(xp.zeros(1))
    advance = progress or (lambda label: None)
    problems = make_problems(xp, n_train=cfg.n_train, n_test=cfg.n_test, dtype=dtype, device=device)
    nets = networks(
        width=cfg.width,
        sigmas=cfg.sigmas,
        costly_sigmas=cfg.costly_sigmas,
        quant_step=cfg.quant_step,
        noise=cfg.noise,
    )
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    comparison: list[dict[str, Any]] = []
    per_seed = []
    fits: dict[str, np.ndarray] = {}
    slices: dict[str, dict[str, np.ndarray]] = {}
    for seed in range(cfg.seeds):
        for problem in problems:
            records, candidates, seed_fits = compare_seed(
                seed, problem, nets, config=cfg, advance=advance
            )
            comparison += records
            if problem.dim == 1:
                per_seed.append(candidates)
                if seed == 0:
                    fits = seed_fits
                    slices = _slices(candidates, cfg.n_train, cfg.n_test // 2)
    seconds["comparison"] = time.perf_counter() - start

    start = time.perf_counter()
    one_d = next(p for p in problems if p.dim == 1)
    spectral = spectra(per_seed, one_d, top=cfg.spectrum_top)
    advance("spectra")
    seconds["spectra"] = time.perf_counter() - start

    start = time.perf_counter()
    grid = np.linspace(-1.0, 1.0, cfg.dynamics_n_train)[:, None]
    step = 2.0 / cfg.dynamics_n_test
    test = np.linspace(-1.0 + step / 2, 1.0 - step / 2, cfg.dynamics_n_test)[:, None]
    x_dyn = xp.asarray(grid, dtype=dtype, device=device)
    dynamics = width_sweep(
        x_dyn,
        TARGETS["sign"].fn(xp, x_dyn),
        xp.asarray(test, dtype=dtype, device=device),
        widths=cfg.dynamics_widths,
        seeds=cfg.dynamics_seeds,
        steps=cfg.dynamics_steps,
        sigma=cfg.dynamics_sigma,
        advance=advance,
    )
    seconds["dynamics"] = time.perf_counter() - start

    start = time.perf_counter()
    conv = convergence(
        one_d.x_train,
        width=cfg.width,
        sigma=cfg.convergence_sigma,
        samples=cfg.convergence_samples,
        repeats=cfg.convergence_repeats,
        advance=advance,
    )
    seconds["convergence"] = time.perf_counter() - start
    return StudyResult(
        config=cfg,
        comparison=comparison,
        dynamics=dynamics,
        spectra=spectral,
        convergence=conv,
        x_train=to_numpy(one_d.x_train)[:, 0].astype(np.float64),
        x_test=to_numpy(one_d.x_test)[:, 0].astype(np.float64),
        fits=fits,
        slices=slices,
        seconds=seconds,
    )


def total_steps(config: StudyConfig) -> int:
    """The number of progress steps of :func:`run_study` with ``config``.

    Parameters
    ----------
    config : StudyConfig

    Returns
    -------
    int

    Examples
    --------
    >>> total_steps(StudyConfig())
    81
    """
    designs = len({t.dim for t in TARGETS.values()})
    nets = networks(
        width=config.width,
        sigmas=config.sigmas,
        costly_sigmas=config.costly_sigmas,
        quant_step=config.quant_step,
        noise=config.noise,
    )
    comparison = config.seeds * designs * len(nets)
    dynamics = len(RUNS) * len(config.dynamics_widths) * config.dynamics_seeds
    return comparison + 1 + dynamics + 2 * len(ESTIMATORS)
