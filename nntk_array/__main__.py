"""Command line: ``python -m nntk_array demo`` prints a local NTK on NumPy."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import numpy as np

from . import MLP, __version__, ntk


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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m nntk_array`` and the ``nntk-array`` script."""
    parser = argparse.ArgumentParser(prog="nntk-array", description=__doc__)
    parser.add_argument("--version", action="version", version=f"nntk_array {__version__}")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("demo", help="print the exact local NTK of a small ReLU MLP on NumPy")
    args = parser.parse_args(argv)
    if args.command in (None, "demo"):
        _demo()
    return 0


if __name__ == "__main__":
    sys.exit(main())
