"""Explain a run: count the requests, join every failure with the lifecycle timeline, name causes.

An accumulator in vegeta's style: :class:`Analyzer` takes the timeline and settings, then
``add(record)`` for each record, then ``close()`` computes the derived figures into an immutable
:class:`Analysis`; :func:`analyze` does all three for a :class:`~lossless.verify.results.Run`.
Rendering lives in :mod:`lossless.verify.render.text`.

Every failure is joined with the timeline of the replica it was sent to (:class:`FailureContext`):
the replica's phase at ``sent`` (:data:`PHASES`), the time since its deletion, endpoint removal,
SIGTERM and exit, and whether the client's view still routed to it. Failures are then grouped into
causes (:class:`Cause`), each with a one-sentence cause and fix carrying the numbers read from the
timeline. The rules, first match wins:

0. ``never_listened``: the replica was sent requests and never answered any (every attempt
   refused or timed out at connect): its command does not listen on ``{port}``/``$PORT``;
1. ``naive``: the run used the naive stop-start strategy and the request found nothing serving;
2. ``no_endpoint``: the client's view was empty;
3. ``killed``: the replica got SIGKILL while the request was in flight;
4. the replica was terminating when the request was sent (after DELETING or SIGTERM):
   ``keepalive_reset`` (reset on a reused connection), ``not_deregistered`` (``--traffic
   registry`` only: refused, connect timeout or reset on a fresh connection to a replica that
   did not leave the registry at t0), ``listener_closed`` (the same failures otherwise),
   ``draining_5xx``, else ``cut_in_flight``;
5. ``not_ready``: sent before the replica could serve (before READY, or before its first
   successful response while it was not terminating);
6. ``slow``: a timeout on a replica that was serving;
7. ``unexplained``: anything else.

Metric definitions: :data:`METRICS` (also in docs/verify-load.md).
"""

from __future__ import annotations

import array
import bisect
import dataclasses
import functools
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Generic, Protocol, TypeVar

from lossless.verify.analysis.bounded import Distribution
from lossless.verify.analysis.faults import STRESS_KINDS, Attribution
from lossless.verify.analysis.kinds import CauseKind
from lossless.verify.model import ErrorClass, Event, EventKind, Record
from lossless.verify.results import Run

# lags above this (seconds) are kept one by one: a late request costs 8 bytes, an on-time one none
LAG_TAIL_FLOOR = 0.001

__all__ = [
    "METRICS",
    "PHASES",
    "Analysis",
    "Analyzer",
    "Cause",
    "CauseKind",
    "FailureContext",
    "analyze",
]

METRICS: dict[str, str] = {
    "requests": "requests scheduled and recorded (exactly one record per request)",
    "ok": "requests answered with a complete response below 500 and sent on schedule",
    "failures": "requests the service failed (every error class except the generator artefacts)",
    "artefacts": "requests spoiled by the generator itself (schedule_lag, fd_exhausted)",
    "success_ratio": "ok / (ok + failures): the service's success ratio, artefacts excluded",
    "failures_by_class": "failures per error class (refused, reset, 503, timeout...)",
    "artefacts_by_class": "artefacts per class",
    "status_codes": "responses per HTTP status code (0: no response)",
    "duration_s": "seconds from the first intended send time to the last request's end",
    "rate_sent": "requests sent per second over the schedule (first to last intended send)",
    "rate_achieved": "requests per second the generator really sent: requests / (last actual "
    "send - first intended send); below rate_sent when it fell behind",
    "latency_ms": "percentiles of end - sent over complete responses below 500 (nearest rank, "
    "within 1 %: analysis/bounded.py)",
    "lag_ms": "percentiles of sent - intended over all requests: the generator's schedule lag",
    "late": "requests sent later than the lag budget after their intended time, failed or not",
    "lag_budget_s": "the lag budget used (settings' lag_budget, default 0.1 s)",
    "causes": "failures grouped by cause, each with a sentence, a fix, a count and examples",
    "retried": "requests the client saw succeed only because a proxy retried them (ingress runs); "
    "failures of the upgrade unless --allow-retries",
    "retried_latency_ms": "latency percentiles of the retried requests",
    "window_requests": "requests intended between the rollout's start and the last old "
    "replica's exit (null: no rollout in the run)",
    "request_kinds": "per kind of request (settings' requests, e.g. 'POST /orders'): idempotent, "
    "requests, failures; behind a proxy also retried (saved by a retry) and not_retried "
    "(failures the proxy did not retry)",
    "grpc_codes": "gRPC calls (--grpc) per status code name (OK, UNAVAILABLE...); {} otherwise",
    "silent_replicas": "replicas that were sent requests for 2 s or more and never answered one "
    "(every attempt refused or timed out at connect): the run could not exercise them",
    "replicas": "requests and failures per replica",
    "warnings": "problems met reading the run (e.g. an interrupted last line)",
}

PHASES: dict[str, str] = {
    "unknown": "no timeline event names this replica",
    "not-started": "before its process started",
    "starting": "started, readiness not reached yet",
    "never-ready": "started and never became ready",
    "ready": "ready, not being deleted",
    "not-ready": "ready once, then failed its readiness probe",
    "terminating-before-sigterm": "deleted (endpoint removal under way), SIGTERM not sent yet",
    "after-sigterm": "SIGTERM sent, process still running",
    "after-exit": "process exited",
}

_PERCENTILES = (("p50", 0.50), ("p90", 0.90), ("p95", 0.95), ("p99", 0.99), ("p999", 0.999))

_CONNECT_FAILURES = frozenset(
    {ErrorClass.REFUSED, ErrorClass.CONNECT_TIMEOUT, ErrorClass.RESET, ErrorClass.NO_ENDPOINT}
)
_HTTP_5XX = frozenset(
    {ErrorClass.HTTP_502, ErrorClass.HTTP_503, ErrorClass.HTTP_504, ErrorClass.HTTP_5XX}
)
_TERMINATING = frozenset({"terminating-before-sigterm", "after-sigterm", "after-exit"})
_BEFORE_READY = frozenset({"not-started", "starting", "never-ready", "not-ready"})
_MAX_EXAMPLES = 5
# NOTE events of the registry traffic model (lossless.verify.traffic.registry)
_REGISTRY_PUT = "registry PUT "
_REGISTRY_DELETE = "registry DELETE "
# a registry DELETE this long after SIGTERM (or later) was not a deregistration at t0 (measured:
# lossless serve's deregistration reaches a watcher within 15 ms of SIGTERM)
_DEREGISTER_SLACK = 0.5


def _settle(settings: dict[str, Any]) -> float:
    """Issue 16: a pause fault's window stays open one client timeout after it ends."""
    timeout = settings.get("timeout")
    return float(timeout) if isinstance(timeout, int | float) else 0.0


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def percentiles(values: Sequence[float]) -> dict[str, float]:
    """Nearest-rank percentiles (plus mean and max) of ``values`` in the same unit; {} if empty."""
    if not values:
        return {}
    ordered = sorted(values)
    n = len(ordered)
    out = {name: ordered[min(n - 1, max(0, math.ceil(q * n) - 1))] for name, q in _PERCENTILES}
    out["max"] = ordered[-1]
    out["mean"] = sum(ordered) / n
    return out


def request_kinds(
    settings: dict[str, Any], counts: Counter[tuple[int, bool]]
) -> dict[str, dict[str, Any]]:
    """Requests and failures per kind of request, named as in settings' ``requests``; ``counts``
    holds the records per (kind index, failed)."""
    kinds = settings.get("requests")
    if not isinstance(kinds, list) or not kinds:
        return {}
    names: list[str] = []
    out: dict[str, dict[str, Any]] = {}
    for k in kinds:
        name = str(k.get("name", "?")) if isinstance(k, dict) else "?"
        idempotent = bool(k.get("idempotent", True)) if isinstance(k, dict) else True
        names.append(name)
        out[name] = {"idempotent": idempotent, "requests": 0, "failures": 0}
    for (kind, failed), n in counts.items():
        row = out.get(names[kind] if 0 <= kind < len(names) else "?")
        if row is None:
            continue
        row["requests"] += n
        if failed:
            row["failures"] += n
    return out


# a replica refused for less than this may still have been starting (no readiness probe, a slow
# import under load): not enough to say that it does not listen on its port
SILENT_SPAN = 2.0


# -- the timeline, indexed per replica ------------------------------------------------------------
@dataclasses.dataclass
class _ReplicaTimeline:
    first: dict[EventKind, float] = dataclasses.field(default_factory=dict)
    readiness: list[tuple[float, bool]] = dataclasses.field(default_factory=list)
    views: dict[int, list[tuple[float, bool]]] = dataclasses.field(default_factory=dict)
    endpoint: list[tuple[float, bool]] = dataclasses.field(default_factory=list)
    registry: list[tuple[float, bool]] = dataclasses.field(default_factory=list)
    exit_detail: str = ""
    stop_dropped: bool = False  # the stop signal was not delivered (PID 1 without a handler)

    def at(self, kind: EventKind) -> float | None:
        return self.first.get(kind)

    def phase(self, t: float) -> str:
        exited, sigterm = self.at(EventKind.EXITED), self.at(EventKind.SIGTERM)
        if exited is not None and t >= exited:
            return "after-exit"
        if sigterm is not None and t >= sigterm:
            return "after-sigterm"
        deleting = self.at(EventKind.DELETING)
        if deleting is not None and t >= deleting:
            return "terminating-before-sigterm"
        start = self.at(EventKind.STARTED)
        if start is None:
            start = self.at(EventKind.CREATED)
        if start is not None and t < start:
            return "not-started"
        state = _state_at(self.readiness, t)
        if state is None:
            return "starting" if self.readiness else "never-ready"
        return "ready" if state else "not-ready"

    def in_view(self, client: int, t: float) -> bool | None:
        """Whether ``client`` routed to this replica at ``t`` (None: no view events known)."""
        changes = self.views.get(client)
        if changes is None:
            if not self.endpoint:
                return None
            changes = self.endpoint
        return bool(_state_at(changes, t))

    def view_removed_after(self, client: int, t: float) -> float | None:
        """When ``client`` stopped routing to this replica, the first removal after ``t``."""
        changes = self.views.get(client) or self.endpoint
        for when, present in changes:
            if when > t and not present:
                return when
        return None

    def terminated_at(self) -> float | None:
        """SIGTERM, else the deletion: when the replica was told to stop."""
        sigterm = self.at(EventKind.SIGTERM)
        return sigterm if sigterm is not None else self.at(EventKind.DELETING)

    def deregistered(self) -> float | None:
        """The registry's first DELETE of this replica from its deletion on (None: never)."""
        start = self.at(EventKind.DELETING)
        if start is None:
            start = self.terminated_at()
        if start is None:
            return None
        return next((w for w, present in self.registry if w >= start and not present), None)

    def routing_stopped(self) -> float | None:
        """The last client's VIEW_REMOVED (else ENDPOINT_REMOVED) after the deletion."""
        removals = [w for changes in self.views.values() for w, present in changes if not present]
        if removals:
            return max(removals)
        return self.at(EventKind.ENDPOINT_REMOVED)


def _state_at(changes: list[tuple[float, bool]], t: float) -> bool | None:
    i = bisect.bisect_right(changes, (t, True))
    return changes[i - 1][1] if i else None


def _index(events: Iterable[Event]) -> dict[str, _ReplicaTimeline]:
    timelines: dict[str, _ReplicaTimeline] = defaultdict(_ReplicaTimeline)
    for e in sorted(events, key=lambda e: e.t):
        if not e.replica:
            continue
        tl = timelines[e.replica]
        tl.first.setdefault(e.kind, e.t)
        if e.kind is EventKind.READY or e.kind is EventKind.NOT_READY:
            tl.readiness.append((e.t, e.kind is EventKind.READY))
        elif e.kind in (EventKind.VIEW_ADDED, EventKind.VIEW_REMOVED) and e.client is not None:
            tl.views.setdefault(e.client, []).append((e.t, e.kind is EventKind.VIEW_ADDED))
        elif e.kind in (EventKind.ENDPOINT_ADDED, EventKind.ENDPOINT_REMOVED):
            tl.endpoint.append((e.t, e.kind is EventKind.ENDPOINT_ADDED))
        elif e.kind is EventKind.EXITED:
            tl.exit_detail = e.detail
        elif e.kind is EventKind.SIGTERM and "not delivered" in e.detail:
            tl.stop_dropped = True
        elif e.kind is EventKind.NOTE and e.detail.startswith((_REGISTRY_PUT, _REGISTRY_DELETE)):
            tl.registry.append((e.t, e.detail.startswith(_REGISTRY_PUT)))
    return dict(timelines)


# -- results -------------------------------------------------------------------------------------
def _since(t: float, ref: float | None) -> float | None:
    return None if ref is None else round(t - ref, 6)


@dataclasses.dataclass(frozen=True)
class FailureContext:
    """One failed request joined with its replica's timeline (times in seconds; ``since_*`` is
    ``sent`` minus that event's time, negative when the event came later, ``None`` without it)."""

    seq: int
    error: str
    sent: float
    lag: float
    replica: str
    client: int
    conn_id: int
    reused: bool
    status: int
    phase: str
    since_ready: float | None
    since_deleting: float | None
    since_endpoint_removed: float | None
    since_sigterm: float | None
    since_exit: float | None
    in_view: bool | None  # the client's view still routed to the replica at ``sent``
    view_removed_in: float | None  # seconds from ``sent`` until the client stopped routing there

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class _Example(Protocol):
    """What a cause's example is: a failure context that renders itself as JSON."""

    def to_json(self) -> dict[str, Any]: ...


_E = TypeVar("_E", bound=_Example)


@dataclasses.dataclass(frozen=True)
class Cause(Generic[_E]):
    """A group of failures with one explanation: ``kind`` (a stable identifier), ``cause`` and
    ``fix`` (one sentence each, with the run's numbers), the failures' count, replicas, up to
    five examples and the seqs of all of them (requests' seqs; empty where failures have none).

    One type for every kind of failure: ``Cause[FailureContext]`` groups failed requests here,
    ``Cause[StreamFailure]`` failed sessions (:mod:`lossless.verify.analysis.streams`); both
    render the same JSON."""

    kind: CauseKind | str  # a CauseKind, or "fault:N" for the N-th injected fault
    cause: str
    fix: str
    count: int
    replicas: list[str]
    examples: list[_E]
    seqs: tuple[int, ...] = ()  # every request of the group (not in the JSON: see examples)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "cause": self.cause,
            "fix": self.fix,
            "count": self.count,
            "replicas": self.replicas,
            "examples": [e.to_json() for e in self.examples],
        }


@dataclasses.dataclass(frozen=True)
class Analysis:
    """The figures of one run; field definitions in :data:`METRICS`."""

    requests: int
    ok: int
    failures: int
    artefacts: int
    success_ratio: float
    failures_by_class: dict[str, int]
    artefacts_by_class: dict[str, int]
    status_codes: dict[str, int]
    duration_s: float
    rate_sent: float
    latency_ms: dict[str, float]
    lag_ms: dict[str, float]
    late: int
    lag_budget_s: float
    causes: list[Cause[FailureContext]]
    replicas: dict[str, dict[str, int]]
    contexts: list[FailureContext]
    settings: dict[str, Any]
    warnings: list[str]
    rate_achieved: float = 0.0
    retried: int = 0
    retried_latency_ms: dict[str, float] = dataclasses.field(default_factory=dict)
    window_requests: int | None = None
    silent_replicas: list[str] = dataclasses.field(default_factory=list)
    request_kinds: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    grpc_codes: dict[str, int] = dataclasses.field(default_factory=dict)  # --grpc (issue 13)
    # the schedule lags above 1 ms, in seconds (not in the JSON): how many requests were late by
    # any threshold >= 1 ms, without keeping the records (see late_count)
    lag_tail: Any = dataclasses.field(default=None, repr=False, compare=False)

    def late_count(self, threshold: float) -> int | None:
        """Requests sent more than ``threshold`` seconds after their intended time; None when
        this analysis did not keep its lag tail or ``threshold`` is below 1 ms."""
        if self.lag_tail is None or threshold < LAG_TAIL_FLOOR:
            return None
        return sum(1 for lag in self.lag_tail if lag > threshold)

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict (failure contexts appear as the causes' examples)."""
        return {
            "requests": self.requests,
            "ok": self.ok,
            "failures": self.failures,
            "artefacts": self.artefacts,
            "success_ratio": self.success_ratio,
            "failures_by_class": self.failures_by_class,
            "artefacts_by_class": self.artefacts_by_class,
            "status_codes": self.status_codes,
            "duration_s": self.duration_s,
            "rate_sent": self.rate_sent,
            "rate_achieved": self.rate_achieved,
            "latency_ms": self.latency_ms,
            "lag_ms": self.lag_ms,
            "late": self.late,
            "lag_budget_s": self.lag_budget_s,
            "causes": [c.to_json() for c in self.causes],
            "retried": self.retried,
            "retried_latency_ms": self.retried_latency_ms,
            "window_requests": self.window_requests,
            "silent_replicas": self.silent_replicas,
            "request_kinds": self.request_kinds,
            "grpc_codes": self.grpc_codes,
            "replicas": self.replicas,
            "warnings": self.warnings,
        }


def _grpc_codes(counts: Counter[int]) -> dict[str, int]:
    """gRPC calls per status name (``{"OK": 950, "UNAVAILABLE": 12}``) from calls per status
    code; {} without gRPC calls."""
    from lossless.verify.analysis.grpc_causes import STATUS_NAMES

    named: Counter[str] = Counter()
    for code, n in counts.items():
        named[STATUS_NAMES.get(code, str(code))] += n
    return dict(named.most_common())


class _Group:
    """The failures of one cause, and the figures every sentence uses."""

    def __init__(self, items: list[tuple[Record, FailureContext]]) -> None:
        self.records = [r for r, _ in items]
        self.contexts = [c for _, c in items]
        self.by_replica: dict[str, list[Record]] = defaultdict(list)
        for r in self.records:
            if r.replica:
                self.by_replica[r.replica].append(r)
        self.names = sorted(self.by_replica)
        self.n = len(self.records)
        self.who = ", ".join(self.names) if self.names else "no replica"
        self.requests = _plural(self.n, "request")  # "1 request", "3 requests"
        self.failures = _plural(self.n, "failure")
        self.were = "was" if self.n == 1 else "were"
        sent = [r.sent for r in self.records]
        low, high = f"{min(sent):.1f}", f"{max(sent):.1f}"
        self.window = f"at t={low} s" if low == high else f"between t={low} s and t={high} s"
        ends = [r.end if r.end is not None else r.sent for r in self.records]
        self.span = max(ends) - min(sent)  # first failure sent to last failure's end

    def after_sigterm(self) -> str:
        """'a to b s after SIGTERM' over the failures sent after one, else the time window."""
        after = [c.since_sigterm for c in self.contexts if c.since_sigterm is not None]
        if not after:
            return self.window
        low, high = f"{min(after):.1f}", f"{max(after):.1f}"
        return f"{low} s after SIGTERM" if low == high else f"{low} to {high} s after SIGTERM"


# The causes whose sentences need only the group's own figures: templates filled by
# _sentences() ({g.…}: a _Group attribute; {after_sigterm}: _Group.after_sigterm()).
_SENTENCES: dict[CauseKind | str, tuple[str, str]] = {
    CauseKind.NO_ENDPOINT: (
        "no endpoint in the clients' view for {g.span:.1f} s: {g.requests} had nowhere to go "
        "{g.window}",
        "keep a ready replica during the rollout (maxUnavailable: 0, maxSurge ≥ 1) and run at "
        "least 2 replicas",
    ),
    CauseKind.KEEPALIVE_RESET: (
        "connection reset on a kept-alive connection at shutdown: {g.requests} on reused "
        "connections to {g.who} {g.were} reset {after_sigterm} (the server closed idle "
        "keep-alive connections while clients still used them)",
        "send Connection: close on every response during the drain and close idle connections "
        "only after the drain delay (lossless serve and its middleware do); a connection idle "
        "since before the drain can still be closed just as its client reuses it, which no "
        "server can prevent: the client must retry an idempotent request that fails on a "
        "reused connection (Go's net/http does)",
    ),
    CauseKind.CUT_IN_FLIGHT: (
        "{g.requests} in flight on {g.who} {g.were} cut when it stopped ({after_sigterm})",
        "wait for in-flight requests before exiting: stop accepting, then finish the requests "
        "already read, bounded by the shutdown timeout",
    ),
}


def _sentences(templates: tuple[str, str], g: _Group) -> tuple[str, str]:
    """The cause and fix sentences of ``templates`` filled with ``g``'s figures."""
    cause, fix = templates
    return cause.format(g=g, after_sigterm=g.after_sigterm()), fix


class Analyzer:
    """Accumulates records (``add``) and explains them (``close``) against ``events``.

    ``settings`` are the run's settings: ``strategy`` (``"naive"`` selects the stop-start rule),
    ``lag_budget`` (seconds, default 0.1), ``timeout`` (the client timeout, for the sentence),
    ``traffic`` (``"registry"`` selects the registry rules) and ``registry_cache_ttl`` are read
    when present. ``close`` may be called once; ``add`` after it raises RuntimeError.
    """

    def __init__(self, events: Iterable[Event], settings: dict[str, Any] | None = None) -> None:
        self.settings = dict(settings or {})
        self.events = sorted(events, key=lambda e: e.t)
        self.timelines = _index(self.events)
        # issue 16: faults, crashes, probe kills and sidecars first (analysis/faults.py)
        self.stress = Attribution(self.events, settle=_settle(self.settings))
        self.lag_budget = float(self.settings.get("lag_budget", 0.1))
        self.registry = self.settings.get("traffic") == "registry"
        ttl = self.settings.get("registry_cache_ttl")
        self.cache_ttl = float(ttl) if isinstance(ttl, int | float) else 0.0
        self.closed = False
        self.silent: frozenset[str] = frozenset()
        # -- issue 16: add() folds each record into bounded state (analysis/bounded.py): only
        # the failed records are kept, so memory does not grow with the number of requests
        self._failures_by_class: Counter[str] = Counter()
        self._artefacts_by_class: Counter[str] = Counter()
        self._status_codes: Counter[str] = Counter()
        self._replicas: dict[str, Counter[str]] = defaultdict(Counter)
        self._latencies = Distribution()
        self._lag_tail = array.array("d")  # schedule lags > LAG_TAIL_FLOOR (s)
        self._lags = Distribution()
        self._failed: list[Record] = []
        self._first_ok: dict[str, tuple[int, float]] = {}  # replica: (seq, sent) lowest seq
        self._ok = self._late = self._n = 0
        self._first: tuple[int, float] | None = None  # (seq, intended) of the lowest seq
        self._last: tuple[int, float, float] | None = None  # (seq, intended, sent) highest
        self._max_end = -math.inf
        self._max_sent = -math.inf
        # issue 13: replicas that never answered (silent_replicas), requests per kind, and the
        # rollout window, folded per record as well
        self._quiet: dict[str, tuple[bool, float, float]] = {}  # replica: (silent, first, last)
        self._kind_counts: Counter[tuple[int, bool]] = Counter()  # (kind, failed)
        self._grpc: Counter[int] = Counter()  # gRPC calls per status code (--grpc)
        self._window = self._window_bounds()
        self._in_window = 0

    def add(self, record: Record) -> None:
        if self.closed:
            raise RuntimeError("Analyzer is closed: add() came after close()")
        r = record
        self._n += 1
        if self._first is None or r.seq < self._first[0]:
            self._first = (r.seq, r.intended)
        if self._last is None or r.seq > self._last[0]:
            self._last = (r.seq, r.intended, r.sent)
        if r.end is not None and r.end > self._max_end:
            self._max_end = r.end
        if r.sent > self._max_sent:
            self._max_sent = r.sent
        if r.replica and r.error is not ErrorClass.NO_ENDPOINT:
            never = r.status == 0 and r.error in (ErrorClass.REFUSED, ErrorClass.CONNECT_TIMEOUT)
            quiet, first, last = self._quiet.get(r.replica, (True, r.sent, r.sent))
            self._quiet[r.replica] = (quiet and never, min(first, r.sent), max(last, r.sent))
        self._kind_counts[(r.kind, not r.ok and not r.error.is_artefact)] += 1
        if r.grpc is not None:
            self._grpc[r.grpc] += 1
        if self._window is not None and self._window[0] <= r.intended <= self._window[1]:
            self._in_window += 1
        self._status_codes[str(r.status)] += 1
        lag = r.sent - r.intended
        self._lags.add(lag * 1000)
        if lag > self.lag_budget:
            self._late += 1
        if lag > LAG_TAIL_FLOOR:
            self._lag_tail.append(lag)
        self._replicas[r.replica or "-"]["requests"] += 1
        if r.error.is_artefact:
            self._artefacts_by_class[r.error.value] += 1
        elif r.ok:
            self._ok += 1
        else:
            self._failures_by_class[r.error.value or "5xx"] += 1
            self._replicas[r.replica or "-"]["failures"] += 1
            self._failed.append(r)
        if (
            0 < r.status < 500
            and r.end is not None
            and r.error in (ErrorClass.NONE, ErrorClass.SCHEDULE_LAG)
        ):
            self._latencies.add((r.end - r.sent) * 1000)
            if r.replica:
                seen = self._first_ok.get(r.replica)
                if seen is None or r.seq < seen[0]:
                    self._first_ok[r.replica] = (r.seq, r.sent)

    def close(self, warnings: Sequence[str] = ()) -> Analysis:
        if self.closed:
            raise RuntimeError("Analyzer is closed: close() was already called")
        self.closed = True
        failed = sorted(self._failed, key=lambda r: r.seq)
        first_ok = {name: sent for name, (_, sent) in self._first_ok.items()}
        failures_by_class = self._failures_by_class
        artefacts_by_class = self._artefacts_by_class
        status_codes = self._status_codes
        replicas = self._replicas
        ok, late = self._ok, self._late
        # before the causes: a silent replica's failures get their own cause (never_listened)
        self.silent = frozenset(
            name
            for name, (quiet, first, last) in self._quiet.items()
            if quiet and last - first >= SILENT_SPAN
        )
        contexts = [self.context(r) for r in failed]
        causes = self._causes(failed, contexts, first_ok)
        duration = 0.0
        rate = 0.0
        if self._first is not None and self._last is not None:
            start = self._first[1]
            duration = max(self._max_end, self._last[2]) - start
            span = self._last[1] - start
            rate = (self._n - 1) / span if span > 0 else 0.0
        achieved = 0.0
        if self._first is not None and self._n > 1:
            sent_span = self._max_sent - self._first[1]
            achieved = (self._n - 1) / sent_span if sent_span > 0 else 0.0
        nfail = len(failed)
        return Analysis(
            requests=self._n,
            ok=ok,
            failures=nfail,
            artefacts=sum(artefacts_by_class.values()),
            success_ratio=ok / (ok + nfail) if ok + nfail else 1.0,
            failures_by_class=dict(failures_by_class.most_common()),
            artefacts_by_class=dict(artefacts_by_class.most_common()),
            status_codes=dict(sorted(status_codes.items())),
            duration_s=round(duration, 6),
            rate_sent=round(rate, 3),
            latency_ms={k: round(v, 3) for k, v in self._latencies.percentiles().items()},
            lag_ms={k: round(v, 3) for k, v in self._lags.percentiles().items()},
            late=late,
            lag_budget_s=self.lag_budget,
            causes=causes,
            replicas={k: dict(v) for k, v in sorted(replicas.items())},
            contexts=contexts,
            settings=self.settings,
            warnings=list(warnings),
            rate_achieved=round(achieved, 3),
            request_kinds=request_kinds(self.settings, self._kind_counts),
            window_requests=None if self._window is None else self._in_window,
            silent_replicas=sorted(self.silent),
            grpc_codes=_grpc_codes(self._grpc),
            lag_tail=self._lag_tail,
        )

    def _window_bounds(self) -> tuple[float, float] | None:
        """The rollout window: from the rollout's start to the last deleted replica's exit (or
        the rollout's end, whichever is later); None when the run has no rollout."""
        starts = [e.t for e in self.events if e.kind is EventKind.ROLLOUT_START and not e.replica]
        if not starts:
            return None
        begin = starts[0]
        ends = [e.t for e in self.events if e.kind is EventKind.ROLLOUT_END and not e.replica]
        ends += [
            tl.at(EventKind.EXITED) or 0.0
            for tl in self.timelines.values()
            if tl.at(EventKind.DELETING) is not None
        ]
        return begin, max(ends, default=math.inf)

    # -- joining -----------------------------------------------------------------------------
    def context(self, r: Record) -> FailureContext:
        """``r`` joined with the timeline of its replica (any record, failed or not)."""
        tl = self.timelines.get(r.replica)
        if tl is None:
            phase = "unknown"
            ready = deleting = removed = sigterm = exited = None
            in_view = removed_in = None
        else:
            phase = tl.phase(r.sent)
            ready = tl.at(EventKind.READY)
            deleting = tl.at(EventKind.DELETING)
            removed = tl.at(EventKind.ENDPOINT_REMOVED)
            sigterm = tl.at(EventKind.SIGTERM)
            exited = tl.at(EventKind.EXITED)
            in_view = tl.in_view(r.client, r.sent)
            after = tl.view_removed_after(r.client, r.sent)
            removed_in = None if after is None else round(after - r.sent, 6)
        return FailureContext(
            seq=r.seq,
            error=r.error.value,
            sent=r.sent,
            lag=round(r.sent - r.intended, 6),
            replica=r.replica,
            client=r.client,
            conn_id=r.conn_id,
            reused=r.reused,
            status=r.status,
            phase=phase,
            since_ready=_since(r.sent, ready),
            since_deleting=_since(r.sent, deleting),
            since_endpoint_removed=_since(r.sent, removed),
            since_sigterm=_since(r.sent, sigterm),
            since_exit=_since(r.sent, exited),
            in_view=in_view,
            view_removed_in=removed_in,
        )

    def _kind(self, r: Record, ctx: FailureContext, first_ok: dict[str, float]) -> CauseKind | str:
        attributed = self.stress.kind(r)  # issue 16: a fault's, a crash's... (analysis/faults.py)
        if attributed is not None:
            return attributed
        if r.replica in self.silent:
            return CauseKind.NEVER_LISTENED
        naive = str(self.settings.get("strategy", "")).lower() == "naive"
        if naive and (r.error in _CONNECT_FAILURES or r.error in _HTTP_5XX):
            return CauseKind.NAIVE
        if r.error is ErrorClass.NO_ENDPOINT:
            return CauseKind.NO_ENDPOINT
        tl = self.timelines.get(r.replica)
        kill = None if tl is None else tl.at(EventKind.SIGKILL)
        if kill is not None and r.sent <= kill and (r.end is None or r.end >= kill - 0.05):
            return CauseKind.KILLED
        # -- gRPC calls (issue 13): their statuses by replica and phase (grpc_causes.py)
        if r.grpc is not None:
            from lossless.verify.analysis.grpc_causes import grpc_kind

            grpc = grpc_kind(r, ctx, tl)
            if grpc is not None:
                return grpc
        if ctx.phase in _TERMINATING:
            if r.reused and r.error is ErrorClass.RESET:
                return CauseKind.KEEPALIVE_RESET
            if r.error in _CONNECT_FAILURES:
                if self.registry and tl is not None and not self._deregistered_at_t0(tl):
                    return CauseKind.NOT_DEREGISTERED
                return CauseKind.LISTENER_CLOSED
            if r.error in _HTTP_5XX:
                return CauseKind.DRAINING_5XX
            return CauseKind.CUT_IN_FLIGHT
        if ctx.phase in _BEFORE_READY:
            return CauseKind.NOT_READY
        served_from = first_ok.get(r.replica)
        if ctx.phase == "ready" and (served_from is None or r.sent < served_from):
            return CauseKind.NOT_READY
        if r.error is ErrorClass.TIMEOUT:
            return CauseKind.SLOW
        return CauseKind.UNEXPLAINED

    @staticmethod
    def _deregistered_at_t0(tl: _ReplicaTimeline) -> bool:
        start, gone = tl.terminated_at(), tl.deregistered()
        if start is None:
            return True  # never told to stop: not this rule's business
        return gone is not None and gone - start <= _DEREGISTER_SLACK

    def _causes(
        self, failed: list[Record], contexts: list[FailureContext], first_ok: dict[str, float]
    ) -> list[Cause[FailureContext]]:
        groups: dict[CauseKind | str, list[tuple[Record, FailureContext]]] = defaultdict(list)
        for r, ctx in zip(failed, contexts, strict=True):
            groups[self._kind(r, ctx, first_ok)].append((r, ctx))
        causes = [self._explain(kind, items) for kind, items in groups.items()]
        causes.sort(key=lambda c: (-c.count, c.kind))
        return causes

    # -- sentences ---------------------------------------------------------------------------
    def _explain(
        self, kind: CauseKind | str, items: list[tuple[Record, FailureContext]]
    ) -> Cause[FailureContext]:
        g = _Group(items)
        explain: dict[CauseKind | str, Callable[[_Group], tuple[str, str]]] = {
            CauseKind.NEVER_LISTENED: self._explain_never_listened,
            CauseKind.NAIVE: self._explain_naive,
            CauseKind.KILLED: self._explain_killed,
            CauseKind.LISTENER_CLOSED: self._explain_listener_closed,
            CauseKind.NOT_DEREGISTERED: self._explain_not_deregistered,
            CauseKind.DRAINING_5XX: self._explain_draining_5xx,
            CauseKind.NOT_READY: self._explain_not_ready,
            CauseKind.SLOW: self._explain_slow,
        }
        explainer = explain.get(kind, self._explain_unexplained)
        if kind in _SENTENCES:
            explainer = functools.partial(_sentences, _SENTENCES[kind])
        if isinstance(kind, CauseKind) and kind.value.startswith("grpc_"):  # issue 13
            from lossless.verify.analysis.grpc_causes import EXPLAIN

            explainer = EXPLAIN.get(kind, explainer)
        if kind.startswith("fault:") or kind in STRESS_KINDS:  # issue 16 (analysis/faults.py)
            cause, fix = self.stress.explain(kind, g.records)
        else:
            cause, fix = explainer(g)
        classes = Counter(r.error.value for r in g.records)
        if kind is not CauseKind.NO_ENDPOINT:
            cause += " [" + ", ".join(f"{k}: {v}" for k, v in classes.most_common()) + "]"
        seqs = tuple(r.seq for r in g.records)
        return Cause(kind, cause, fix, g.n, g.names, g.contexts[:_MAX_EXAMPLES], seqs)

    def _timelines_of(self, g: _Group) -> Iterator[tuple[_ReplicaTimeline, list[Record]]]:
        """Each replica of ``g`` (by name) that has a timeline, with its failed records: what
        every sentence that measures the replicas' own times walks."""
        for name in g.names:
            tl = self.timelines.get(name)
            if tl is not None:
                yield tl, g.by_replica[name]

    def _explain_never_listened(self, g: _Group) -> tuple[str, str]:
        ports = self.settings.get("replica_ports")
        where = ""
        if isinstance(ports, dict):
            known = [f"{name} on {ports[name]}" for name in g.names if name in ports]
            where = f" ({', '.join(known)})" if known else ""
        return (
            f"{g.who} never answered on the port {'it was' if len(g.names) == 1 else 'each was'} "
            f"given{where}: {g.requests} "
            f"{g.were} refused or timed out at connect {g.window}; the replica listens "
            "elsewhere or not at all",
            "make the command listen on the port the lab assigns: write {port} in --cmd or read "
            "$PORT (e.g. --cmd 'python -m http.server {port}'); the run cannot judge the "
            "upgrade until it does",
        )

    def _explain_naive(self, g: _Group) -> tuple[str, str]:
        # each replica's own gap (its first failure sent to its last failure's end): the
        # replicas restart one after the other, so the span over all of them is no gap at all
        gaps: dict[str, float] = {}
        for name in g.names:
            mine = g.by_replica[name]
            ends = [r.end if r.end is not None else r.sent for r in mine]
            gaps[name] = max(ends) - min(r.sent for r in mine)
        if gaps:
            each = ", ".join(f"{name} for {gap:.1f} s" for name, gap in gaps.items())
            nothing = f"nothing serving on {each}"
        else:
            nothing = f"nothing serving for {g.span:.1f} s"
        return (
            f"naive stop-start: clients kept routing to a replica while it was stopped and "
            f"restarted ({nothing}; {g.requests} failed {g.window})",
            "use a rolling update with readiness gating (maxUnavailable: 0, maxSurge: 1) so an "
            "old replica serves until a new one is ready",
        )

    def _explain_listener_closed(self, g: _Group) -> tuple[str, str]:
        gaps: list[float] = []
        needed: list[float] = []
        for tl, mine in self._timelines_of(g):
            # the listener closed at the first refused connect (or the probe's observation)
            closed = tl.at(EventKind.LISTENER_CLOSED)
            refused = [r.sent for r in mine]
            closed = min(refused) if closed is None else min(closed, *refused)
            stopped = tl.routing_stopped()
            if stopped is None:  # no view events: the failures themselves show the routing
                stopped = max(r.sent for r in mine)
            gaps.append(max(0.0, stopped - closed))
            # the drain must last from SIGTERM (or deletion) until the last client stopped
            start = tl.at(EventKind.SIGTERM)
            if start is None:
                start = tl.at(EventKind.DELETING)
            needed.append(stopped - (closed if start is None else start))
        gap = max(gaps, default=0.0)
        drain = max(1, math.ceil(max(needed, default=gap)))
        cause = (
            f"listener closed {gap:.1f} s before clients stopped routing to it: {g.requests} "
            f"to {g.who} could not connect {g.after_sigterm()}"
        )
        if self.registry:
            # a client may have refreshed just before t0: the whole cache TTL, plus a margin
            drain = max(drain, math.ceil(self.cache_ttl + 0.5))
            return (
                cause,
                f"set a drain delay ≥ {drain} s (LOSSLESS_DRAIN_DELAY): the replica left the "
                f"registry at t0, but clients cache what they read for {self.cache_ttl:g} s and "
                "keep routing to it until their next refresh",
            )
        return (
            cause,
            f"set a drain delay ≥ {drain} s (LOSSLESS_DRAIN_DELAY) or a preStop sleep of "
            f"{drain} s, so the replica keeps serving until the endpoint removal has propagated",
        )

    def _explain_not_deregistered(self, g: _Group) -> tuple[str, str]:
        late: list[float] = []
        for tl, _mine in self._timelines_of(g):
            start, gone = tl.terminated_at(), tl.deregistered()
            if start is not None and gone is not None:
                late.append(gone - start)
        if late:
            stayed = (
                f"stayed in the registry up to {max(late):.1f} s after SIGTERM (no "
                "deregistration at t0: the entry went when its lease or session expired)"
            )
        else:
            stayed = "never left the registry"
        drain = max(1, math.ceil(self.cache_ttl + 0.5))
        return (
            f"clients kept calling it after it stopped: {g.who} {stayed}, so {g.requests} "
            f"went to a closed port {g.after_sigterm()}",
            "deregister at t0, before draining (lossless serve does with --registry or "
            f"LOSSLESS_REGISTRY), then keep serving while the clients' cache "
            f"({self.cache_ttl:g} s) expires: drain delay ≥ {drain} s",
        )

    def _explain_killed(self, g: _Group) -> tuple[str, str]:
        graces: list[float] = []
        ages: list[float] = []
        for tl, mine in self._timelines_of(g):
            kill = tl.at(EventKind.SIGKILL)
            if kill is None:
                continue
            start = tl.at(EventKind.DELETING)
            if start is None:
                start = tl.at(EventKind.SIGTERM)
            if start is not None:
                graces.append(kill - start)
            ages.extend(kill - r.sent for r in mine)
        grace = f"{max(graces):.1f} s after deletion" if graces else "at the grace period"
        age = f"; the oldest had been running {max(ages):.1f} s" if ages else ""
        dropped = [n for n in g.names if (t := self.timelines.get(n)) and t.stop_dropped]
        if dropped:
            # pid_namespaces(7): PID 1 gets only the signals it has a handler for
            return (
                f"killed at the grace period with requests in flight: the stop signal never "
                f"reached the server ({', '.join(dropped)}: PID 1 has no handler for it, e.g. "
                f"a shell that does not exec), so it served until SIGKILL {grace} cut "
                f"{g.requests}{age}",
                "make the server PID 1 or forward the signal: `exec` it from the shell or "
                "entrypoint script (or run it under `lossless run`), and handle SIGTERM by "
                "draining",
            )
        return (
            f"killed at the grace period with requests in flight: {g.who} got SIGKILL {grace} "
            f"with {g.requests} unanswered{age}",
            "raise terminationGracePeriodSeconds above the drain delay plus the longest request, "
            "or shorten the work",
        )

    def _explain_draining_5xx(self, g: _Group) -> tuple[str, str]:
        codes = "/".join(sorted({str(r.status) for r in g.records}))
        return (
            f"{g.who} answered {codes} to {g.requests} while terminating ({g.after_sigterm()})",
            "keep serving normal requests during the drain; only the readiness probe should "
            "answer 503 (a proxy's 502/504 means the backend went away before it was removed)",
        )

    def _explain_not_ready(self, g: _Group) -> tuple[str, str]:
        ready = [c.since_ready for c in g.contexts if c.since_ready is not None]
        ready = [s for s in ready if s >= 0]
        when = f"up to {max(ready):.1f} s after it was marked ready" if ready else g.window
        return (
            f"sent to a replica before it could serve (no or insufficient readiness probe): "
            f"{g.requests} to {g.who} failed {when}",
            "add a readinessProbe that covers the replica's dependencies (lossless serves "
            "/readyz) so it receives traffic only once it can serve",
        )

    def _explain_slow(self, g: _Group) -> tuple[str, str]:
        timeout = self.settings.get("timeout")
        limit = "the client timeout"
        if isinstance(timeout, int | float):
            limit = f"the {timeout:g} s client timeout"
        return (
            f"{g.requests} to {g.who} got no complete response within {limit} while it was "
            f"serving ({g.window})",
            "find the slow path (look up their x-lossless-seq in the replica's logs) or raise "
            "the client timeout",
        )

    def _explain_unexplained(self, g: _Group) -> tuple[str, str]:
        phases = ", ".join(sorted({c.phase for c in g.contexts}))
        seqs = ", ".join(str(r.seq) for r in g.records[:3])
        return (
            f"{g.failures} on {g.who} not explained by the timeline (phase {phases}, {g.window})",
            f"look up their x-lossless-seq values (e.g. {seqs}) in the replica's logs",
        )


def analyze(run: Run) -> Analysis:
    """Analyse a recorded run (see :class:`Analyzer`)."""
    analyzer = Analyzer(run.events, run.settings)
    for r in run.records:
        analyzer.add(r)
    return analyzer.close(run.warnings)
