"""Command line of nntk_array.

``python -m nntk_array reproduce`` runs the kernel study (local vs nonlocal NTK on non-smooth
targets, cross-validated, over seeds), prints its report and writes its tables, per-seed
results and figures to ``--out``; ``demo`` prints a local and a nonlocal NTK.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from . import MLP, __version__, nntk, ntk
from .backends.namespaces import LIBRARIES, load


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


def _out_dir(path: str) -> Path:
    """Create (if needed) and check the output directory; raise ``ValueError`` with the
    reason when it cannot be used."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{path!r} exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as err:
        raise ValueError(f"{path!r} is not a writable directory ({err.strerror or err})") from None
    return out


def _reproduce(args: argparse.Namespace, out: Path) -> None:
    from .study import (
        ProgressBar,
        StudyConfig,
        format_report,
        run_study,
        total_steps,
        write_outputs,
    )

    try:
        xp, device = load(args.backend, args.device, x64=args.dtype == "float64")
    except (ImportError, RuntimeError, ValueError) as err:
        raise SystemExit(f"--backend {args.backend}: {err}") from None
    dtype = getattr(xp, args.dtype)
    config = (
        StudyConfig.quick(args.seeds or 2) if args.quick else StudyConfig(seeds=args.seeds or 5)
    )
    bar = ProgressBar(total_steps(config))
    result = run_study(xp, dtype=dtype, device=device, config=config, progress=bar)
    bar.close()
    label = args.backend + ("" if device is None else f" ({device})") + f", {args.dtype}"
    print(format_report(result, backend=label))
    files = write_outputs(result, out, backend=label)
    print(f"written to {out}/: " + ", ".join(f.name for f in files))
    if not any(f.suffix == ".png" for f in files):
        print('figures skipped: matplotlib is not installed (pip install "nntk-array[plot]")')


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m nntk_array`` and the ``nntk-array`` script."""
    parser = argparse.ArgumentParser(prog="nntk-array", description=__doc__)
    parser.add_argument("--version", action="version", version=f"nntk_array {__version__}")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("demo", help="print a local NTK and a nonlocal NTK on NumPy")
    rep = sub.add_parser(
        "reproduce",
        help="run the kernel study: report on stdout, tables, JSON and figures to --out",
    )
    rep.add_argument("--backend", choices=LIBRARIES, default="numpy")
    rep.add_argument("--device", default=None, help="e.g. cuda (torch), gpu (JAX), 0 (CuPy)")
    rep.add_argument("--dtype", choices=("float32", "float64"), default="float64")
    rep.add_argument("--seeds", type=int, default=None, help="seeds (default 5; 2 with --quick)")
    rep.add_argument("--quick", action="store_true", help="a small version (seconds)")
    rep.add_argument(
        "--out",
        default="nntk_study",
        help="directory for table.md, table.csv, results.json and the figures (created if "
        "missing; default: nntk_study)",
    )
    args = parser.parse_args(argv)
    if args.command == "reproduce":
        if args.seeds is not None and args.seeds < 2:
            parser.error("--seeds must be >= 2")
        try:
            out = _out_dir(args.out)
        except ValueError as err:
            parser.error(f"--out: {err}")
        _reproduce(args, out)
    else:
        _demo()
    return 0


if __name__ == "__main__":
    sys.exit(main())
