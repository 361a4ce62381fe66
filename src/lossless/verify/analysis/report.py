"""Analyse a run once, render it many times.

:func:`analyse` reads nothing: it takes a :class:`~lossless.verify.results.Run` read once by
:func:`~lossless.verify.results.read_run` and returns a :class:`Report` holding the run, its
:class:`~lossless.verify.analysis.core.Analysis` (with the proxy's causes when the run went
through ``--traffic ingress``), the proxy side and the cause kind of every failed request. The
text, JSON and HTML renderers and the verdict all take a Report; none of them analyses again.

:func:`analyse_dir` reads a run directory in one pass over ``records.csv``: every record goes
through the analysis, the per-upgrade split and the caller's :class:`RecordSink` objects (the
HTML figure's points, a vegeta export) as it is read, and none is kept unless asked
(``keep_records``), so memory stays flat in the number of requests (issue 16).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from lossless.verify.analysis.core import LAG_TAIL_FLOOR, Analysis, Analyzer, _settle, analyze
from lossless.verify.analysis.kinds import CauseKind
from lossless.verify.analysis.proxy import PROXY_LOG, ProxyAnalysis, analyze_proxy, failure_kinds
from lossless.verify.analysis.streams import StreamAnalysis, analyze_streams
from lossless.verify.analysis.upgrades import UpgradeSplit, UpgradeStats, iter_records
from lossless.verify.model import Record
from lossless.verify.results import Run, read_run
from lossless.verify.stream_records import read_sessions

__all__ = ["RecordSink", "Report", "analyse", "analyse_dir"]


class RecordSink(Protocol):
    """Something more made of the records in the analysis' one pass: ``open(run)`` first (the
    run's timeline and settings; ``run.records`` may be empty), then ``add(record)`` once per
    record in any order, then ``close()`` (also when the pass fails)."""

    def open(self, run: Run) -> None: ...

    def add(self, record: Record) -> None: ...

    def close(self) -> None: ...


@dataclasses.dataclass(frozen=True)
class Report:
    """One run and everything computed from it.

    ``analysis`` is the analysis to show (the proxy's when ``proxy`` is set); ``kinds`` maps the
    seq of every failed request (and every request a proxy retry saved) to its cause kind;
    ``replicas`` maps a failed request's seq to the replica it reached when a proxy named it."""

    run: Run
    analysis: Analysis
    proxy: ProxyAnalysis | None
    kinds: dict[int, CauseKind | str]
    replicas: dict[int, str]
    # the long-lived clients (streams.csv), None when the run had none (issue 13 item 3)
    streams: StreamAnalysis | None = None
    # the per-upgrade breakdown (issue 16), None when not computed (analyse() of a Run)
    upgrades: list[UpgradeStats] | None = None
    # requests later than a threshold below the analysis' lag tail floor: {threshold: count}
    late_counts: dict[float, int] = dataclasses.field(default_factory=dict)


def analyse(run: Run) -> Report:
    """Analyse ``run`` (joining the proxy's log when the directory holds one, and the
    long-lived clients' sessions when it has streams.csv). Raises LosslessError for a corrupt
    proxy log or streams file."""
    proxy = analyze_proxy(run)
    streams = _streams(run)
    if proxy is None:
        analysis = analyze(run)
        return Report(run, analysis, None, failure_kinds(analysis.causes), {}, streams)
    kinds = failure_kinds(proxy.analysis.causes)
    kinds.update((f.context.seq, f.kind) for f in proxy.failures)
    replicas = {f.context.seq: f.context.replica for f in proxy.failures}
    return Report(run, proxy.analysis, proxy, kinds, replicas, streams)


def _streams(run: Run) -> StreamAnalysis | None:
    sessions = read_sessions(run.dir, run.warnings)
    if sessions is None:
        return None
    return analyze_streams(sessions, run.events, run.settings)


def analyse_dir(
    directory: str | os.PathLike[str],
    *,
    keep_records: bool = True,
    sinks: Sequence[RecordSink] = (),
    late_threshold: float | None = None,
) -> Report:
    """Read the run directory once and analyse it (LosslessError naming the file when it is
    missing or corrupt), in one pass over its records: the analysis, the per-upgrade split
    (``Report.upgrades``), every one of ``sinks``, and, for a ``late_threshold`` below the lag
    tail's floor, the count of requests later than it (``Report.late_counts``).

    ``keep_records=False`` (``lossless verify`` and ``lossless report``): the records are
    streamed and not kept (``report.run.records`` is empty), so memory does not grow with the
    number of requests (issue 16); a run through the ingress model, whose proxy join needs
    every record, is read whole all the same (the sinks then get the records from memory)."""
    path = Path(directory)
    whole = keep_records or (path / PROXY_LOG).exists()
    run = read_run(path, records=whole)
    analyzer = None if whole else Analyzer(run.events, run.settings)
    split = UpgradeSplit(run.events, settle=_settle(run.settings))
    threshold = late_threshold if late_threshold is not None else math.inf
    count_late = threshold < LAG_TAIL_FLOOR
    late = 0
    opened: list[RecordSink] = []
    try:
        for sink in sinks:
            sink.open(run)
            opened.append(sink)
        for r in run.records if whole else iter_records(path, run.warnings):
            if analyzer is not None:
                analyzer.add(r)
            split.add(r)
            if count_late and r.sent - r.intended > threshold:
                late += 1
            for sink in sinks:
                sink.add(r)
    finally:
        for sink in opened:
            sink.close()
    if analyzer is None:
        report = analyse(run)
    else:
        analysis = analyzer.close(list(run.warnings))
        report = Report(run, analysis, None, failure_kinds(analysis.causes), {}, _streams(run))
    late_counts = {threshold: late} if count_late else {}
    return dataclasses.replace(report, upgrades=split.stats, late_counts=late_counts)
