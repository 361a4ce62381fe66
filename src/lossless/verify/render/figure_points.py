"""What the HTML report's figure needs of the requests, gathered in one pass in bounded memory
(issue 16: memory flat in the number of requests).

:class:`RequestPoints` is fed every record once (``add``, in any order: the analysis streams
``records.csv`` through it, :func:`RequestPoints.of` feeds a run held in memory) and keeps:

- every failed request (an error that is not a generator artefact): the figure draws them all;
- at most :data:`MAX_OK_POINTS` successful requests, and as many artefacts: while there are no
  more, all of them; beyond, a time-binned decimation (:class:`_Decimator`): at most
  ``MAX_OK_POINTS // 4`` bins whose width doubles as the run grows, each keeping its slowest
  request (latency spikes stay visible) and up to three others evenly spread over its arrivals;
- the time bins of the percentile and throughput rows (:class:`_Grid`): per bin, every
  successful latency in a :class:`~lossless.verify.analysis.bounded.Distribution` (percentiles
  within 1 %, max exact), the requests and the failures. Three grids (widths ``(1, 2 or 5) * 10^k / 100``
  seconds, each at most :data:`BINS` + 1 bins, a width growing tenfold when the run outgrows it)
  hold, at the end, the one nice width the figure picks, merged by a power of ten;
- the span: the earliest event or send, the latest event, send or end.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from lossless.verify.analysis.bounded import Distribution
from lossless.verify.model import Event, Record
from lossless.verify.results import Run

__all__ = ["BINS", "MAX_OK_POINTS", "BinRow", "RequestPoints"]

MAX_OK_POINTS = 8000  # successful requests drawn at most (failures: all of them)
BINS = 120  # time bins of the percentile and throughput rows (at most)
_PER_BIN = 4  # decimated points a bin keeps: its slowest and three others


def latency_ms(r: Record) -> float:
    """A record's latency as the figure draws it (ms, 0.01 without an end)."""
    if r.end is None:
        return 0.01
    ms = max(0.01, (r.end - r.sent) * 1000)
    return round(ms, 2) if ms < 10 else round(ms, 1)


def _rank(r: Record) -> int:
    """A pseudo-random rank of a request fixed by its seq (Knuth's multiplicative hash): the
    "others" a bin keeps are those of lowest rank, whatever the order the records came in."""
    return (r.seq * 2654435761) % 2**32


def _slower(a: Record, b: Record) -> bool:
    """``a`` is drawn as slower than ``b`` (ties: the lower seq)."""
    la, lb = latency_ms(a), latency_ms(b)
    return la > lb or (la == lb and a.seq < b.seq)


class _Bin:
    """A time bin's kept records: its slowest, and the ``_PER_BIN - 1`` others of lowest
    :func:`_rank` (the same records whatever the order they came in, merged or not)."""

    __slots__ = ("others", "slowest")

    def __init__(self, r: Record) -> None:
        self.slowest = r
        self.others: list[Record] = []

    def add(self, r: Record) -> None:
        if _slower(r, self.slowest):
            r, self.slowest = self.slowest, r
        self.others.append(r)
        if len(self.others) >= _PER_BIN:
            self.others.sort(key=_rank)
            del self.others[_PER_BIN - 1 :]

    def merge(self, other: _Bin) -> None:
        self.add(other.slowest)
        for r in other.others:
            self.add(r)

    def kept(self) -> list[Record]:
        return [self.slowest, *self.others]


class _Decimator:
    """At most ``limit`` of a stream of records (see the module docstring)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.n = 0
        self.all: list[Record] | None = []  # every record while there are at most ``limit``
        self.width = 0.001
        self.bins: dict[int, _Bin] = {}

    def add(self, r: Record) -> None:
        self.n += 1
        if self.all is not None:
            self.all.append(r)
            if len(self.all) <= self.limit:
                return
            pending, self.all = self.all, None
            for p in pending:
                self._bin(p)
            return
        self._bin(r)

    def _bin(self, r: Record) -> None:
        key = math.floor(r.sent / self.width)
        b = self.bins.get(key)
        if b is None:
            self.bins[key] = _Bin(r)
            self._fit()
        else:
            b.add(r)

    def _fit(self) -> None:
        """Double the bins' width until at most ``limit // 4`` bins span the records."""
        while max(self.bins) - min(self.bins) + 1 > max(1, self.limit // _PER_BIN):
            merged: dict[int, _Bin] = {}
            for key in sorted(self.bins):
                b = self.bins[key]
                into = merged.get(key // 2)
                if into is None:
                    merged[key // 2] = b
                else:
                    into.merge(b)
            self.bins = merged
            self.width *= 2

    def kept(self) -> list[Record]:
        """The records kept, by ``seq``."""
        if self.all is not None:
            return sorted(self.all, key=lambda r: r.seq)
        return sorted((r for b in self.bins.values() for r in b.kept()), key=lambda r: r.seq)


class BinRow:
    """One time bin of the percentile and throughput rows."""

    __slots__ = ("failed", "latencies", "requests")

    def __init__(self) -> None:
        self.latencies = Distribution()  # ms, successful requests with an end
        self.requests = 0
        self.failed = 0

    def merge(self, other: BinRow) -> None:
        for key, (count, smallest) in other.latencies.buckets.items():
            slot = self.latencies.buckets.get(key)
            if slot is None:
                self.latencies.buckets[key] = [count, smallest]
            else:
                slot[0] += count
                slot[1] = min(slot[1], smallest)
        self.latencies.n += other.latencies.n
        self.latencies.total += other.latencies.total
        self.latencies.maximum = max(self.latencies.maximum, other.latencies.maximum)
        self.requests += other.requests
        self.failed += other.failed


class _Grid:
    """Bins of width ``base * 10^k`` (k growing so that the span holds at most BINS)."""

    def __init__(self, base: float) -> None:
        self.base = base
        self.width = base
        self.bins: dict[int, BinRow] = {}

    def add(self, r: Record, ok_ms: float | None, failed: bool) -> None:
        key = math.floor(r.sent / self.width)
        row = self.bins.get(key)
        if row is None:
            row = self.bins[key] = BinRow()
        row.requests += 1
        if failed:
            row.failed += 1
        if ok_ms is not None:
            row.latencies.add(ok_ms)

    def fit(self, span: float) -> None:
        while span / self.width > BINS:
            self.bins = _coarser(self.bins, 10)
            self.width = float(f"{self.width * 10:.6g}")


def _coarser(bins: dict[int, BinRow], factor: int) -> dict[int, BinRow]:
    merged: dict[int, BinRow] = {}
    for key in sorted(bins):
        into = merged.get(key // factor)
        if into is None:
            merged[key // factor] = bins[key]
        else:
            into.merge(bins[key])
    return merged


class RequestPoints:
    """The figure's view of the requests (see the module docstring): ``open(run)`` once,
    ``add(record)`` for each, ``close()``, then read :attr:`failed`, :meth:`points`,
    :meth:`rows`."""

    def __init__(self) -> None:
        self.n = 0
        self.failed: list[Record] = []  # every failure, by seq once closed
        self._samples = {"ok": _Decimator(MAX_OK_POINTS), "artefact": _Decimator(MAX_OK_POINTS)}
        self._grids = [_Grid(0.01), _Grid(0.02), _Grid(0.05)]
        self.start = math.inf
        self.end = -math.inf

    @classmethod
    def of(cls, events: Sequence[Event], records: Iterable[Record]) -> RequestPoints:
        """The points of records held in memory (the same as when streamed)."""
        points = cls()
        points.open_events(events)
        for r in records:
            points.add(r)
        points.close()
        return points

    def open(self, run: Run) -> None:
        """The run's timeline widens the span (a :class:`RecordSink` of ``analyse_dir``)."""
        self.open_events(run.events)

    def open_events(self, events: Sequence[Event]) -> None:
        for e in events:
            self.start = min(self.start, e.t)
            self.end = max(self.end, e.t)

    def add(self, r: Record) -> None:
        self.n += 1
        self.start = min(self.start, r.sent)
        self.end = max(self.end, r.sent if r.end is None else max(r.sent, r.end))
        ok = r.ok
        failed = not ok and not r.error.is_artefact
        if failed:
            self.failed.append(r)
        else:
            self._samples["ok" if ok else "artefact"].add(r)
        ok_ms = (r.end - r.sent) * 1000 if ok and r.end is not None else None
        span = self.end - self.start
        for grid in self._grids:
            grid.add(r, ok_ms, failed)
            grid.fit(span)

    def close(self) -> None:
        self.failed.sort(key=lambda r: r.seq)

    @property
    def span(self) -> tuple[float, float]:
        """(first, last) run-relative second of the figure (at least 1 ms long)."""
        start = 0.0 if math.isinf(self.start) else self.start
        end = 1.0 if math.isinf(self.end) else self.end
        return start, max(end, start + 0.001)

    def points(self, outcome: str) -> tuple[list[Record], int]:
        """The kept records of ``ok`` or ``artefact``, and how many were left out."""
        sample = self._samples[outcome]
        kept = sample.kept()
        return kept, sample.n - len(kept)

    def rows(self) -> tuple[float, int, list[BinRow | None]]:
        """The bins of the percentile and throughput rows: (width, index of the first bin,
        one row per bin from the span's start, None where a bin had no request)."""
        t0, t1 = self.span
        raw = max((t1 - t0) / BINS, 20 * (t1 - t0) / max(1, self.n))
        width = _nice_bin(raw)
        bins: dict[int, BinRow] | None = None
        for grid in self._grids:  # the one whose width divides the nice width (module doc)
            factor = round(width / grid.width)
            if factor >= 1 and math.isclose(grid.width * factor, width, rel_tol=1e-9):
                bins = _coarser(grid.bins, factor) if factor > 1 else grid.bins
                break
        if bins is None:  # pragma: no cover - every nice width is a grid's times a power of 10
            raise AssertionError(f"no grid for a bin of {width} s")
        first = math.floor(t0 / width)
        last = max(bins, default=first - 1)
        return width, first, [bins.get(first + b) for b in range(0, last - first + 1)]


def _nice_bin(raw: float) -> float:
    """The smallest of 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5 ... ≥ ``raw``."""
    if raw <= 0.01:
        return 0.01
    exp = 10.0 ** math.floor(math.log10(raw))
    for m in (1, 2, 5):
        if m * exp >= raw:
            return float(f"{m * exp:.6g}")
    return float(f"{10 * exp:.6g}")
