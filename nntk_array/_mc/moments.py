"""Running moments of equally shaped arrays, in constant memory."""

from __future__ import annotations

from .._typing import Array, Namespace

__all__ = ["RunningMoments"]


class RunningMoments:
    """Welford's running mean and sum of squared deviations of equally shaped arrays."""

    def __init__(self) -> None:
        self.count = 0
        self.mean: Array = None
        self.m2: Array = None

    def add(self, xp: Namespace, x: Array) -> None:
        self.count += 1
        if self.mean is None:
            self.mean, self.m2 = x, xp.zeros_like(x)
            return
        delta = x - self.mean
        self.mean = self.mean + delta / self.count
        self.m2 = self.m2 + delta * (x - self.mean)
