"""The study behind ``python -m nntk_array reproduce``: local vs nonlocal NTK, fairly compared.

The paper's own protocol and numbers are not available, so every choice of this study is
ours (the report states them). Its parts, one module each:

:mod:`~nntk_array.study.models`
    networks whose local NTK fails: :class:`QuantizedMLP` (local NTK ≡ 0) and
    :class:`NoisyMLP` (a stochastic forward pass); the sign net is ``nk.MLP(...,
    activation="sign")``;
:mod:`~nntk_array.study.problems`
    the targets sign, sawtooth and ReLU on [-1, 1] and a 2-D target;
:mod:`~nntk_array.study.protocol`
    K-fold cross-validation of ridge, gradient-flow time and σ, per kernel;
:mod:`~nntk_array.study.stats`
    mean ± sd and paired differences with a Student-t interval;
:mod:`~nntk_array.study.comparison`
    the kernels of every network and their cross-validated test errors;
:mod:`~nntk_array.study.dynamics`
    trained networks against their kernels at initialization, over widths;
:mod:`~nntk_array.study.spectral`
    spectra and spectral bias;
:mod:`~nntk_array.study.convergence`
    the Monte Carlo error against M;
:mod:`~nntk_array.study.run`, :mod:`~nntk_array.study.report`,
:mod:`~nntk_array.study.figures`, :mod:`~nntk_array.study.progress`
    the driver, the tables, JSON and figures, and the progress bar.
"""

from .models import NoisyMLP, QuantizedMLP, noisy_nntk
from .progress import ProgressBar, progress_printer
from .report import format_report, markdown_report, plot_study, write_outputs
from .run import StudyConfig, StudyResult, run_study, total_steps
from .stats import paired_difference, t_quantile

__all__ = [
    "NoisyMLP",
    "ProgressBar",
    "QuantizedMLP",
    "StudyConfig",
    "StudyResult",
    "format_report",
    "markdown_report",
    "noisy_nntk",
    "paired_difference",
    "plot_study",
    "progress_printer",
    "run_study",
    "t_quantile",
    "total_steps",
    "write_outputs",
]
