"""The kernel study behind ``python -m nntk_array reproduce``.

**The paper's own protocol and numbers are not available** (only its abstract was available
to us in a form we could use), so this protocol is ours (docs: Mathematics, 'The study
protocol'): 1-D regression of the non-smooth targets sign(x), a sawtooth and
ReLU(x) on [-1, 1] with the kernels of a one-hidden-layer ReLU MLP at initialization — the
local NTK, the infinite-width NTK, the fixed-kernel NNTK over a σ sweep and an attention NNTK
— predicted by kernel ridge regression and linearized gradient flow, with test errors (also
near the jumps and kinks) and kernel-target alignment, mean ± sd over seeds.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import analytic
from ._typing import Array, Namespace
from .attention import Attention
from .local_ntk import ntk
from .metrics import band_error, kernel_alignment
from .models import MLP
from .nonlocal_ntk import nntk
from .predict import gradient_flow, kernel_regression

__all__ = ["TARGETS", "StudyConfig", "format_table", "plot_study", "run_study"]

SAWTOOTH_PERIODS = 2


def _sawtooth(x: np.ndarray) -> np.ndarray:
    k = SAWTOOTH_PERIODS
    return 2.0 * (k * x - np.floor(k * x + 0.5))


# name: (target function, its jumps or kinks on [-1, 1])
TARGETS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], tuple[float, ...]]] = {
    "sign": (np.sign, (0.0,)),
    "sawtooth": (_sawtooth, (-0.75, -0.25, 0.25, 0.75)),
    "relu": (lambda x: np.maximum(x, 0.0), (0.0,)),
}


@dataclass(frozen=True)
class StudyConfig:
    """Settings of the study; :meth:`quick` is a smaller version for smoke tests."""

    width: int = 256
    n_train: int = 64
    n_test: int = 256
    sigmas: tuple[float, ...] = (0.1, 0.3, 1.0)
    attention_sigma: float = 0.3
    samples: int = 2048
    seeds: int = 5
    ridge: float = 1e-4
    flow_time: float = 1e3
    band: float = 0.05
    activation: str = "relu"

    @staticmethod
    def quick(seeds: int = 2) -> StudyConfig:
        return StudyConfig(
            width=64, n_train=32, n_test=128, sigmas=(0.3, 1.0), samples=512, seeds=seeds
        )

    def kernel_names(self) -> list[str]:
        return [
            "NTK (local)",
            "NTK (infinite width)",
            *(f"NNTK sigma={s:g}" for s in self.sigmas),
            f"attention NNTK sigma={self.attention_sigma:g}",
        ]


@dataclass
class StudyResult:
    """Per target and kernel: lists (over seeds) of each metric; predictions of seed 0."""

    config: StudyConfig
    metrics: dict[str, dict[str, dict[str, list[float]]]]
    x_train: np.ndarray
    x_test: np.ndarray
    fits: dict[str, dict[str, np.ndarray]]
    kernel_rows: dict[str, np.ndarray]
    seconds: float


def run_study(
    xp: Namespace,
    *,
    dtype: Any,
    device: Any = None,
    config: StudyConfig | None = None,
    progress: Callable[[str], None] | None = None,
) -> StudyResult:
    """Run the study on ``xp`` (NumPy, torch, JAX, CuPy namespace) and collect the metrics."""
    cfg = config or StudyConfig()
    say = progress or (lambda msg: None)
    start = time.perf_counter()
    x_tr = np.linspace(-1.0, 1.0, cfg.n_train)
    x_te = np.linspace(-1.0, 1.0, cfg.n_test)
    x_all = xp.asarray(np.concatenate([x_tr, x_te])[:, None], dtype=dtype, device=device)
    n = cfg.n_train
    model = MLP(1, (cfg.width,), 1, activation=cfg.activation)
    names = cfg.kernel_names()
    metrics: dict[str, dict[str, dict[str, list[float]]]] = {
        t: {k: {"ridge MSE": [], "flow MSE": [], "band error": [], "alignment": []} for k in names}
        for t in TARGETS
    }
    fits: dict[str, dict[str, np.ndarray]] = {t: {} for t in TARGETS}
    rows: dict[str, np.ndarray] = {}
    infinite = analytic.ntk(x_all, activation=cfg.activation)
    for seed in range(cfg.seeds):
        theta = model.init(seed, xp=xp, dtype=dtype, device=device)
        kernels: dict[str, Array] = {names[0]: ntk(model, theta, x_all), names[1]: infinite}
        for s in cfg.sigmas:
            say(f"seed {seed + 1}/{cfg.seeds}: NNTK sigma={s:g} (M = {cfg.samples})")
            kernels[f"NNTK sigma={s:g}"] = nntk(
                model, theta, x_all, sigma=s, samples=cfg.samples, seed=1000 + seed
            )
        say(f"seed {seed + 1}/{cfg.seeds}: attention NNTK")
        kernels[names[-1]] = nntk(
            model,
            theta,
            x_all,
            sigma=cfg.attention_sigma,
            samples=cfg.samples,
            seed=1000 + seed,
            # the weights see the training inputs only, as a fit to them would
            attention=Attention(score="output", reference=x_all[:n, ...]),
            estimator="plugin",
        )
        for name, k in kernels.items():
            k_tr, k_te = k[:n, :n], k[n:, :n]
            if seed == 0:  # the kernel's row at the test point next to x = 0
                mid = n + cfg.n_test // 2
                rows[name] = _host(k[n:, mid]) / float(_host(k[mid, mid]))
            monte_carlo = name.startswith(("NNTK", "attention"))
            scale = float(_host(xp.sum(xp.linalg.diagonal(k_tr)))) / n
            for target, (fn, points) in TARGETS.items():
                y_tr = xp.asarray(fn(x_tr), dtype=dtype, device=device)
                y_te = fn(x_te)
                _, ridge_te = kernel_regression(k_tr, y_tr, k_te, ridge=cfg.ridge, psd=monte_carlo)
                _, flow_te = gradient_flow(k_tr, y_tr, k_te, t=cfg.flow_time / scale)
                ridge_te, flow_te = _host(ridge_te), _host(flow_te)
                m = metrics[target][name]
                m["ridge MSE"].append(float(np.mean((ridge_te - y_te) ** 2)))
                m["flow MSE"].append(float(np.mean((flow_te - y_te) ** 2)))
                m["band error"].append(
                    float(band_error(x_te, ridge_te - y_te, np.asarray(points), width=cfg.band))
                )
                m["alignment"].append(float(_host(kernel_alignment(k_tr, y_tr))))
                if seed == 0:
                    fits[target][name] = ridge_te
    return StudyResult(cfg, metrics, x_tr, x_te, fits, rows, time.perf_counter() - start)


def _host(a: Array) -> np.ndarray:
    from .testing import to_numpy

    return to_numpy(a).astype(np.float64)


def format_table(result: StudyResult, *, backend: str) -> str:
    """A plain-text table of mean ± sd over seeds, with the verdict per target."""
    cfg = result.config
    lines = [
        "Nonlocal vs local NTK on non-smooth 1-D targets (protocol: ours; the paper's own "
        "numbers are not available)",
        f"MLP 1-{cfg.width}-1 {cfg.activation} at initialization, {cfg.n_train} train / "
        f"{cfg.n_test} test points on [-1, 1], {cfg.seeds} seeds (network and perturbations).",
        f"NNTK: Gaussian (Stein) form, U-statistic, M = {cfg.samples}, negative eigenvalues "
        "clipped; attention NNTK: plug-in Gram of the attention-weighted gradients, "
        "output-geometry score, target ESS M/2 (score ours).",
        f"Ridge {cfg.ridge:g} x tr(K)/N; gradient flow to time {cfg.flow_time:g} / (tr(K)/N); "
        f"band error: sup |error| within {cfg.band:g} of the jumps/kinks; alignment: centred, "
        f"train set. Backend {backend}; {result.seconds:.1f} s.",
        "",
    ]
    header = (
        f"{'target':<9} {'kernel':<26} {'ridge test MSE':>19} {'flow test MSE':>19} "
        f"{'band sup error':>17} {'alignment':>15}"
    )
    lines += [header, "-" * len(header)]
    for target, per_kernel in result.metrics.items():
        for name, m in per_kernel.items():
            cells = [
                _mean_sd(m["ridge MSE"], "{:.2e}"),
                _mean_sd(m["flow MSE"], "{:.2e}"),
                _mean_sd(m["band error"], "{:.3f}"),
                _mean_sd(m["alignment"], "{:.3f}"),
            ]
            lines.append(
                f"{target:<9} {name:<26} {cells[0]:>19} {cells[1]:>19} "
                f"{cells[2]:>17} {cells[3]:>15}"
            )
        local = statistics.mean(per_kernel["NTK (local)"]["ridge MSE"])
        best_name, best = min(
            (
                (k, statistics.mean(v["ridge MSE"]))
                for k, v in per_kernel.items()
                if k.startswith(("NNTK", "attention"))
            ),
            key=lambda kv: kv[1],
        )
        verdict = "beats" if best < local else "does not beat"
        lines.append(
            f"{'':<9} -> best nonlocal ({best_name}) {verdict} the local NTK on "
            f"{target} (ridge test MSE {best:.2e} vs {local:.2e})"
        )
        lines.append("")
    return "\n".join(lines)


def _mean_sd(values: list[float], fmt: str) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{fmt.format(statistics.mean(values))} +- {fmt.format(sd)}"


def plot_study(result: StudyResult, path: str) -> bool:
    """Write the figure (fits and kernel slices) to ``path``; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    names = result.config.kernel_names()
    shown = [names[0], names[1], names[2 + len(result.config.sigmas) // 2], names[-1]]
    fig, axes = plt.subplots(2, 3, figsize=(13, 7), constrained_layout=True)
    for ax, (target, (fn, _)) in zip(axes[0], TARGETS.items(), strict=True):
        ax.plot(result.x_test, fn(result.x_test), color="black", lw=1.5, label="target")
        ax.scatter(result.x_train, fn(result.x_train), s=8, color="black", zorder=3)
        for name in shown:
            ax.plot(result.x_test, result.fits[target][name], lw=1, label=name)
        ax.set_title(f"{target}: kernel ridge fits (seed 0)")
    axes[0][0].legend(fontsize=7)
    for ax, name_group in zip(axes[1], (names[:2], names[2:-1], names[-1:]), strict=True):
        for name in name_group:
            ax.plot(result.x_test, result.kernel_rows[name], label=name)
        ax.set_title("K(x, 0) / K(0, 0)")
        ax.legend(fontsize=7)
    fig.suptitle("nntk_array study (protocol ours; the paper's numbers are not available)")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def progress_printer(stream: Any = None) -> Callable[[str], None]:
    """A progress callback printing elapsed time and the step to ``stream`` (default: the
    current ``sys.stderr``, looked up at each call)."""
    start = time.perf_counter()

    def say(msg: str) -> None:
        out = sys.stderr if stream is None else stream
        print(f"[{time.perf_counter() - start:6.1f} s] {msg}", file=out, flush=True)

    return say
