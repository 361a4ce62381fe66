"""Analyse a run once, render it many times.

:func:`analyse` reads nothing: it takes a :class:`~lossless.verify.results.Run` read once by
:func:`~lossless.verify.results.read_run` and returns a :class:`Report` holding the run, its
:class:`~lossless.verify.analysis.core.Analysis` (with the proxy's causes when the run went
through ``--traffic ingress``), the proxy side and the cause kind of every failed request. The
text, JSON and HTML renderers and the verdict all take a Report; none of them analyses again.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from lossless.verify.analysis.core import Analysis, analyze
from lossless.verify.analysis.kinds import CauseKind
from lossless.verify.analysis.proxy import PROXY_LOG, ProxyAnalysis, analyze_proxy, failure_kinds
from lossless.verify.analysis.streams import StreamAnalysis, analyze_streams
from lossless.verify.results import Run, read_run
from lossless.verify.stream_records import read_sessions

__all__ = ["Report", "analyse", "analyse_dir"]


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


def analyse_dir(directory: str | os.PathLike[str], *, keep_records: bool = True) -> Report:
    """Read the run directory once and analyse it (LosslessError naming the file when it is
    missing or corrupt).

    ``keep_records=False`` (``lossless verify`` without ``--html`` or ``--export``): the records
    are streamed through the analysis and not kept (``report.run.records`` is empty), so memory
    does not grow with the number of requests (issue 16); a run through the ingress model, whose
    proxy join needs every record, is read whole all the same."""
    path = Path(directory)
    if keep_records or (path / PROXY_LOG).exists():
        return analyse(read_run(path))
    from lossless.verify.analysis.bounded import analyze_dir

    run = read_run(path, records=False)
    analysis = analyze_dir(path)
    run.warnings.extend(analysis.warnings)
    return Report(run, analysis, None, failure_kinds(analysis.causes), {}, _streams(run))
