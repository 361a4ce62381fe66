"""Explain a run that went through an L7 proxy: join the client's records with the proxy's log.

The ``ingress`` traffic model (:mod:`lossless.verify.traffic.ingress`) writes HAProxy's access
log as ``proxy.jsonl`` next to the run's files, one line per request with the request's
``x-lossless-seq``. :func:`analyze_proxy` joins the two sides by seq, so a failure shows what the
client saw (error class, status, time) *and* what the proxy saw (its status, the termination
state such as ``SC--``, the replica it tried last, its retries), and names causes the client's
view alone cannot:

1. ``ingress_silent_close``: the client's kept-alive connection to the proxy was closed with no
   response and the proxy logged nothing for the request (HAProxy closes idle client
   connections at ``timeout http-keep-alive`` without a word; a request written at that moment
   is lost and only the client knows);
2. ``ingress_no_server``: the proxy had no server to route to (``<NOSRV>``, 503);
3. ``ingress_connect_failed``: the proxy could not connect to the replica it chose (``SC``,
   503), which was still in its view after the replica's listener closed; every retry failed;
4. ``ingress_backend_closed``: the replica closed the proxy's (pooled) connection before or
   while answering (``SH``/``SD``, 502 or a cut response);
5. ``ingress_timeout``: the replica did not answer within the proxy's ``timeout server``
   (``sH``, 504);
6. other failures (the application's own 5xx, client timeouts, failures without a log line on a
   fresh connection) are explained by :mod:`lossless.verify.analysis.core`'s rules, applied to the
   records with the replica the proxy named.

Before joining, every record the proxy served gets ``replica`` = the server the proxy chose (the
client only saw the proxy) and ``client`` = 0 (the proxy is the one client whose view of the
endpoints decides routing: the ingress model's view events have ``client=0``).

Requests that succeeded only because the proxy retried them (``retries > 0``) are failures the
proxy hid; they are counted (:attr:`ProxyAnalysis.hidden`) with their latency, since a retry
after a refused connect costs HAProxy's turn-around (up to 1 s).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lossless.verify.analysis.core import Analysis, Analyzer, Cause, FailureContext, percentiles
from lossless.verify.analysis.kinds import CauseKind
from lossless.verify.haproxy.log import ProxyLogEntry
from lossless.verify.model import ErrorClass, Event, EventKind, Record
from lossless.verify.results import Run, read_jsonl

__all__ = [
    "PROXY_CAUSES",
    "ProxyAnalysis",
    "ProxyFailure",
    "analyze_proxy",
    "failure_kinds",
    "read_proxy_log",
]

PROXY_LOG = "proxy.jsonl"
INGRESS = "ingress"

PROXY_CAUSES: dict[CauseKind, str] = {
    CauseKind.INGRESS_SILENT_CLOSE: "kept-alive client connection closed by the proxy, no "
    "response, no proxy log line",
    CauseKind.INGRESS_NO_SERVER: "the proxy had no server to route to (<NOSRV>)",
    CauseKind.INGRESS_CONNECT_FAILED: "the proxy could not connect to a replica still in its "
    "view (SC)",
    CauseKind.INGRESS_BACKEND_CLOSED: "the replica closed the proxy's connection before or "
    "while answering (SH/SD)",
    CauseKind.INGRESS_TIMEOUT: "the replica did not answer within the proxy's server timeout (sH)",
    CauseKind.INGRESS_RETRIED: "the client got a response only because the proxy retried the "
    "request on another attempt (retries > 0)",
}

_MAX_EXAMPLES = 5
_TERMINATING = frozenset({"terminating-before-sigterm", "after-sigterm", "after-exit"})


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def read_proxy_log(path: str | os.PathLike[str]) -> tuple[list[ProxyLogEntry], list[str]]:
    """The access log entries and HAProxy's messages of a ``proxy.jsonl`` file. Raises
    LosslessError naming the file and line when it is unreadable or corrupt."""

    def parse(obj: dict[str, Any]) -> ProxyLogEntry | str:
        if obj.get("kind") == "message":
            return f"t={obj.get('t')}: {obj.get('text', '')}"
        return ProxyLogEntry.from_json(obj)

    items = read_jsonl(
        Path(path), parse, what="proxy log line", missing="missing", truncated_tail_ok=True
    )
    entries = [item for item in items if isinstance(item, ProxyLogEntry)]
    messages = [item for item in items if isinstance(item, str)]
    return entries, messages


@dataclasses.dataclass(frozen=True)
class ProxyView:
    """What the proxy saw of one request (from its log line)."""

    status: int
    termination: str
    server: str
    retries: int
    redispatched: bool
    connect_ms: int
    response_ms: int
    total_ms: int
    backend_reused: bool  # the proxy sent it on a pooled connection it had used before

    def describe(self) -> str:
        """``haproxy 503 SC-- on v1-0 after 2 retries (redispatched)``."""
        status = "no status" if self.status < 0 else str(self.status)
        text = f"haproxy {status} {self.termination} on {self.server or '<NOSRV>'}"
        if self.retries:
            text += f" after {_plural(self.retries, 'retry').replace('retrys', 'retries')}"
            if self.redispatched:
                text += " (redispatched)"
        if self.backend_reused:
            text += ", pooled backend connection"
        return text

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class ProxyFailure:
    """One failed request from both sides: the client's context (joined with the timeline of the
    replica the proxy chose), the proxy's view (None: no log line) and the cause kind."""

    context: FailureContext
    proxy: ProxyView | None
    kind: CauseKind | str

    def to_json(self) -> dict[str, Any]:
        return {
            **self.context.to_json(),
            "kind": self.kind,
            "proxy": None if self.proxy is None else self.proxy.to_json(),
        }


@dataclasses.dataclass(frozen=True)
class ProxyAnalysis:
    """The proxy side of a run.

    ``analysis`` is the run's :class:`~lossless.verify.analysis.core.Analysis` recomputed with the
    replicas the proxy named and with the causes of this module (use it in place of
    ``analyze(run)``); ``failures`` holds every failure with both views; ``entries`` is the number
    of proxy log lines, ``joined`` how many records have one; ``terminations`` counts termination
    states over all log lines; ``hidden`` counts requests the client saw succeed only because the
    proxy retried them, ``hidden_latency_ms`` their latency percentiles; ``messages`` are
    HAProxy's own messages (server state changes)."""

    analysis: Analysis
    failures: list[ProxyFailure]
    entries: int
    joined: int
    terminations: dict[str, int]
    hidden: int
    hidden_latency_ms: dict[str, float]
    settings: dict[str, Any]
    messages: list[str]

    def by_seq(self) -> dict[int, ProxyFailure]:
        return {f.context.seq: f for f in self.failures}

    def to_json(self) -> dict[str, Any]:
        """The proxy section of a report (the analysis itself: ``analysis.to_json()``)."""
        return {
            "entries": self.entries,
            "joined": self.joined,
            "terminations": self.terminations,
            "hidden_by_retries": self.hidden,
            "hidden_latency_ms": self.hidden_latency_ms,
            "settings": self.settings,
            "failures": [f.to_json() for f in self.failures],
        }


def _backend_reuse(entries: list[ProxyLogEntry]) -> set[int]:
    """Seqs sent on a backend connection (server, HAProxy source port) used before."""
    seen: set[tuple[str, int]] = set()
    reused: set[int] = set()
    for e in sorted(entries, key=lambda e: e.accepted):
        if not e.server or not e.backend_port or e.seq is None:
            continue
        key = (e.server, e.backend_port)
        if key in seen and e.tc <= 0:
            reused.add(e.seq)
        seen.add(key)
    return reused


def _rewrite(r: Record, entry: ProxyLogEntry | None) -> Record:
    replica = r.replica
    if entry is not None and entry.server and r.replica in ("", INGRESS):
        replica = entry.server
    return dataclasses.replace(r, replica=replica, client=0)


class _Explainer:
    """Proxy cause sentences, with the run's numbers."""

    def __init__(self, run: Run, events: list[Event]) -> None:
        self.settings: dict[str, Any] = {}
        ingress = run.settings.get("ingress")
        if isinstance(ingress, dict):
            self.settings = ingress
        self.events = events
        # seq of a silent close -> (replica, phase) of the previous response on its connection
        self.previous: dict[int, tuple[str, str]] = {}
        self.first: dict[tuple[str, EventKind], float] = {}
        self.view_removed: dict[str, float] = {}
        self.view_added: dict[str, float] = {}
        self.ready: dict[str, float] = {}
        for e in events:
            if not e.replica:
                continue
            self.first.setdefault((e.replica, e.kind), e.t)
            if e.kind is EventKind.VIEW_REMOVED and e.client in (0, None):
                self.view_removed[e.replica] = e.t
            elif e.kind is EventKind.VIEW_ADDED and e.client in (0, None):
                self.view_added.setdefault(e.replica, e.t)
            elif e.kind is EventKind.READY:
                self.ready.setdefault(e.replica, e.t)

    def retries(self) -> str:
        retries = self.settings.get("retries")
        redispatch = self.settings.get("redispatch")
        if retries is None:
            return "its retries"
        text = f"retries {retries}"
        if redispatch:
            text += f", option redispatch {redispatch}"
        return text

    def pending_adds(self, t0: float, t1: float) -> list[str]:
        """Replicas ready at some point in [t0, t1] that the proxy had not added yet."""
        return sorted(
            name
            for name, ready in self.ready.items()
            if ready <= t1 and self.view_added.get(name, math.inf) > t0
        )

    def explain_retried(
        self,
        hidden: Sequence[Record],
        lines: dict[int, ProxyLogEntry],
        latency_ms: dict[str, float],
        analyzer: Analyzer,
    ) -> Cause[FailureContext]:
        """The cause of the requests that succeeded only because the proxy retried them."""
        n = len(hidden)
        requests = _plural(n, "request")
        t0, t1 = min(r.sent for r in hidden), max(r.sent for r in hidden)
        window = (
            f"at t={t0:.1f} s"
            if f"{t0:.1f}" == f"{t1:.1f}"
            else f"between t={t0:.1f} s and t={t1:.1f} s"
        )
        # the replicas terminating when they were sent: the likely first attempts
        terminating: set[str] = set()
        needed: list[float] = []
        for name, tl in analyzer.timelines.items():
            if any(tl.phase(r.sent) in _TERMINATING for r in hidden):
                terminating.add(name)
                start = tl.terminated_at()
                removed = self.view_removed.get(name)
                if start is not None and removed is not None:
                    needed.append(removed - start)
        attempts = sum(lines[r.seq].retries for r in hidden)
        p99 = f", p99 latency {latency_ms['p99']:.0f} ms" if "p99" in latency_ms else ""
        who = (
            f"; replicas terminating then: {', '.join(sorted(terminating))}" if terminating else ""
        )
        cause = (
            f"{requests} failed on a first attempt and got a response only because HAProxy "
            f"retried them ({self.retries()}; {attempts} retries in all{p99}) {window}{who}: "
            f"the upgrade failed them, the proxy hid it"
        )
        drain = max(1, math.ceil(max(needed, default=1.0)))
        fix = (
            f"make the first attempt succeed: a drain delay ≥ {drain} s (LOSSLESS_DRAIN_DELAY) or "
            f"a preStop sleep of {drain} s so replicas serve until the proxy has removed them; "
            "proxies retry a bounded number of times, at up to 1 s each, and once a request "
            "was sent only an idempotent one (a refused connect is retried whatever the method). "
            "If your production proxy retries exactly like this one, accept them with "
            "--allow-retries"
        )
        contexts = [analyzer.context(r) for r in hidden[:_MAX_EXAMPLES]]
        names = sorted({r.replica for r in hidden if r.replica and r.replica != INGRESS})
        seqs = tuple(r.seq for r in hidden)
        return Cause(CauseKind.INGRESS_RETRIED, cause, fix, n, names, contexts, seqs)

    def explain(
        self, kind: CauseKind, items: list[tuple[Record, FailureContext, ProxyView | None]]
    ) -> Cause[FailureContext]:
        records = [r for r, _, _ in items]
        contexts = [c for _, c, _ in items]
        names = sorted({r.replica for r in records if r.replica and r.replica != INGRESS})
        who = ", ".join(names) if names else "no replica"
        n = len(records)
        requests = _plural(n, "request")
        t0, t1 = min(r.sent for r in records), max(r.sent for r in records)
        window = (
            f"at t={t0:.1f} s"
            if f"{t0:.1f}" == f"{t1:.1f}"
            else f"between t={t0:.1f} s and t={t1:.1f} s"
        )
        classes = Counter(r.error.value for r in records)
        tail = " [" + ", ".join(f"{k}: {v}" for k, v in classes.most_common()) + "]"
        views = [v for _, _, v in items if v is not None]
        if kind is CauseKind.INGRESS_SILENT_CLOSE:
            keepalive = self.settings.get("timeout_keep_alive")
            limit = f" ({keepalive:g} s)" if isinstance(keepalive, int | float) else ""
            behind = sorted({self.previous[r.seq][0] for r in records if r.seq in self.previous})
            if behind:
                why = (
                    f"the last response on each of those connections came from a terminating "
                    f"replica ({', '.join(behind)}), which closed its kept-alive connection to "
                    f"the proxy as the next request went out on it; with http-reuse safe HAProxy "
                    f"passes that close on to the client instead of answering, so that the "
                    f"client can retry (retry-on empty-response makes HAProxy retry it instead)"
                )
            else:
                why = (
                    f"HAProxy drops an idle client connection at timeout "
                    f"http-keep-alive{limit}, and when a pooled backend connection is closed "
                    f"under a request it passes the close on to the client"
                )
            cause = (
                f"the proxy closed the kept-alive client connections of {requests} without a "
                f"response and without a log line {window}: {why}"
            )
            fix = (
                "keep replicas from closing kept-alive connections during the drain "
                "(Connection: close on responses, idle connections closed after the drain "
                "delay: lossless serve does), set retry-on empty-response on the proxy, and "
                "retry idempotent requests that got no response byte on a reused connection "
                "(as Go's http.Transport and urllib3 do)"
            )
        elif kind is CauseKind.INGRESS_NO_SERVER:
            pending = self.pending_adds(t0, t1)
            late = (
                f"; ready replicas the proxy had not added yet: {', '.join(pending)}"
                if pending
                else ""
            )
            cause = (
                f"the proxy had no server to route to: {requests} answered 503 by HAProxy "
                f"itself (<NOSRV>) {window}{late}"
            )
            fix = (
                "keep old replicas serving until the proxy has added the new ones: "
                "minReadySeconds ≥ the ingress propagation delay, or a drain delay / preStop "
                "sleep that covers it"
            )
        elif kind is CauseKind.INGRESS_CONNECT_FAILED:
            gaps: list[float] = []
            needed: list[float] = []
            for name in names:
                sigterm = self.first.get((name, EventKind.SIGTERM))
                start = (
                    sigterm if sigterm is not None else self.first.get((name, EventKind.DELETING))
                )
                closed = self.first.get((name, EventKind.LISTENER_CLOSED))
                mine = [r.sent for r in records if r.replica == name]
                closed = min(mine) if closed is None else min(closed, *mine)
                removed = self.view_removed.get(name, max(mine))
                gaps.append(max(0.0, removed - closed))
                needed.append(removed - (closed if start is None else start))
            gap = max(gaps, default=0.0)
            drain = max(1, math.ceil(max(needed, default=gap)))
            retried = sum(1 for v in views if v.retries)
            how = (
                f" after retrying ({self.retries()})"
                if retried
                else f" (no retry: {self.retries()})"
            )
            pending = self.pending_adds(t0, t1)
            late = f"; ready replicas it had not added yet: {', '.join(pending)}" if pending else ""
            cause = (
                f"listener closed {gap:.1f} s before the proxy stopped routing to it: HAProxy "
                f"could not connect to {who} and answered 503 (SC--) to {requests}{how} "
                f"{window}{late}"
            )
            fix = (
                f"set a drain delay ≥ {drain} s (LOSSLESS_DRAIN_DELAY) or a preStop sleep of "
                f"{drain} s so the replica accepts connections until the ingress has removed "
                f"it; the proxy's retries only hide part of it, at up to 1 s per retry"
            )
        elif kind is CauseKind.INGRESS_BACKEND_CLOSED:
            pooled = sum(1 for v in views if v.backend_reused)
            terminating = sum(1 for c in contexts if c.phase in _TERMINATING)
            cause = (
                f"{who} closed the proxy's connection before or while answering: {requests} "
                f"got 502 or a cut response {window} ({pooled} on pooled backend connections, "
                f"{terminating} while the replica was terminating)"
            )
            fix = (
                "close kept-alive connections only after the drain delay, answering "
                "Connection: close during the drain (lossless serve does); keep the app's "
                "keep-alive timeout above the proxy's idle pool timeout; retry-on "
                "empty-response lets the proxy retry the idempotent ones"
            )
        else:  # ingress_timeout
            timeout = self.settings.get("timeout_server")
            limit = f"{timeout:g} s" if isinstance(timeout, int | float) else "its"
            cause = (
                f"{who} did not answer {requests} within the proxy's {limit} server timeout "
                f"(504, sH--) {window}"
            )
            fix = "find the slow path (look up the x-lossless-seq values) or raise timeout server"
        seqs = tuple(r.seq for r in records)
        return Cause(kind, cause + tail, fix, n, names, contexts[:_MAX_EXAMPLES], seqs)


def _retries_per_kind(
    figures: dict[str, dict[str, Any]],
    settings: dict[str, Any],
    hidden: Sequence[Record],
    failed: Sequence[Record],
    views: dict[int, ProxyView | None],
) -> dict[str, dict[str, Any]]:
    """``figures`` (requests, failures per kind) with, per kind, ``retried`` (saved only by a
    proxy retry) and ``not_retried`` (failures the proxy logged without a retry)."""
    if not figures:
        return figures
    kinds = settings.get("requests")
    names = [str(k.get("name", "?")) for k in kinds if isinstance(k, dict)] if kinds else []
    out = {name: {**row, "retried": 0, "not_retried": 0} for name, row in figures.items()}

    def row(r: Record) -> dict[str, Any] | None:
        return out.get(names[r.kind]) if 0 <= r.kind < len(names) else None

    for r in hidden:
        found = row(r)
        if found is not None:
            found["retried"] += 1
    for r in failed:
        found, view = row(r), views.get(r.seq)
        if found is not None and view is not None and view.retries == 0:
            found["not_retried"] += 1
    return out


def _never_connected(entries: Sequence[ProxyLogEntry]) -> set[str]:
    """Servers the proxy tried and never connected to: every log line naming them ends ``SC``."""
    connected: dict[str, bool] = {}
    for e in entries:
        if e.server:
            connected[e.server] = connected.get(e.server, False) or not e.termination.startswith(
                "SC"
            )
    return {name for name, ok in connected.items() if not ok}


def _proxy_kind(r: Record, view: ProxyView | None) -> CauseKind | None:
    if view is None:
        if r.reused and r.error in (ErrorClass.RESET, ErrorClass.TRUNCATED):
            return CauseKind.INGRESS_SILENT_CLOSE
        return None
    term = view.termination
    if len(term) < 2:
        return None
    if not view.server and view.status == 503:
        return CauseKind.INGRESS_NO_SERVER
    if term[:2] == "SC":
        return CauseKind.INGRESS_CONNECT_FAILED
    if term[0] == "S" and term[1] in "HD":
        return CauseKind.INGRESS_BACKEND_CLOSED
    if term[:2] == "sH" or (term[0] == "s" and view.status == 504):
        return CauseKind.INGRESS_TIMEOUT
    return None


def _previous_on_connection(
    records: Sequence[Record], seqs: Sequence[int], analyzer: Analyzer
) -> dict[int, tuple[str, str]]:
    """For each of ``seqs``: the replica of the last answered request before it on the same
    client connection, when that replica was terminating (after deletion or SIGTERM) then."""
    wanted = set(seqs)
    if not wanted:
        return {}
    last: dict[tuple[int, int], Record] = {}
    out: dict[int, tuple[str, str]] = {}
    for r in sorted(records, key=lambda r: r.sent):
        key = (r.client, r.conn_id)
        if r.seq in wanted:
            prev = last.get(key)
            timeline = None if prev is None else analyzer.timelines.get(prev.replica)
            if prev is not None and timeline is not None:
                phase = timeline.phase(prev.sent)
                if phase in _TERMINATING:
                    out[r.seq] = (prev.replica, phase)
        elif 0 < r.status < 500 and r.conn_id:  # answered by a replica, not the proxy
            last[key] = r
    return out


def analyze_proxy(run: Run) -> ProxyAnalysis | None:
    """Analyse ``run`` with its proxy log (see the module docstring); None when the run has no
    ``proxy.jsonl``. Raises LosslessError for a corrupt proxy log."""
    path = run.dir / PROXY_LOG
    if not path.exists():
        return None
    entries, messages = read_proxy_log(path)
    by_seq: dict[int, ProxyLogEntry] = {}
    for e in entries:
        if e.seq is not None:
            by_seq[e.seq] = e
    reused = _backend_reuse(entries)
    records = [_rewrite(r, by_seq.get(r.seq)) for r in run.records]

    # pass 1: figures and failure contexts with the replicas the proxy named
    full = Analyzer(run.events, run.settings)
    for r in records:
        full.add(r)
    base = full.close(run.warnings)
    failed = [r for r in records if not r.ok and not r.error.is_artefact]
    contexts = {c.seq: c for c in base.contexts}

    views: dict[int, ProxyView | None] = {}
    kinds: dict[int, CauseKind] = {}
    for r in failed:
        line = by_seq.get(r.seq)
        view = None
        if line is not None:
            view = ProxyView(
                status=line.status,
                termination=line.termination,
                server=line.server,
                retries=line.retries,
                redispatched=line.redispatched,
                connect_ms=line.tc,
                response_ms=line.tr,
                total_ms=line.tt,
                backend_reused=r.seq in reused,
            )
        views[r.seq] = view
        kind = _proxy_kind(r, view)
        if kind is not None:
            kinds[r.seq] = kind

    # pass 2: the lab's rules explain the failures the proxy's log does not
    rest = Analyzer(run.events, run.settings)
    for r in records:
        if r.ok or r.error.is_artefact or r.seq not in kinds:
            rest.add(r)
    leftover = rest.close()
    explainer = _Explainer(run, sorted(run.events, key=lambda e: e.t))
    explainer.previous = _previous_on_connection(
        records,
        [seq for seq, kind in kinds.items() if kind is CauseKind.INGRESS_SILENT_CLOSE],
        full,
    )
    groups: dict[CauseKind, list[tuple[Record, FailureContext, ProxyView | None]]] = defaultdict(
        list
    )
    for r in failed:
        if r.seq in kinds:
            groups[kinds[r.seq]].append((r, contexts[r.seq], views[r.seq]))
    causes = [explainer.explain(kind, items) for kind, items in groups.items()]
    causes.extend(leftover.causes)
    causes.sort(key=lambda c: (-c.count, c.kind))
    leftover_kind = failure_kinds(leftover.causes)
    failures = [
        ProxyFailure(contexts[r.seq], views[r.seq], kinds.get(r.seq) or leftover_kind[r.seq])
        for r in failed
    ]

    hidden = [r for r in records if r.ok and r.seq in by_seq and by_seq[r.seq].retries > 0]
    hidden_latency = [
        (r.end - r.sent) * 1000 for r in hidden if r.end is not None and r.end >= r.sent
    ]
    hidden_ms = {k: round(v, 3) for k, v in percentiles(hidden_latency).items()}
    if hidden:
        causes.append(explainer.explain_retried(hidden, by_seq, hidden_ms, full))
        causes.sort(key=lambda c: (-c.count, c.kind))
    terminations = Counter(e.termination for e in entries)
    ingress_settings = run.settings.get("ingress")
    silent = sorted(set(base.silent_replicas) | _never_connected(entries))
    kinds_figures = _retries_per_kind(base.request_kinds, run.settings, hidden, failed, views)
    return ProxyAnalysis(
        analysis=dataclasses.replace(
            base,
            causes=causes,
            retried=len(hidden),
            retried_latency_ms=hidden_ms,
            silent_replicas=silent,
            request_kinds=kinds_figures,
        ),
        failures=failures,
        entries=len(entries),
        joined=sum(1 for r in run.records if r.seq in by_seq),
        terminations=dict(terminations.most_common()),
        hidden=len(hidden),
        hidden_latency_ms=hidden_ms,
        settings=ingress_settings if isinstance(ingress_settings, dict) else {},
        messages=messages,
    )


def failure_kinds(causes: Sequence[Cause[FailureContext]]) -> dict[int, CauseKind | str]:
    """The cause kind of every failed request (seq → kind) that ``causes`` group."""
    return {seq: c.kind for c in causes for seq in c.seqs}
