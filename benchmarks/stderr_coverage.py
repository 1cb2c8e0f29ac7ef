"""Coverage of ``nk.nntk``'s standard errors, per variance reduction and sampler.

Over ``SEEDS`` seeds, the fraction of kernel entries whose exact value (the closed-form
Gaussian NNTK of a one-hidden-layer ``nk.MLP(1, (16,), 1)``, N = 6 inputs on [-1, 1],
σ = 0.3, M = 400, NumPy float64) lies within ±t·se, t = 2.093 the 95% quantile of Student's
t with 19 degrees of freedom (the jackknife over 20 batches). Nominal: 95%; the binomial
standard deviation over ``SEEDS`` independent estimates is about 1.5%, entries of one
estimate are correlated. Run::

    python -m benchmarks.stderr_coverage
"""

from __future__ import annotations

import numpy as np

import nntk_array as nk

SIGMA, SAMPLES, SEEDS, T = 0.3, 400, 200, 2.093
OPTIONS = [
    ("none", "none"),
    ("readout", ("readout",)),
    ("readout + units", ("readout", "units")),
    ("jvp", ("jvp",)),
    ("auto", "auto"),
]


def coverage(activation: str, reduction: object, sampling: str) -> float:
    model = nk.MLP(1, (16,), 1, activation=activation)
    theta = model.init(0, xp=np)
    x = np.linspace(-1.0, 1.0, 6)[:, None]
    truth = nk.analytic.finite_width_nntk(model, theta, x, sigma=SIGMA)
    inside = []
    for seed in range(SEEDS):
        k, se = nk.nntk(
            model,
            theta,
            x,
            sigma=SIGMA,
            samples=SAMPLES,
            seed=seed,
            sampling=sampling,
            variance_reduction=reduction,
            return_stderr=True,
        )
        inside.append(np.abs(k - truth) <= T * se)
    return float(np.mean(inside))


def main() -> None:
    acts = ("relu", "sign", "erf")
    print("| option | sampling | " + " | ".join(acts) + " |")
    print("|---|---|" + "---|" * len(acts))
    for label, reduction in OPTIONS:
        for sampling in ("iid", "antithetic"):
            cells = [f"{coverage(a, reduction, sampling):.1%}" for a in acts]
            print(f"| {label} | {sampling} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
