"""Progress reporting on stderr: a bar for the study, a line printer for single calls."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

__all__ = ["ProgressBar", "progress_printer"]


class ProgressBar:
    """A text progress bar: ``[#####-----]  50%  12/24  0:31 elapsed, ~0:31 left  label``.

    On a terminal the bar is redrawn in place; elsewhere (a log file, a pipe) one line is
    written per step. Call the bar with a label after each unit of work.

    Parameters
    ----------
    total : int
        Number of units of work.
    stream : file, optional
        Where to write; the current ``sys.stderr`` by default.
    width : int, default 30
        Characters of the bar.

    Examples
    --------
    >>> import io
    >>> out = io.StringIO()
    >>> bar = ProgressBar(2, stream=out)
    >>> bar("first"); bar("second"); bar.close()
    >>> lines = out.getvalue().splitlines()
    >>> lines[0][:16], "100%" in lines[1], lines[1].endswith("second")
    ('[###############', True, True)
    """

    def __init__(self, total: int, *, stream: TextIO | None = None, width: int = 30) -> None:
        self.total = max(1, total)
        self.done = 0
        self.stream = stream
        self.width = width
        self.start = time.perf_counter()

    def _out(self) -> Any:
        return sys.stderr if self.stream is None else self.stream

    def __call__(self, label: str) -> None:
        """Count one unit of work as done and redraw.

        Parameters
        ----------
        label : str
            What was just finished.

        Examples
        --------
        >>> import io
        >>> out = io.StringIO()
        >>> ProgressBar(4, stream=out)("step"); "25%" in out.getvalue()
        True
        """
        self.done = min(self.done + 1, self.total)
        frac = self.done / self.total
        elapsed = time.perf_counter() - self.start
        left = elapsed / frac - elapsed if frac > 0 else 0.0
        filled = round(frac * self.width)
        line = (
            f"[{'#' * filled}{'-' * (self.width - filled)}] {frac:4.0%} "
            f"{self.done}/{self.total}  {_clock(elapsed)} elapsed, ~{_clock(left)} left  {label}"
        )
        out = self._out()
        if out.isatty():
            out.write("\r\x1b[2K" + line)
        else:
            out.write(line + "\n")
        out.flush()

    def close(self) -> None:
        """End the bar's line on a terminal.

        Examples
        --------
        >>> import io
        >>> ProgressBar(1, stream=io.StringIO()).close()
        """
        out = self._out()
        if out.isatty():
            out.write("\n")
            out.flush()


def _clock(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return f"{m}:{s:02d}"


def progress_printer(stream: TextIO | None = None) -> Callable[[str], None]:
    """A progress callback that prints the elapsed time and the message, one line each.

    For the ``progress`` argument of :func:`nntk_array.nntk` (one line per round of a
    requested precision).

    Parameters
    ----------
    stream : file, optional
        Where to print; the current ``sys.stderr`` (looked up at each call) by default.

    Returns
    -------
    callable
        ``say(message)``.

    Examples
    --------
    >>> import io
    >>> out = io.StringIO()
    >>> say = progress_printer(out)
    >>> say("hello")
    >>> out.getvalue().endswith("s] hello\\n")
    True
    """
    start = time.perf_counter()

    def say(msg: str) -> None:
        out = sys.stderr if stream is None else stream
        print(f"[{time.perf_counter() - start:6.1f} s] {msg}", file=out, flush=True)

    return say
