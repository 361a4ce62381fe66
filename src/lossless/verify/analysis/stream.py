"""Bounded-memory pieces of the analysis (issue 16: memory flat with the number of requests).

:class:`Distribution` keeps a latency or lag distribution as counts of whole microseconds: its
memory grows with the number of *distinct* values (at most one per microsecond of the range, a
few thousand in practice), not with the number of requests, and its nearest-rank percentiles are
exact at the microsecond the reports print (``round(ms, 3)``). ``max`` and ``mean`` are exact.

:func:`analyze_dir` analyses a run directory while streaming ``records.csv`` row by row, so
``lossless verify`` and ``lossless report`` hold one record at a time plus the failed ones.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lossless.verify.analysis.core import Analysis

__all__ = ["Distribution", "analyze_dir"]

_PERCENTILES = (("p50", 0.50), ("p90", 0.90), ("p95", 0.95), ("p99", 0.99), ("p999", 0.999))


class Distribution:
    """Values in milliseconds, counted per microsecond (see the module docstring)."""

    __slots__ = ("counts", "maximum", "n", "total")

    def __init__(self) -> None:
        self.counts: Counter[int] = Counter()
        self.n = 0
        self.total = 0.0
        self.maximum = -math.inf

    def add(self, ms: float) -> None:
        self.counts[round(ms * 1000)] += 1
        self.n += 1
        self.total += ms
        if ms > self.maximum:
            self.maximum = ms

    def percentiles(self) -> dict[str, float]:
        """Nearest-rank p50…p999 (to the microsecond), exact max and mean; {} when empty."""
        if not self.n:
            return {}
        ranks = sorted(
            (min(self.n - 1, max(0, math.ceil(q * self.n) - 1)), name) for name, q in _PERCENTILES
        )
        out: dict[str, float] = {}
        seen = 0
        i = 0
        for value in sorted(self.counts):
            seen += self.counts[value]
            while i < len(ranks) and ranks[i][0] < seen:
                out[ranks[i][1]] = value / 1000
                i += 1
            if i == len(ranks):
                break
        result = {name: out[name] for name, _ in _PERCENTILES}
        result["max"] = self.maximum
        result["mean"] = self.total / self.n
        return result


def analyze_dir(directory: Path) -> Analysis:
    """Analyse a run directory, streaming its records (see the module docstring)."""
    from lossless.verify.analysis.core import Analyzer
    from lossless.verify.analysis.upgrades import iter_records
    from lossless.verify.results import SETTINGS, TIMELINE, _parse_event, _read_settings, read_jsonl

    events = read_jsonl(directory / TIMELINE, _parse_event, what="event")
    analyzer = Analyzer(events, _read_settings(directory / SETTINGS))
    warnings: list[str] = []
    for record in iter_records(directory, warnings):
        analyzer.add(record)
    return analyzer.close(warnings)
