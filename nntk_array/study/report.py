"""The study's report: the protocol, summary tables (text, Markdown, CSV), JSON, figures."""

from __future__ import annotations

import csv
import io
import json
import math
import platform
import sys
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from .._version import __version__
from .comparison import LOCAL
from .convergence import ESTIMATORS
from .dynamics import RUNS
from .problems import TARGETS
from .run import StudyConfig, StudyResult
from .stats import mean_sd, paired_difference

__all__ = [
    "environment",
    "format_report",
    "markdown_report",
    "plot_study",
    "protocol",
    "summarize",
    "write_outputs",
]

VERDICTS = {"lower": "better", "higher": "worse", "n.s.": "n.s."}


def protocol(cfg: StudyConfig) -> list[str]:
    """The protocol in words, one item per line; every choice in it is ours.

    Parameters
    ----------
    cfg : StudyConfig

    Returns
    -------
    list of str

    Examples
    --------
    >>> protocol(StudyConfig())[0].startswith("The paper's own protocol")
    True
    """
    sig = ", ".join(f"{s:g}" for s in cfg.sigmas)
    costly = ", ".join(f"{s:g}" for s in cfg.costly_sigmas)
    return [
        "The paper's own protocol and numbers are not available: every choice below is ours.",
        f"Data (ours): 1-D targets {', '.join(t.formula for t in TARGETS.values() if t.dim == 1)}"
        f" with {cfg.n_train} training inputs on a uniform grid of [-1, 1] and {cfg.n_test} test"
        f" inputs at the grid's cell midpoints; 2-D target {TARGETS['quadrants'].formula} with "
        f"{cfg.n_train} training and {cfg.n_test} test inputs drawn uniformly once. The data are"
        " the same for every seed.",
        f"Networks (ours): one hidden layer of {cfg.width} units, NTK parameterization, "
        "sigma_w = sigma_b = 1, biases: a ReLU net; a sign net (local NTK = readout layer only);"
        f" a quantized ReLU net (every parameter rounded to multiples of {cfg.quant_step:g} in "
        "the forward pass: local NTK identically 0); a noisy ReLU net (N(0, "
        f"{cfg.noise:g}^2) noise added to every hidden pre-activation in every forward pass: its"
        " local NTK is that of one noisy pass, its NNTK that of the noise-averaged net). Seed s"
        " initializes every network.",
        "Kernels (ours): the local NTK at initialization; for the ReLU and sign nets also the "
        "infinite-width NTK and NNTK (closed forms); the Monte Carlo NNTK (Gaussian form, "
        f"U-statistic, the library's default variance reduction) estimated with nk.nntk(rtol="
        f"{cfg.rtol:g}, error='centred', max_samples={cfg.max_samples}) on the training and test"
        " inputs together, perturbation seed 1000 + s; 'M / bound' reports the M used and the"
        " achieved jackknife bound on the centred relative error (a bound: where the estimator"
        " has no exact readout treatment it counts noise that centring removes, and stays above"
        " rtol; the convergence table measures the true error).",
        f"Hyperparameters (ours): per kernel, target and seed, by {cfg.folds}-fold cross-"
        "validation on the training set only (random folds per seed, shared by all kernels): "
        f"sigma in {{{sig}}} ({{{costly}}} for the quantized and noisy nets), ridge / (tr K / N)"
        f" in {{{_grid(cfg.ridges)}}}, gradient-flow time x tr(K) / N in "
        f"{{{_grid(cfg.flow_times)}}}; the smallest CV error wins (ties: the smaller value).",
        "Predictors (ours: f0 = 0): kernel ridge regression and gradient flow from f0 = 0, both "
        "by eigendecomposition with negative eigenvalues clipped; an identically zero kernel "
        "predicts 0.",
        f"Statistics (ours): mean +- sd over {cfg.seeds} seeds; Delta = paired per-seed "
        "difference of the ridge test MSE against the same network's local NTK, mean and "
        f"{cfg.level:.0%} Student-t interval (df = {cfg.seeds - 1}); 'better'/'worse' when the "
        "interval excludes 0, else 'n.s.'; no correction for multiple comparisons.",
    ]


def _grid(values: Sequence[float]) -> str:
    return ", ".join(f"{v:g}" for v in values)


def summarize(result: StudyResult) -> list[dict[str, Any]]:
    """One summary row per (target, network, kernel), in the study's order.

    Parameters
    ----------
    result : StudyResult

    Returns
    -------
    list of dict
        Means and standard deviations over seeds of the test errors, band error and
        alignment; the paired differences of the ridge and flow test MSE against the local
        NTK (``None`` on the local NTK's row); the σ chosen most often; mean M and bound.

    Examples
    --------
    >>> from nntk_array.study.run import StudyConfig, StudyResult
    >>> import numpy as np
    >>> rec = [{"target": "sign", "network": "n", "kernel": k, "seed": s, "ridge_mse": v,
    ...         "flow_mse": v, "band_error": 0.0, "alignment": 0.5, "sigma": None,
    ...         "samples": None, "error_bound": None}
    ...        for s, (a, b) in enumerate([(1.0, 0.5), (2.0, 1.4), (3.0, 2.2)])
    ...        for k, v in (("local NTK", a), ("NNTK (Monte Carlo)", b))]
    >>> res = StudyResult(StudyConfig(seeds=3), rec, [], [], [], np.zeros(1), np.zeros(1), {}, {})
    >>> row = summarize(res)[1]
    >>> round(row["delta_ridge"]["mean"], 3), row["delta_ridge"]["verdict"]
    (-0.633, 'better')
    """
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in result.comparison:
        groups[(r["target"], r["network"], r["kernel"])].append(r)
    order = {name: i for i, name in enumerate(TARGETS)}
    keys = sorted(groups, key=lambda k: order[k[0]])  # stable: networks and kernels in order
    rows = []
    for target, network, kernel in keys:
        recs = groups[(target, network, kernel)]
        recs = sorted(recs, key=lambda r: r["seed"])
        local = sorted(groups[(target, network, LOCAL)], key=lambda r: r["seed"])
        row: dict[str, Any] = {"target": target, "network": network, "kernel": kernel}
        for key in ("ridge_mse", "flow_mse", "band_error", "alignment"):
            values = [r[key] for r in recs if r[key] is not None]
            row[key] = (
                None if not values else dict(zip(("mean", "sd"), mean_sd(values), strict=True))
            )
        for key, name in (("ridge_mse", "delta_ridge"), ("flow_mse", "delta_flow")):
            if kernel == LOCAL or len(recs) < 2:
                row[name] = None
                continue
            d = paired_difference(
                [r[key] for r in recs], [r[key] for r in local], level=result.config.level
            )
            row[name] = {
                "mean": d.mean,
                "low": d.low,
                "high": d.high,
                "level": d.level,
                "verdict": VERDICTS[d.verdict],
            }
        sigmas = Counter(r["sigma"] for r in recs if r["sigma"] is not None)
        row["sigma"] = sigmas.most_common(1)[0][0] if sigmas else None
        row["sigma_counts"] = {f"{k:g}": v for k, v in sorted(sigmas.items())}
        samples = [r["samples"] for r in recs if r["samples"] is not None]
        bounds = [r["error_bound"] for r in recs if r["error_bound"] is not None]
        row["samples"] = statistics_mean(samples)
        row["error_bound"] = statistics_mean(bounds)
        rows.append(row)
    return rows


def statistics_mean(values: Sequence[float]) -> float | None:
    """The mean, or ``None`` for no values.

    Parameters
    ----------
    values : sequence of float

    Returns
    -------
    float or None

    Examples
    --------
    >>> statistics_mean([]), statistics_mean([1, 2])
    (None, 1.5)
    """
    return float(sum(values)) / len(values) if values else None


def _pm(cell: dict[str, float] | None, fmt: str = "{:.2e}") -> str:
    if cell is None:
        return "n/a"
    return f"{fmt.format(cell['mean'])} +- {fmt.format(cell['sd'])}"


def _delta(cell: dict[str, Any] | None) -> tuple[str, str]:
    if cell is None:
        return "-", "-"
    return f"{cell['mean']:+.2e} [{cell['low']:+.1e}, {cell['high']:+.1e}]", cell["verdict"]


def _mc(row: dict[str, Any]) -> str:
    if row["samples"] is None:
        return "-"
    return f"{row['samples']:.0f} / {row['error_bound']:.2f}"


def _sigma(row: dict[str, Any]) -> str:
    if row["sigma"] is None:
        return "-"
    counts = row["sigma_counts"]
    return (
        " ".join(f"{k}x{v}" for k, v in counts.items()) if len(counts) > 1 else f"{row['sigma']:g}"
    )


def comparison_table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the main table (one line per target, network and kernel).

    Parameters
    ----------
    rows : list of dict
        From :func:`summarize`.

    Returns
    -------
    header : list of str
    cells : list of list of str

    Examples
    --------
    >>> comparison_table([])[0][:3]
    ['target', 'network', 'kernel']
    """
    header = [
        "target",
        "network",
        "kernel",
        "ridge test MSE",
        "Delta vs local NTK [CI]",
        "verdict",
        "flow test MSE",
        "flow verdict",
        "sigma (CV)",
        "M / bound",
    ]
    cells = []
    for r in rows:
        delta, verdict = _delta(r["delta_ridge"])
        cells.append(
            [
                r["target"],
                r["network"],
                r["kernel"],
                _pm(r["ridge_mse"]),
                delta,
                verdict,
                _pm(r["flow_mse"]),
                _delta(r["delta_flow"])[1],
                _sigma(r),
                _mc(r),
            ]
        )
    return header, cells


def _dynamics_table(result: StudyResult) -> tuple[list[str], list[list[str]]]:
    by: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for r in result.dynamics:
        by[(r["experiment"], r["width"])].append(r)
    header = ["width"]
    for label, _, _ in RUNS:
        header += [f"{label}: distance", "kernel change"]
    cells = []
    for width in result.config.dynamics_widths:
        line = [str(width)]
        for label, _, _ in RUNS:
            recs = by[(label, width)]
            for key in ("distance", "kernel_change"):
                m, s = mean_sd([r[key] for r in recs])
                line.append(f"{m:.2e} +- {s:.1e}")
        cells.append(line)
    slope = ["slope (log-log)"]
    for label, _, _ in RUNS:
        for key in ("distance", "kernel_change"):
            slope.append(f"{_slope(result.dynamics, label, key):+.2f}")
    cells.append(slope)
    return header, cells


def _slope(records: list[dict[str, Any]], label: str, key: str) -> float:
    """Least-squares slope of log(value) against log(width) over all seeds."""
    pts = [(math.log(r["width"]), math.log(r[key])) for r in records if r["experiment"] == label]
    xs, ys = np.array([p[0] for p in pts]), np.array([p[1] for p in pts])
    if len(set(xs.tolist())) < 2:
        return math.nan
    return float(np.polyfit(xs, ys, 1)[0])


def _spectra_table(result: StudyResult) -> tuple[list[str], list[list[str]]]:
    by: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    order: list[tuple[str, str]] = []
    for r in result.spectra:
        by[(r["network"], r["kernel"], r["target"])].append(r["energy_top"])
        if (r["network"], r["kernel"]) not in order:
            order.append((r["network"], r["kernel"]))
    targets = [t.name for t in TARGETS.values() if t.dim == 1]
    header = ["network", "kernel", *targets]
    cells = []
    for network, kernel in order:
        line = [network, kernel]
        for t in targets:
            m, s = mean_sd(by[(network, kernel, t)])
            line.append(f"{m:.3f} +- {s:.3f}")
        cells.append(line)
    return header, cells


def _convergence_table(result: StudyResult) -> tuple[list[str], list[list[str]]]:
    by: dict[tuple[str, str, int], list[float]] = defaultdict(list)
    for r in result.convergence:
        by[(r["network"], r["estimator"], r["samples"])].append(r["error"])
    ms = result.config.convergence_samples
    header = ["network", "estimator", *(f"M={m}" for m in ms), "slope"]
    cells = []
    for network in ("relu net", "sign net"):
        for est in ESTIMATORS:
            rms = [
                math.sqrt(statistics_mean([e * e for e in by[(network, est, m)]]) or 0.0)
                for m in ms
            ]
            slope = float(np.polyfit(np.log(ms), np.log(rms), 1)[0]) if len(ms) > 1 else math.nan
            cells.append([network, est, *(f"{e:.3f}" for e in rms), f"{slope:+.2f}"])
    return header, cells


def _text_table(header: list[str], cells: list[list[str]], *, group: int = 0) -> str:
    """Aligned columns, a blank line wherever the first ``group`` cells change."""
    widths = [max([len(h), *(len(c[i]) for c in cells)]) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*header).rstrip(), "  ".join("-" * w for w in widths)]
    for i, c in enumerate(cells):
        if group and i and c[:group] != cells[i - 1][:group]:
            lines.append("")
        lines.append(fmt.format(*c).rstrip())
    return "\n".join(lines)


def _md_table(header: list[str], cells: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c) + " |" for c in cells]
    return "\n".join(lines)


Table = tuple[list[str], list[list[str]]]


def _sections(result: StudyResult, backend: str) -> list[tuple[str, str, Table, int]]:
    cfg = result.config
    total = sum(result.seconds.values())
    return [
        (
            "Kernel comparison",
            f"Test MSE (mean +- sd over {cfg.seeds} seeds) with hyperparameters chosen by "
            f"cross-validation; Delta: paired difference to the local NTK, {cfg.level:.0%} "
            f"t-interval. Backend {backend}; {total:.0f} s in all.",
            comparison_table(summarize(result)),
            2,
        ),
        (
            "Training against the kernel at initialization",
            f"Sign target, {cfg.dynamics_n_train} training inputs, {cfg.dynamics_steps} gradient "
            "steps of size 1/lambda_max(infinite-width kernel), "
            f"sigma = {cfg.dynamics_sigma:g} for the smoothed loss, {cfg.dynamics_seeds} seeds; "
            "distance: RMS gap on the test inputs between the trained network (f, or f_sigma "
            "for the smoothed loss) and the frozen-kernel prediction; kernel change: "
            "||K_T - K_0||_F / ||K_0||_F on the training inputs (ours).",
            _dynamics_table(result),
            0,
        ),
        (
            "Spectral bias",
            f"Fraction of each target's energy in the top {cfg.spectrum_top} eigendirections of "
            f"the training kernel (mean +- sd over {cfg.seeds} seeds).",
            _spectra_table(result),
            1,
        ),
        (
            "Convergence in M",
            f"Centred error ||C(K_hat - K)C|| / ||CKC|| against the closed form (sigma = "
            f"{cfg.convergence_sigma:g}, width {cfg.width}, {cfg.n_train} inputs, RMS over "
            f"{cfg.convergence_repeats} perturbation seeds; slope of log error against log M, "
            "-0.5 for Monte Carlo).",
            _convergence_table(result),
            1,
        ),
    ]


def format_report(result: StudyResult, *, backend: str) -> str:
    """The report as plain text: the protocol and the four tables.

    Parameters
    ----------
    result : StudyResult
    backend : str
        How to name the library, device and dtype.

    Returns
    -------
    str

    Examples
    --------
    >>> import numpy as np
    >>> from dataclasses import replace
    >>> from nntk_array.study import StudyConfig, run_study
    >>> cfg = replace(StudyConfig.quick(), width=8, n_train=9, n_test=8, dynamics_widths=(8,),
    ...               dynamics_steps=2, convergence_samples=(32,))
    >>> result = run_study(np, dtype=np.float64, config=cfg)
    >>> text = format_report(result, backend="numpy")
    >>> text.count("== "), "every choice below is ours" in text
    (4, True)
    """
    lines = [
        "Nonlocal vs local NTK: a cross-validated study (protocol ours; the paper's own "
        "numbers are not available)",
        "",
    ]
    lines += ["Protocol:", *(f"- {p}" for p in protocol(result.config)), ""]
    for title, caption, (header, cells), group in _sections(result, backend):
        lines += [f"== {title} ==", caption, "", _text_table(header, cells, group=group), ""]
    return "\n".join(lines)


def markdown_report(result: StudyResult, *, backend: str) -> str:
    """The report as Markdown (``table.md`` of :func:`write_outputs`).

    Parameters
    ----------
    result : StudyResult
    backend : str

    Returns
    -------
    str

    Examples
    --------
    >>> import numpy as np
    >>> from dataclasses import replace
    >>> from nntk_array.study import StudyConfig, run_study
    >>> cfg = replace(StudyConfig.quick(), width=8, n_train=9, n_test=8, dynamics_widths=(8,),
    ...               dynamics_steps=2, convergence_samples=(32,))
    >>> result = run_study(np, dtype=np.float64, config=cfg)
    >>> markdown_report(result, backend="numpy").count("## ")
    5
    """
    lines = ["# Nonlocal vs local NTK: a cross-validated study", "", "## Protocol", ""]
    lines += [f"- {p}" for p in protocol(result.config)] + [""]
    for title, caption, table, _ in _sections(result, backend):
        lines += [f"## {title}", "", caption, "", _md_table(*table), ""]
    return "\n".join(lines)


def environment(backend: str) -> dict[str, str]:
    """Versions of Python, the platform, nntk_array and the loaded array libraries.

    Parameters
    ----------
    backend : str

    Returns
    -------
    dict

    Examples
    --------
    >>> {"backend", "python", "nntk_array", "numpy"} <= set(environment("numpy"))
    True
    """
    import array_api_compat

    env = {
        "backend": backend,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "nntk_array": __version__,
        "numpy": np.__version__,
        "array_api_compat": array_api_compat.__version__,
    }
    for name in ("torch", "jax", "cupy", "matplotlib"):
        module = sys.modules.get(name)
        if module is not None:
            env[name] = str(getattr(module, "__version__", "unknown"))
    return env


def _csv(result: StudyResult) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        [
            "target",
            "network",
            "kernel",
            "ridge_mse_mean",
            "ridge_mse_sd",
            "delta_ridge_mean",
            "delta_ridge_low",
            "delta_ridge_high",
            "verdict",
            "flow_mse_mean",
            "flow_mse_sd",
            "delta_flow_mean",
            "delta_flow_low",
            "delta_flow_high",
            "flow_verdict",
            "band_error_mean",
            "alignment_mean",
            "sigma",
            "samples_mean",
            "error_bound_mean",
        ]
    )

    def get(cell: dict[str, Any] | None, key: str) -> Any:
        return "" if cell is None else cell[key]

    for r in summarize(result):
        writer.writerow(
            [
                r["target"],
                r["network"],
                r["kernel"],
                get(r["ridge_mse"], "mean"),
                get(r["ridge_mse"], "sd"),
                get(r["delta_ridge"], "mean"),
                get(r["delta_ridge"], "low"),
                get(r["delta_ridge"], "high"),
                get(r["delta_ridge"], "verdict"),
                get(r["flow_mse"], "mean"),
                get(r["flow_mse"], "sd"),
                get(r["delta_flow"], "mean"),
                get(r["delta_flow"], "low"),
                get(r["delta_flow"], "high"),
                get(r["delta_flow"], "verdict"),
                get(r["band_error"], "mean"),
                get(r["alignment"], "mean"),
                "" if r["sigma"] is None else r["sigma"],
                "" if r["samples"] is None else r["samples"],
                "" if r["error_bound"] is None else r["error_bound"],
            ]
        )
    return out.getvalue()


def write_outputs(result: StudyResult, directory: str | Path, *, backend: str) -> list[Path]:
    """Write the report into ``directory`` (which must exist): ``table.md``, ``table.csv``,
    ``results.json`` (every per-seed number, the configuration, the protocol and the
    versions) and, with matplotlib, the figures.

    Parameters
    ----------
    result : StudyResult
    directory : str or Path
    backend : str

    Returns
    -------
    list of Path
        The files written.

    Examples
    --------
    >>> import numpy as np
    >>> from dataclasses import replace
    >>> from nntk_array.study import StudyConfig, run_study
    >>> cfg = replace(StudyConfig.quick(), width=8, n_train=9, n_test=8, dynamics_widths=(8,),
    ...               dynamics_steps=2, convergence_samples=(32,))
    >>> result = run_study(np, dtype=np.float64, config=cfg)
    >>> import json, tempfile
    >>> with tempfile.TemporaryDirectory() as out:
    ...     files = write_outputs(result, out, backend="numpy")
    ...     data = json.loads((files[2]).read_text())
    >>> [f.name for f in files[:3]], len(data["comparison"]) == len(result.comparison)
    (['table.md', 'table.csv', 'results.json'], True)
    """
    out = Path(directory)
    files = []
    path = out / "table.md"
    path.write_text(markdown_report(result, backend=backend))
    files.append(path)
    path = out / "table.csv"
    path.write_text(_csv(result))
    files.append(path)
    payload = {
        "study": "python -m nntk_array reproduce",
        "protocol": protocol(result.config),
        "config": asdict(result.config),
        "environment": environment(backend),
        "seconds": result.seconds,
        "summary": summarize(result),
        "comparison": result.comparison,
        "dynamics": result.dynamics,
        "spectra": result.spectra,
        "convergence": result.convergence,
    }
    path = out / "results.json"
    path.write_text(json.dumps(payload, indent=1, allow_nan=True))
    files.append(path)
    return files + plot_study(result, out)


def plot_study(result: StudyResult, directory: str | Path) -> list[Path]:
    """Write the figures into ``directory``; none without matplotlib.

    ``fits.png`` (seed-0 ridge fits of the 1-D targets per network), ``kernels.png``
    (K(x, x0)/K(x0, x0) at the test input x0 next to 0), ``spectra.png`` (normalized
    eigenvalues and cumulative target energy), ``dynamics.png`` (distance and kernel change
    against width) and ``convergence.png`` (centred error against M).

    Parameters
    ----------
    result : StudyResult
    directory : str or Path

    Returns
    -------
    list of Path
        The figures written (empty without matplotlib).

    Examples
    --------
    >>> import numpy as np
    >>> from dataclasses import replace
    >>> from nntk_array.study import StudyConfig, run_study
    >>> cfg = replace(StudyConfig.quick(), width=8, n_train=9, n_test=8, dynamics_widths=(8,),
    ...               dynamics_steps=2, convergence_samples=(32,))
    >>> result = run_study(np, dtype=np.float64, config=cfg)
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as out:
    ...     names = [f.name for f in plot_study(result, out)]
    >>> names in ([], ["fits.png", "kernels.png", "spectra.png", "dynamics.png",
    ...                "convergence.png"])
    True
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    from . import figures

    out = Path(directory)
    written = []
    for name, draw in figures.FIGURES.items():
        fig = draw(plt, result)
        path = out / f"{name}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written
