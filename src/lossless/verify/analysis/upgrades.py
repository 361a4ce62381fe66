"""The per-upgrade breakdown of a run with ``--upgrades N`` (and the restarts of every run).

Upgrade k owns the requests *intended* from its ``UPGRADE_START`` until the next upgrade's (the
first also owns the load before it, the last the load after it), so the per-upgrade counts add
up to the run's totals. For each: its versions, when it started, how long its rollout took
(``ROLLOUT_START`` → ``ROLLOUT_END``), requests, failures, the failures an injected fault caused
(:class:`~lossless.verify.analysis.faults.Attribution`) and the rest (``upgrade_failures``), and
the container restarts in its span.

:func:`iter_records` streams ``records.csv`` row by row: the breakdown holds one counter set per
upgrade, never the records, so its memory does not grow with the requests.
"""

from __future__ import annotations

import bisect
import csv
import dataclasses
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from lossless.errors import LosslessError
from lossless.verify.analysis.faults import Attribution
from lossless.verify.model import Event, EventKind, Record
from lossless.verify.results import RECORD_COLUMNS, RECORDS, _parse_record

__all__ = ["UpgradeSplit", "UpgradeStats", "iter_records", "per_upgrade", "restart_counts"]


def iter_records(directory: Path, warnings: list[str] | None = None) -> Iterator[Record]:
    """The records of a run directory one at a time, in file (completion) order. A last line
    cut short by a crash is skipped (and said in ``warnings``, as ``read_run`` does); a corrupt
    line is a ``LosslessError`` naming FILE:LINE."""
    path = directory / RECORDS
    try:
        f = open(path, newline="", encoding="utf-8")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise LosslessError(f"{path}: cannot read: {exc}") from None
    with f:
        rows = csv.reader(f)
        header = next(rows, None)
        if header is None or tuple(header) != RECORD_COLUMNS:
            raise LosslessError(f"{path}:1: not a records file")
        pending: tuple[int, list[str]] | None = None
        for number, row in enumerate(rows, start=2):
            if pending is not None:  # a short row that was not the last one: corrupt
                raise LosslessError(f"{path}:{pending[0]}: corrupt record: short row")
            if len(row) < len(RECORD_COLUMNS):
                pending = (number, row)  # the cut last line of an interrupted run, or corrupt
                continue
            try:
                yield _parse_record(row)
            except ValueError as exc:
                raise LosslessError(f"{path}:{number}: corrupt record: {exc}") from None
        if pending is not None and warnings is not None:
            warnings.append(f"{path}:{pending[0]}: incomplete last line ignored (run interrupted?)")


@dataclasses.dataclass
class UpgradeStats:
    """One upgrade's figures (see the module docstring)."""

    index: int
    versions: str
    start: float
    rollout_s: float | None = None
    requests: int = 0
    failures: int = 0
    fault_failures: int = 0
    restarts: int = 0

    @property
    def upgrade_failures(self) -> int:
        return self.failures - self.fault_failures

    def to_json(self) -> dict[str, object]:
        return {
            "upgrade": self.index,
            "versions": self.versions,
            "start": round(self.start, 6),
            "rollout_s": None if self.rollout_s is None else round(self.rollout_s, 3),
            "requests": self.requests,
            "failures": self.failures,
            "fault_failures": self.fault_failures,
            "upgrade_failures": self.upgrade_failures,
            "restarts": self.restarts,
        }


def restart_counts(events: Iterable[Event]) -> dict[str, int]:
    """Container restarts per replica (``RESTARTED`` events), replicas without any left out."""
    counts: dict[str, int] = {}
    for e in events:
        if e.kind is EventKind.RESTARTED:
            counts[e.replica] = counts.get(e.replica, 0) + 1
    return dict(sorted(counts.items()))


class UpgradeSplit:
    """The per-upgrade breakdown as an accumulator: built from the timeline, fed each record
    once (``add``, any order), read from :attr:`stats` (empty without ``UPGRADE_START``)."""

    def __init__(self, events: Sequence[Event], *, settle: float = 0.0) -> None:
        ordered = sorted(events, key=lambda e: e.t)
        self.stats: list[UpgradeStats] = []
        for e in ordered:
            if e.kind is EventKind.UPGRADE_START:
                versions = e.detail.partition(" ")[2]
                self.stats.append(UpgradeStats(len(self.stats) + 1, versions, e.t))
        self._starts = [s.start for s in self.stats]
        if not self.stats:
            return
        rollout_start: float | None = None
        for e in ordered:
            if e.kind is EventKind.ROLLOUT_START:
                rollout_start = e.t
            elif e.kind is EventKind.ROLLOUT_END and rollout_start is not None:
                self._owner(rollout_start).rollout_s = e.t - rollout_start
                rollout_start = None
            elif e.kind is EventKind.CONTAINER_EXITED:
                self._owner(e.t).restarts += 1
        self._attribution = Attribution(ordered, settle=settle)

    def _owner(self, t: float) -> UpgradeStats:
        return self.stats[max(0, bisect.bisect_right(self._starts, t) - 1)]

    def add(self, r: Record) -> None:
        if not self.stats:
            return
        s = self._owner(r.intended)
        s.requests += 1
        if r.ok or r.error.is_artefact:
            return
        s.failures += 1
        w = self._attribution.match(r)
        if w is not None and w.kind.startswith("fault:"):
            s.fault_failures += 1


def per_upgrade(
    events: Sequence[Event], records: Iterable[Record], *, settle: float = 0.0
) -> list[UpgradeStats]:
    """The breakdown (empty when the timeline has no ``UPGRADE_START``: an older run, or one
    interrupted before its first rollout)."""
    split = UpgradeSplit(events, settle=settle)
    if split.stats:
        for r in records:
            split.add(r)
    return split.stats
