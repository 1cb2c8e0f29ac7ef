"""Summaries over seeds: mean ± sd, and paired differences with a Student-t interval.

Plain Python on floats (the per-seed numbers of the report). The t quantile comes from the
closed forms of the t distribution for integer degrees of freedom (Abramowitz & Stegun
26.7.3–4) and bisection, so no SciPy is needed.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["PairedDifference", "mean_sd", "paired_difference", "t_quantile"]


def _t_central(t: float, df: int) -> float:
    """P(|T| <= t) for T ~ Student t with ``df`` degrees of freedom, t >= 0."""
    theta = math.atan(t / math.sqrt(df))
    c2, s = math.cos(theta) ** 2, math.sin(theta)
    if df % 2 == 1:
        total, term = 0.0, math.cos(theta)
        for k in range(1, (df - 1) // 2 + 1):
            total += term
            term *= c2 * (2 * k) / (2 * k + 1)
        return (2.0 / math.pi) * (theta + s * total)
    total, term = 0.0, 1.0
    for k in range(1, df // 2 + 1):
        total += term
        term *= c2 * (2 * k - 1) / (2 * k)
    return s * total


def t_quantile(p: float, df: int) -> float:
    """The p-quantile of Student's t distribution with ``df`` degrees of freedom.

    Parameters
    ----------
    p : float
        Probability in [0.5, 1).
    df : int
        Degrees of freedom, >= 1.

    Returns
    -------
    float

    Examples
    --------
    >>> round(t_quantile(0.975, 4), 4), round(t_quantile(0.975, 1), 3)
    (2.7764, 12.706)
    """
    if not 0.5 <= p < 1.0:
        raise ValueError(f"`p` must be in [0.5, 1); got {p!r}")
    if isinstance(df, bool) or not isinstance(df, int) or df < 1:
        raise ValueError(f"`df` must be an int >= 1; got {df!r}")
    target = 2.0 * p - 1.0
    lo, hi = 0.0, 1.0
    while _t_central(hi, df) < target:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _t_central(mid, df) < target:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-13 * hi:
            break
    return 0.5 * (lo + hi)


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value).

    Parameters
    ----------
    values : sequence of float

    Returns
    -------
    mean, sd : float

    Examples
    --------
    >>> mean_sd([1.0, 2.0, 3.0])
    (2.0, 1.0)
    """
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else 0.0)


@dataclass(frozen=True)
class PairedDifference:
    """Mean of per-seed differences a_s − b_s with its two-sided t interval.

    ``verdict`` is ``"lower"`` when the whole interval is below zero (a beats b at this
    level), ``"higher"`` when it is above, else ``"n.s."`` (no significant difference).
    """

    mean: float
    sd: float
    low: float
    high: float
    n: int
    level: float

    @property
    def verdict(self) -> str:
        """``"lower"``, ``"higher"`` or ``"n.s."``.

        Examples
        --------
        >>> paired_difference([1.0, 2.0, 3.0], [2.0, 3.1, 4.0]).verdict
        'lower'
        """
        if self.high < 0.0:
            return "lower"
        if self.low > 0.0:
            return "higher"
        return "n.s."


def paired_difference(
    a: Sequence[float], b: Sequence[float], *, level: float = 0.95
) -> PairedDifference:
    """The paired difference a − b over seeds: mean ± t_{(1+level)/2, n−1} sd/√n.

    Parameters
    ----------
    a, b : sequence of float
        Per-seed values, paired by position; at least two pairs.
    level : float, default 0.95
        Confidence level of the interval.

    Returns
    -------
    PairedDifference

    Examples
    --------
    >>> d = paired_difference([1.0, 2.0, 4.0], [0.0, 1.0, 2.0])
    >>> round(d.mean, 4), round(d.low, 4), round(d.high, 4), d.verdict
    (1.3333, -0.1009, 2.7676, 'n.s.')
    """
    if len(a) != len(b) or len(a) < 2:
        raise ValueError(f"need two equally long sequences of >= 2 values; got {len(a)}, {len(b)}")
    diffs = [float(x) - float(y) for x, y in zip(a, b, strict=True)]
    mean, sd = mean_sd(diffs)
    half = t_quantile(0.5 + level / 2.0, len(diffs) - 1) * sd / math.sqrt(len(diffs))
    return PairedDifference(mean, sd, mean - half, mean + half, len(diffs), level)
