"""Bounded-memory pieces of the analysis (issue 16: memory flat with the number of requests).

:class:`Distribution` keeps a latency or lag distribution in buckets of three significant digits
(whole microseconds below 1 ms, then 10 µs up to 10 ms, 100 µs up to 100 ms...): at most 900
buckets per decade whatever the number of requests, each with its count and the smallest value
it saw. A nearest-rank percentile is that smallest value of the bucket the rank falls in: an
observed value at most one bucket below the exact one, so within 1 % of it (0.1 % at the top of a
decade; exact below 1 ms, where a bucket is one microsecond). ``max`` and ``mean`` are exact.

:func:`analyze_dir` analyses a run directory while streaming ``records.csv`` row by row (the
one pass of :func:`lossless.verify.analysis.report.analyse_dir`), so ``lossless verify`` holds
one record at a time plus the failed ones.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lossless.verify.analysis.core import Analysis

__all__ = ["Distribution", "analyze_dir"]

_PERCENTILES = (("p50", 0.50), ("p90", 0.90), ("p95", 0.95), ("p99", 0.99), ("p999", 0.999))


def _bucket(us: int) -> int:
    """The bucket of a value in whole microseconds: its first three significant digits."""
    if us < 0:
        return -_bucket(-us)
    if us < 1000:
        return us
    scale: int = 10 ** (len(str(us)) - 3)
    return us // scale * scale


class Distribution:
    """Values in milliseconds, in bounded buckets (see the module docstring)."""

    __slots__ = ("buckets", "maximum", "n", "total")

    def __init__(self) -> None:
        self.buckets: dict[int, list[float]] = {}  # bucket: [count, smallest value]
        self.n = 0
        self.total = 0.0
        self.maximum = -math.inf

    def add(self, ms: float) -> None:
        key = _bucket(round(ms * 1000))
        slot = self.buckets.get(key)
        if slot is None:
            self.buckets[key] = [1, ms]
        else:
            slot[0] += 1
            if ms < slot[1]:
                slot[1] = ms
        self.n += 1
        self.total += ms
        if ms > self.maximum:
            self.maximum = ms

    def percentiles(self) -> dict[str, float]:
        """Nearest-rank p50…p999, exact max and mean; {} when empty."""
        if not self.n:
            return {}
        ranks = sorted(
            (min(self.n - 1, max(0, math.ceil(q * self.n) - 1)), name) for name, q in _PERCENTILES
        )
        out: dict[str, float] = {}
        seen = 0
        i = 0
        for key in sorted(self.buckets):
            count, smallest = self.buckets[key]
            seen += int(count)
            while i < len(ranks) and ranks[i][0] < seen:
                out[ranks[i][1]] = smallest
                i += 1
            if i == len(ranks):
                break
        result = {name: out[name] for name, _ in _PERCENTILES}
        result["max"] = self.maximum
        result["mean"] = self.total / self.n
        return result


def analyze_dir(directory: Path) -> Analysis:
    """Analyse a run directory, streaming its records (see the module docstring): the analysis
    of :func:`lossless.verify.analysis.report.analyse_dir` with ``keep_records=False``."""
    from lossless.verify.analysis.report import analyse_dir

    return analyse_dir(directory, keep_records=False).analysis
