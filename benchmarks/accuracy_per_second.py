"""Accuracy per second: the seconds each variance reduction of ``nk.nntk`` needs to reach a
centred error of 5% and 1% against an exact kernel.

Networks (σ = 0.3, inputs on a grid of [-1, 1], float64): the one-hidden-layer
``nk.MLP(1, (256,), 1)`` with ReLU and sign activations, whose Gaussian NNTK has a closed form
(``nk.analytic.finite_width_nntk``), at N = 64 and 320; and ``nk.MLP(1, (64, 64), 1)``, with
no closed form, against a reference of our own (the most accurate estimator at
M = ``REFERENCE_SAMPLES``, whose own centred standard error is printed). The centred error is
‖C(K̂ − K)C‖_F / ‖CKC‖_F with C = I − 11ᵀ/N, its root mean square over ``SEEDS`` seeds.

For each option the error follows the M^(-1/2) law of an unbiased estimator: rms(M) = c/√M.
``c`` is measured at a pilot M, the M that reaches each target is solved for, and that call
is timed and its error measured (both reported, so the law can be checked); rows whose M
would exceed ``MAX_SAMPLES`` report the extrapolated time, marked "≈". All options run side
by side in one process. Run::

    python -m benchmarks.accuracy_per_second [--torch] [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

import nntk_array as nk
from nntk_array.testing import to_numpy

SIGMA = 0.3
SEEDS = 5
TARGETS = (0.05, 0.01)
MAX_SAMPLES = 2**15
REFERENCE_SAMPLES = 2**16

# (label, variance_reduction, sampling)
OPTIONS = [
    ("plain U-statistic", "none", "iid"),
    ("plain, antithetic", "none", "antithetic"),
    ("readout", ("readout",), "iid"),
    ("readout + units", ("readout", "units"), "iid"),
    ("readout + units, antithetic", ("readout", "units"), "antithetic"),
    ("jvp control variate", ("jvp",), "iid"),
    ("auto (+ jvp unless sign)", "auto", "iid"),
    ("auto, antithetic", "auto", "antithetic"),
]


@dataclass
class Case:
    label: str
    model: nk.MLP
    theta: Any
    x: Any
    truth: np.ndarray


def centred_error(k: Any, truth: np.ndarray) -> float:
    n = truth.shape[0]
    c = np.eye(n) - 1.0 / n
    return float(np.linalg.norm(c @ (np.asarray(k) - truth) @ c) / np.linalg.norm(c @ truth @ c))


def run(case: Case, reduction: Any, sampling: str, m: int, seeds: int) -> tuple[float, float]:
    """(rms centred error, mean seconds) over ``seeds`` seeds at M = m."""
    errs, secs = [], []
    for seed in range(seeds):
        t0 = time.perf_counter()
        k = nk.nntk(
            case.model,
            case.theta,
            case.x,
            sigma=SIGMA,
            samples=m,
            seed=1000 + seed,
            variance_reduction=reduction,
            sampling=sampling,
        )
        secs.append(time.perf_counter() - t0)
        errs.append(centred_error(to_numpy(k), case.truth))
    return math.sqrt(float(np.mean(np.square(errs)))), float(np.mean(secs))


def cases(convert: Callable[[np.ndarray], Any], quick: bool, deep: bool = True) -> list[Case]:
    out = []
    sizes = (64,) if quick else (64, 320)
    for act in ("relu", "sign"):
        model = nk.MLP(1, (256,), 1, activation=act)
        theta = model.init(0, xp=np)
        for n in sizes:
            x = np.linspace(-1.0, 1.0, n)[:, None]
            truth = nk.analytic.finite_width_nntk(model, theta, x, sigma=SIGMA)
            out.append(Case(f"1-256-1 {act}, N = {n}", model, convert(theta), convert(x), truth))
    for act in ("relu", "sign") if deep else ():
        model = nk.MLP(1, (64, 64), 1, activation=act)
        theta = model.init(0, xp=np)
        x = np.linspace(-1.0, 1.0, 64)[:, None]
        t0 = time.perf_counter()
        ref = nk.nntk(
            model,
            theta,
            x,
            sigma=SIGMA,
            samples=REFERENCE_SAMPLES // (8 if quick else 1),
            seed=7,
            sampling="antithetic",
            return_stderr=True,
        )
        c = np.eye(64) - 1.0 / 64
        rel = np.linalg.norm(c @ ref.stderr @ c) / np.linalg.norm(c @ ref.value @ c)
        print(
            f"reference 1-64-64-1 {act}: M = {ref.samples}, antithetic auto, centred "
            f"standard error {rel:.2%}, {time.perf_counter() - t0:.0f} s"
        )
        out.append(Case(f"1-64-64-1 {act}, N = 64", model, convert(theta), convert(x), ref.value))
    return out


def seconds_to(
    case: Case, reduction: Any, sampling: str, seeds: int, pilot: int
) -> list[tuple[float, int, float, bool]]:
    """Per target: (seconds, M, achieved rms, measured?)."""
    rms, _ = run(case, reduction, sampling, pilot, seeds)
    c = rms * math.sqrt(pilot)
    rows = []
    for target in TARGETS:
        m = max(4, math.ceil((c / target) ** 2))
        if m > MAX_SAMPLES:  # extrapolate the time linearly in M from the largest call
            err, sec = run(case, reduction, sampling, MAX_SAMPLES, 1)
            rows.append((sec * m / MAX_SAMPLES, m, c / math.sqrt(m), False))
            continue
        err, sec = run(case, reduction, sampling, m, seeds)
        rows.append((sec, m, err, True))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torch", action="store_true", help="PyTorch tensors instead of NumPy")
    parser.add_argument("--quick", action="store_true", help="fewer cases and seeds")
    parser.add_argument("--json", help="write every number here")
    parser.add_argument("--one-hidden", action="store_true", help="only the 1-256-1 networks")
    args = parser.parse_args(argv)
    convert: Callable[[np.ndarray], Any] = np.asarray
    if args.torch:
        import torch

        convert = torch.from_numpy
    seeds = 2 if args.quick else SEEDS
    results = []
    for case in cases(convert, args.quick, deep=not args.one_hidden):
        print(f"\n{case.label} ({'PyTorch' if args.torch else 'NumPy'}, float64)")
        print("| option | M to 5% | s to 5% | M to 1% | s to 1% | speed-up to 5% |")
        print("|---|---|---|---|---|---|")
        base = None
        for label, reduction, sampling in OPTIONS:
            # a pilot of a few samples per batch has heavy tails: only the per-unit options,
            # which reach 5% with tens of samples, get a small one
            pilot = 256 if reduction == "auto" or "units" in reduction else 2048
            rows = seconds_to(case, reduction, sampling, seeds, pilot)
            base = rows[0][0] if base is None else base
            cells = []
            for sec, m, _, measured in rows:
                cells += [f"{m}", f"{'' if measured else '≈'}{sec:.3g}"]
            print(f"| {label} | {' | '.join(cells)} | {base / rows[0][0]:.0f}x |")
            results.append(
                {
                    "case": case.label,
                    "option": label,
                    "rows": [
                        {"target": t, "seconds": s, "samples": m, "rms": e, "measured": ok}
                        for t, (s, m, e, ok) in zip(TARGETS, rows, strict=True)
                    ],
                }
            )
    if args.json:
        with open(args.json, "w") as fh:
            backend = "torch" if args.torch else "numpy"
            json.dump({"backend": backend, "results": results}, fh, indent=1)


if __name__ == "__main__":
    main()
