"""Bias of low-rank perturbations against the Gaussian NNTK, from the library's closed forms.

For a one-hidden-layer MLP (4 → 64 → 1, NTK parameterization, 16 inputs uniform in
[-1, 1]^4) this prints, for ranks r in {1, 2, 4, 16}, relu and sign nets with and without
biases and σ in {0.1, 0.3}:

- the exact bias ‖K_r − K_G‖/‖K_G‖ of the low-rank target K_r
  (``finite_width_nntk(..., rank=r)``) against the Gaussian NNTK K_G (``rank=None``);
- the Monte Carlo error ‖K̂ − K_r‖/‖K_r‖ of ``nk.nntk(..., perturbation="lowrank", rank=r)``
  at M samples against its own target, and ‖K̂_G − K_G‖/‖K_G‖ of the Gaussian default.

Usage: ``python benchmarks/lowrank_bias.py [M]`` (default M = 4096). Entries are percent.
"""

from __future__ import annotations

import sys

import numpy as np

import nntk_array as nk

RANKS = (1, 2, 4, 16)


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def main(m: int) -> None:
    x = np.random.default_rng(2000).uniform(-1.0, 1.0, (16, 4))
    head = " | ".join(f"r={r}: bias / MC" for r in RANKS)
    print(f"M = {m}; percent. exact bias ‖K_r − K_G‖/‖K_G‖ / MC error ‖K̂ − K_r‖/‖K_r‖")
    print(f"| net, σ | Gaussian MC | {head} |")
    print("|---" * (2 + len(RANKS)) + "|")
    for activation in ("relu", "sign"):
        for bias in (True, False):
            model = nk.MLP(4, (64,), activation=activation, bias=bias)
            theta = model.init(1000, xp=np)
            for sigma in (0.1, 0.3):
                gauss = nk.analytic.finite_width_nntk(model, theta, x, sigma=sigma)
                est = nk.nntk(
                    model, theta, x, sigma=sigma, samples=m, seed=1, variance_reduction="none"
                )
                cells = [f"{100 * rel(est, gauss):.2f}"]
                for r in RANKS:
                    target = nk.analytic.finite_width_nntk(model, theta, x, sigma=sigma, rank=r)
                    low = nk.nntk(
                        model, theta, x, sigma=sigma, samples=m, seed=1,
                        perturbation="lowrank", rank=r,
                    )  # fmt: skip
                    cells.append(f"{100 * rel(target, gauss):.2f} / {100 * rel(low, target):.2f}")
                name = f"{activation}{'' if bias else ', no bias'}, {sigma}"
                print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 4096)
