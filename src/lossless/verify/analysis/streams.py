"""The analysis of the long-lived clients' sessions (``streams.csv``, see
:mod:`lossless.verify.stream_records`).

Every failed session (an outcome other than ``clean`` / ``stopped``) is joined with its
replica's timeline as the HTTP failures are (:mod:`lossless.verify.analysis.core`): its phase
and the time since the replica's deletion, endpoint removal, SIGTERM and exit, all taken at the
moment the session failed (its ``end``), and whether the client's view still routed to the
replica when it connected. Failures are then grouped into causes, first match wins:

- ``no_endpoint``: the client's view was empty when it reconnected;
- ``ingress_no_server``: behind ``--traffic ingress``, a 503 from the proxy itself (it names no
  replica);
- ``stream_cut``: a stream or connection that a terminating replica ended without a clean end
  (no terminating chunk, no close frame, a reset mid-stream, a close code other than
  1000/1001/1012);
- ``listener_closed``: a reconnect refused (or reset / timed out before a response) by a
  terminating replica that the client still routed to;
- ``draining_5xx``: a reconnect answered 5xx by a terminating replica;
- ``not_ready``: a reconnect to a replica not ready yet;
- ``unexplained``: anything else.

A clean end followed by a reconnect is not a failure; ``reconnects`` counts the sessions after
a stream's first.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections import Counter
from collections.abc import Sequence
from typing import Any

from lossless.verify.analysis.core import Cause, _index, _ReplicaTimeline
from lossless.verify.analysis.kinds import CauseKind
from lossless.verify.model import Event, EventKind
from lossless.verify.stream_records import StreamOutcome, StreamSession

__all__ = ["StreamAnalysis", "StreamCause", "StreamFailure", "analyze_streams"]

_TERMINATING = ("terminating-before-sigterm", "after-sigterm", "after-exit")
_CONNECT_FAILURES = (StreamOutcome.REFUSED, StreamOutcome.CONNECT_TIMEOUT, StreamOutcome.RESET)


def _since(t: float, ref: float | None) -> float | None:
    return None if ref is None else round(t - ref, 6)


@dataclasses.dataclass(frozen=True)
class StreamFailure:
    """One failed session joined with its replica's timeline; ``since_*`` are seconds from that
    event to the failure (``end``), negative when the event came later, ``None`` without it."""

    stream: str
    session: int
    client: int
    replica: str
    outcome: str
    opened: float
    end: float
    lifetime: float  # end - opened
    status: int
    close_code: int
    phase: str  # the replica's phase at ``end``
    since_deleting: float | None
    since_endpoint_removed: float | None
    since_sigterm: float | None
    since_exit: float | None
    in_view: bool | None  # the client's view routed to the replica when the session opened
    detail: str
    kind: CauseKind = CauseKind.UNEXPLAINED

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


StreamCause = Cause[StreamFailure]
"""Failed sessions with one explanation: the HTTP :class:`~lossless.verify.analysis.core.Cause`
with sessions as examples (no seqs)."""


@dataclasses.dataclass(frozen=True)
class StreamAnalysis:
    """The long-lived clients of one run (``--json``'s ``streams`` section).

    ``streams`` / ``websockets``: how many of each were kept open; ``sessions``: sessions
    recorded; ``reconnects``: sessions after a stream's first; ``clean_ends``: sessions the
    server ended cleanly; ``stopped``: open when the run stopped; ``failures``: failed sessions
    (counted by the verdict), ``failures_by_outcome``; ``causes``; ``failed``: every failure's
    context; ``sessions_list``: every session (for the report's timeline)."""

    streams: int
    websockets: int
    sessions: int
    reconnects: int
    clean_ends: int
    stopped: int
    failures: int
    failures_by_outcome: dict[str, int]
    causes: list[StreamCause]
    failed: list[StreamFailure]
    sessions_list: list[StreamSession]

    def to_json(self) -> dict[str, Any]:
        return {
            "streams": self.streams,
            "websockets": self.websockets,
            "sessions": self.sessions,
            "reconnects": self.reconnects,
            "clean_ends": self.clean_ends,
            "stopped": self.stopped,
            "failures": self.failures,
            "failures_by_outcome": self.failures_by_outcome,
            "causes": [c.to_json() for c in self.causes],
            "failed": [f.to_json() for f in self.failed],
        }


def _context(s: StreamSession, tl: _ReplicaTimeline | None) -> StreamFailure:
    if tl is None:
        phase, deleting, removed, sigterm, exited, in_view = "unknown", None, None, None, None, None
    else:
        phase = tl.phase(s.end)
        deleting = tl.at(EventKind.DELETING)
        removed = tl.at(EventKind.ENDPOINT_REMOVED)
        sigterm = tl.at(EventKind.SIGTERM)
        exited = tl.at(EventKind.EXITED)
        in_view = tl.in_view(s.client, s.opened)
    return StreamFailure(
        stream=s.name,
        session=s.session,
        client=s.client,
        replica=s.replica,
        outcome=s.outcome.value,
        opened=s.opened,
        end=s.end,
        lifetime=round(s.end - s.opened, 6),
        status=s.status,
        close_code=s.close_code,
        phase=phase,
        since_deleting=_since(s.end, deleting),
        since_endpoint_removed=_since(s.end, removed),
        since_sigterm=_since(s.end, sigterm),
        since_exit=_since(s.end, exited),
        in_view=in_view,
        detail=s.detail,
    )


def _kind(s: StreamSession, f: StreamFailure, ingress: bool) -> CauseKind:
    outcome = s.outcome
    if outcome is StreamOutcome.NO_ENDPOINT:
        return CauseKind.NO_ENDPOINT
    if ingress and f.phase == "unknown" and s.status == 503:
        # HAProxy's own 503 names no replica (no x-lossless-replica header)
        return CauseKind.INGRESS_NO_SERVER
    terminating = f.phase in _TERMINATING
    if outcome in (StreamOutcome.CUT, StreamOutcome.CLOSE_ERROR) and terminating:
        return CauseKind.STREAM_CUT
    if outcome in _CONNECT_FAILURES and terminating:
        return CauseKind.LISTENER_CLOSED
    if outcome is StreamOutcome.HTTP_ERROR and s.status >= 500 and terminating:
        return CauseKind.DRAINING_5XX
    if f.phase in ("not-started", "starting", "never-ready"):
        return CauseKind.NOT_READY
    return CauseKind.UNEXPLAINED


def _median(values: Sequence[float | None]) -> str:
    known = [v for v in values if v is not None]
    return "?" if not known else f"{statistics.median(known):.2f} s"


def _n(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _routing_lag(items: list[StreamFailure], timelines: dict[str, _ReplicaTimeline]) -> str:
    """The longest time from a failed replica's SIGTERM (or deletion) to the last client's
    view removal, rounded up to whole seconds ("the routing lag" when unknown)."""
    lags = []
    for name in {f.replica for f in items}:
        tl = timelines.get(name)
        if tl is None:
            continue
        told, stopped = tl.terminated_at(), tl.routing_stopped()
        if told is not None and stopped is not None:
            lags.append(stopped - told)
    return f"{max(1, math.ceil(max(lags)))} s" if lags else "the routing lag"


def _explain(
    kind: CauseKind, items: list[StreamFailure], timelines: dict[str, _ReplicaTimeline]
) -> tuple[str, str]:
    n = len(items)
    replicas = ", ".join(sorted({f.replica for f in items if f.replica})) or "?"
    by = Counter(f.outcome for f in items)
    outcomes = ", ".join(f"{k} {v}" for k, v in sorted(by.items()))
    if kind is CauseKind.STREAM_CUT:
        return (
            f"{_n(n, 'stream session')} to terminating replicas ({replicas}) ended without a "
            f"clean end ({outcomes}: no terminating chunk / no close frame), a median "
            f"{_median([f.since_sigterm for f in items])} after SIGTERM and "
            f"{_median([f.since_endpoint_removed for f in items])} after the endpoint's removal",
            "end every open stream cleanly before exiting, once clients stopped routing to the "
            "replica: the terminating chunk for SSE / chunked responses, a WebSocket close "
            "1012 (service restart) or 1001, so that clients reconnect to a ready replica "
            "(lossless serve does it at t0 + drain delay)",
        )
    if kind is CauseKind.LISTENER_CLOSED:
        return (
            f"{_n(n, 'reconnect')} failed at terminating replicas ({replicas}; {outcomes}) that "
            f"clients still routed to, a median {_median([f.since_sigterm for f in items])} "
            "after SIGTERM",
            "keep the listener open until clients stopped routing to the replica (a drain delay "
            f"≥ {_routing_lag(items, timelines)}, the routing lag measured here, or a preStop "
            "sleep) and end the streams only then",
        )
    if kind is CauseKind.DRAINING_5XX:
        return (
            f"{_n(n, 'reconnect')} answered 5xx by terminating replicas ({replicas})",
            "keep serving during the drain; only readiness answers 503",
        )
    if kind is CauseKind.INGRESS_NO_SERVER:
        return (
            f"{_n(n, 'stream connect')} answered 503 by the ingress itself (no replica named): "
            "the proxy had no server to route to, or gave up on its connect retries",
            "keep old replicas serving until the proxy has added the new ones and removed the "
            "old (minReadySeconds ≥ the ingress propagation delay, a drain delay or preStop "
            "sleep that covers it)",
        )
    if kind is CauseKind.NO_ENDPOINT:
        return (
            f"{_n(n, 'reconnect')} found no endpoint in the client's view",
            "keep a ready replica at all times (maxUnavailable 0, at least 2 replicas)",
        )
    if kind is CauseKind.NOT_READY:
        return (
            f"{_n(n, 'stream session')} failed at replicas not ready yet ({replicas}; {outcomes})",
            "a readinessProbe that passes only once the streams can be served",
        )
    return (
        f"{_n(n, 'stream session')} failed at ({replicas}; {outcomes}) outside any termination",
        "look up the sessions in streams.csv and the replicas' logs",
    )


def analyze_streams(
    sessions: Sequence[StreamSession], events: Sequence[Event], settings: dict[str, Any]
) -> StreamAnalysis:
    """Analyse ``sessions`` against the run's timeline (see the module docstring)."""
    timelines = _index(events)
    ingress = settings.get("traffic") == "ingress"
    failed: list[StreamFailure] = []
    for s in sessions:
        if not s.failed:
            continue
        f = _context(s, timelines.get(s.replica))
        failed.append(dataclasses.replace(f, kind=_kind(s, f, ingress)))
    groups: dict[CauseKind, list[StreamFailure]] = {}
    for f in failed:
        groups.setdefault(f.kind, []).append(f)
    causes = []
    for kind, items in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        cause, fix = _explain(kind, items, timelines)
        replicas = sorted({f.replica for f in items if f.replica})
        causes.append(StreamCause(kind, cause, fix, len(items), replicas, items[:5]))
    conf = settings.get("long_lived") if isinstance(settings.get("long_lived"), dict) else {}
    assert isinstance(conf, dict)
    return StreamAnalysis(
        streams=int(conf.get("streams", len({s.stream for s in sessions if s.protocol == "sse"}))),
        websockets=int(
            conf.get("websockets", len({s.stream for s in sessions if s.protocol == "websocket"}))
        ),
        sessions=len(sessions),
        reconnects=sum(1 for s in sessions if s.session > 0),
        clean_ends=sum(1 for s in sessions if s.outcome is StreamOutcome.CLEAN),
        stopped=sum(1 for s in sessions if s.outcome is StreamOutcome.STOPPED),
        failures=len(failed),
        failures_by_outcome=dict(sorted(Counter(f.outcome for f in failed).items())),
        causes=causes,
        failed=failed,
        sessions_list=list(sessions),
    )
