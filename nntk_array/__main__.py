"""Command line: ``python -m nntk_array demo`` prints a local NTK and a nonlocal NTK on NumPy."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import numpy as np

from . import MLP, __version__, nntk, ntk


def _demo() -> None:
    model = MLP(1, (512,), 1, activation="relu")
    theta = model.init(0, xp=np, dtype=np.float64)
    x = np.linspace(-1.0, 1.0, 5)[:, None]
    kernel = ntk(model, theta, x)
    print(f"nntk_array {__version__}: exact local NTK of {model}")
    print(
        f"at x = {np.array2string(x[:, 0], precision=2)} (NumPy, float64, P = {model.num_params})"
    )
    print(np.array2string(kernel, precision=4, suppress_small=True))

    sign = MLP(1, (512,), 1, activation="sign")
    theta = sign.init(0, xp=np, dtype=np.float64)
    local = ntk(sign, theta, x)
    nonlocal_k, stderr = nntk(sign, theta, x, sigma=0.3, samples=2000, seed=0, return_stderr=True)

    def row(values: np.ndarray) -> str:
        return "[" + " ".join(f"{v:7.3f}" for v in values) + "]"

    print()
    print("sign network (sign' = 0 almost everywhere): the local NTK keeps only the output")
    print("layer; the nonlocal NTK (Gaussian smoothing sigma = 0.3, M = 2000, U-statistic)")
    print("sees the first layer too. Diagonals:")
    print(f"  local NTK     {row(np.diag(local))}")
    print(f"  nonlocal NTK  {row(np.diag(nonlocal_k))}")
    print(f"  +/- std. err. {row(np.diag(stderr))}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m nntk_array`` and the ``nntk-array`` script."""
    parser = argparse.ArgumentParser(prog="nntk-array", description=__doc__)
    parser.add_argument("--version", action="version", version=f"nntk_array {__version__}")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("demo", help="print a local NTK and a nonlocal NTK on NumPy")
    args = parser.parse_args(argv)
    if args.command in (None, "demo"):
        _demo()
    return 0


if __name__ == "__main__":
    sys.exit(main())
