"""The study's figures (matplotlib, imported by the caller): one function per figure."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np

from .convergence import ESTIMATORS
from .dynamics import RUNS
from .problems import TARGETS
from .run import StudyResult
from .spectral import NETWORKS

__all__ = ["FIGURES"]

TITLE = "nntk_array study (protocol ours; the paper's numbers are not available)"


def _networks(result: StudyResult) -> list[str]:
    return list(dict.fromkeys(r["network"] for r in result.comparison))


def _fits(plt: Any, result: StudyResult) -> Any:
    targets = [t for t in TARGETS.values() if t.dim == 1]
    nets = _networks(result)
    fig, axes = plt.subplots(
        len(targets),
        len(nets),
        figsize=(4 * len(nets), 3 * len(targets)),
        squeeze=False,
        constrained_layout=True,
    )
    x_te, x_tr = result.x_test[:, None], result.x_train[:, None]
    for i, target in enumerate(targets):
        y_te, y_tr = target.fn(np, x_te), target.fn(np, x_tr)
        for j, net in enumerate(nets):
            ax = axes[i][j]
            ax.plot(result.x_test, y_te, color="black", lw=1.5, label="target")
            ax.scatter(result.x_train, y_tr, s=6, color="black", zorder=3)
            for key, pred in result.fits.items():
                t, n, kernel = key.split("|")
                if t == target.name and n == net:
                    ax.plot(result.x_test, pred, lw=1, label=kernel)
            ax.set_title(f"{target.name}: {net}", fontsize=9)
            if i == 0:
                ax.legend(fontsize=6)
    fig.suptitle(f"Kernel ridge fits, seed 0, CV-chosen hyperparameters. {TITLE}", fontsize=9)
    return fig


def _kernels(plt: Any, result: StudyResult) -> Any:
    nets = list(result.slices)
    fig, axes = plt.subplots(
        1, len(nets), figsize=(4 * len(nets), 3.2), squeeze=False, constrained_layout=True
    )
    for ax, net in zip(axes[0], nets, strict=True):
        for name, row in result.slices[net].items():
            ax.plot(result.x_test, row, lw=1, label=name)
        ax.set_title(f"{net}: K(x, x0) / K(x0, x0)", fontsize=9)
        ax.legend(fontsize=6)
    fig.suptitle(f"Kernel slices at the test input next to 0, seed 0. {TITLE}", fontsize=9)
    return fig


def _spectra(plt: Any, result: StudyResult) -> Any:
    targets = [t.name for t in TARGETS.values() if t.dim == 1]
    fig, axes = plt.subplots(
        len(NETWORKS), 1 + len(targets), figsize=(16, 6.5), squeeze=False, constrained_layout=True
    )
    for i, net in enumerate(NETWORKS):
        rows = [r for r in result.spectra if r["network"] == net and r["seed"] == 0]
        seen = set()
        for r in rows:
            if r["kernel"] not in seen:
                seen.add(r["kernel"])
                vals = np.clip(np.asarray(r["eigenvalues"]), 1e-18, None)
                axes[i][0].semilogy(np.arange(1, vals.size + 1), vals, lw=1, label=r["kernel"])
            j = 1 + targets.index(r["target"])
            energy = np.asarray(r["energy"])
            axes[i][j].plot(np.arange(1, energy.size + 1), energy, lw=1, label=r["kernel"])
            axes[i][j].set_title(f"{net}: energy of {r['target']} in top k", fontsize=9)
            axes[i][j].set_xscale("log")
        axes[i][0].set_title(f"{net}: eigenvalues / trace", fontsize=9)
        axes[i][0].legend(fontsize=6)
    fig.suptitle(f"Spectra of the training kernels, seed 0. {TITLE}", fontsize=9)
    return fig


def _dynamics(plt: Any, result: StudyResult) -> Any:
    panels = (
        ("distance", "RMS distance to the frozen-kernel prediction"),
        ("kernel_change", "relative kernel change"),
    )
    fig, axes = plt.subplots(1, len(panels), figsize=(10, 3.8), constrained_layout=True)
    widths = np.asarray(result.config.dynamics_widths, dtype=float)
    for ax, (key, title) in zip(axes, panels, strict=True):
        for (label, _, _), marker in zip(RUNS, "os", strict=True):
            by: dict[int, list[float]] = defaultdict(list)
            for r in result.dynamics:
                if r["experiment"] == label:
                    by[r["width"]].append(r[key])
            mean = [float(np.mean(by[int(w)])) for w in widths]
            sd = [float(np.std(by[int(w)])) for w in widths]
            ax.errorbar(widths, mean, yerr=sd, marker=marker, lw=1, capsize=2, label=label)
        ref = float(np.mean([r[key] for r in result.dynamics if r["width"] == widths[0]]))
        ax.loglog(widths, ref * (widths / widths[0]) ** -0.5, "k--", lw=0.8, label="width^-1/2")
        ax.set_xlabel("width")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(f"Trained network vs kernel at initialization. {TITLE}", fontsize=9)
    return fig


def _convergence(plt: Any, result: StudyResult) -> Any:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), constrained_layout=True)
    for ax, net in zip(axes, ("relu net", "sign net"), strict=True):
        first = math.nan
        for est in ESTIMATORS:
            by: dict[int, list[float]] = defaultdict(list)
            for r in result.convergence:
                if r["network"] == net and r["estimator"] == est:
                    by[r["samples"]].append(r["error"])
            ms = sorted(by)
            rms = [math.sqrt(float(np.mean(np.square(by[m])))) for m in ms]
            ax.loglog(ms, rms, marker="o", lw=1, label=est)
            if math.isnan(first):
                first = rms[0]
        ms_arr = np.asarray(result.config.convergence_samples, dtype=float)
        ax.loglog(ms_arr, first * (ms_arr / ms_arr[0]) ** -0.5, "k--", lw=0.8, label="M^-1/2")
        ax.set_xlabel("M (perturbations)")
        ax.set_title(f"{net}: centred error vs the closed form", fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(f"Convergence of the Monte Carlo NNTK in M. {TITLE}", fontsize=9)
    return fig


FIGURES: dict[str, Callable[[Any, StudyResult], Any]] = {
    "fits": _fits,
    "kernels": _kernels,
    "spectra": _spectra,
    "dynamics": _dynamics,
    "convergence": _convergence,
}
