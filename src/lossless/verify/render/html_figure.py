"""The Plotly figure of one run's HTML report (see :mod:`lossless.verify.render.html_page`).

One figure with four rows on a shared, zoomable time axis (run-relative seconds):

1. a lane per replica with its phases as bars (:data:`PHASE_STYLES`: pending, starting, ready,
   not ready, deleting, preStop, SIGTERM sent, SIGKILL sent) built from the timeline, marks for
   its lifecycle events (deletion, endpoint removal, SIGTERM, listener closed, SIGKILL, exit) and
   the moments each client's view added (▲) or dropped (▼) it, and every failed request as an ✕
   under the lane of the replica it was sent to;
2. every request as a point at (sent, latency) coloured by outcome (:data:`OUTCOME_COLOURS`);
   failures are never left out; successes are decimated beyond :data:`MAX_OK_POINTS` (the
   slowest request of each time bin is always kept, so spikes stay visible;
   :mod:`~lossless.verify.render.figure_points` gathers them in one bounded pass);
3. latency percentiles (p50, p90, p99 within 1 %, exact max of successful requests) per time
   bin;
4. requests per bin, ok and failed (stacked).

Figure building only: a plain dict in Plotly's JSON schema, no I/O.
"""

from __future__ import annotations

import html
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from lossless.verify.analysis.core import Analysis
from lossless.verify.model import ErrorClass, Event, EventKind, Record
from lossless.verify.render.figure_points import MAX_OK_POINTS, RequestPoints, latency_ms
from lossless.verify.results import Run

__all__ = ["MAX_OK_POINTS", "OUTCOME_COLOURS", "PHASE_STYLES", "figure"]

MAX_LANE_FAILURES = 3000  # failure marks on the lanes before they are grouped per 50 ms

# phase -> (label, colour)
PHASE_STYLES: dict[str, tuple[str, str]] = {
    "pending": ("pending", "#e5e7eb"),
    "starting": ("starting", "#fde68a"),
    "ready": ("ready", "#86efac"),
    "not-ready": ("not ready", "#fca5a5"),
    "deleting": ("deleting (endpoint removal)", "#fdba74"),
    "prestop": ("preStop", "#c4b5fd"),
    "sigterm": ("SIGTERM sent", "#f87171"),
    "sigkill": ("SIGKILL sent", "#1f2937"),
}

OUTCOME_COLOURS: dict[str, str] = {
    "ok": "#60a5fa",
    "artefact": "#9ca3af",
    ErrorClass.REFUSED.value: "#dc2626",
    ErrorClass.CONNECT_TIMEOUT.value: "#7f1d1d",
    ErrorClass.RESET.value: "#f97316",
    ErrorClass.TRUNCATED.value: "#a16207",
    ErrorClass.HTTP_502.value: "#db2777",
    ErrorClass.HTTP_503.value: "#7c3aed",
    ErrorClass.HTTP_504.value: "#0d9488",
    ErrorClass.HTTP_5XX.value: "#be185d",
    ErrorClass.TIMEOUT.value: "#0891b2",
    ErrorClass.NO_ENDPOINT.value: "#111827",
}

# lifecycle marks on a lane: kind -> (symbol, colour, label)
_MARKS: dict[EventKind, tuple[str, str, str]] = {
    EventKind.READY: ("circle", "#15803d", "ready"),
    EventKind.DELETING: ("diamond", "#ea580c", "deleting (t0)"),
    EventKind.ENDPOINT_REMOVED: ("diamond-open", "#ea580c", "endpoint removed"),
    EventKind.PRESTOP_START: ("triangle-right", "#6d28d9", "preStop start"),
    EventKind.PRESTOP_END: ("triangle-left", "#6d28d9", "preStop end"),
    EventKind.SIGTERM: ("line-ns-open", "#b91c1c", "SIGTERM"),
    EventKind.LISTENER_CLOSED: ("star", "#b91c1c", "listener closed"),
    EventKind.SIGKILL: ("x-thin-open", "#111827", "SIGKILL"),
    EventKind.EXITED: ("square", "#111827", "exited"),
    EventKind.NOTE: ("circle-open", "#6b7280", "note"),
}

_NO_REPLICA = "(no replica)"


def _r(value: float, digits: int = 3) -> float:
    return round(value, digits)


def _outcome(r: Record) -> str:
    if r.ok:
        return "ok"
    if r.error.is_artefact:
        return "artefact"
    return r.error.value or ErrorClass.HTTP_5XX.value


# -- the timeline as lanes ---------------------------------------------------------------------
def _lanes(events: Sequence[Event], extra: Sequence[str]) -> list[str]:
    """Replica names in order of first appearance, then ``extra`` names not seen."""
    order: dict[str, float] = {}
    for e in events:
        if e.replica and e.replica not in order:
            order[e.replica] = e.t
    names = sorted(order, key=lambda n: (order[n], n))
    names.extend(sorted(n for n in set(extra) if n not in order))
    return names


def _segments(events: Sequence[Event], end: float) -> list[tuple[str, float, float, str]]:
    """(phase, start, end, detail) of one replica's events, sorted by time."""
    segments: list[tuple[str, float, float, str]] = []
    state: str | None = None
    since = 0.0
    detail = ""
    terminating = False

    def move(new: str | None, t: float, why: str) -> None:
        nonlocal state, since, detail
        if state is not None and t > since:
            segments.append((state, since, t, detail))
        state, since, detail = new, t, why

    for e in events:
        k = e.kind
        if k is EventKind.CREATED and state is None:
            move("pending", e.t, e.detail)
        elif k is EventKind.STARTED and not terminating:
            move("starting", e.t, e.detail)
        elif k is EventKind.READY and not terminating:
            move("ready", e.t, e.detail)
        elif k is EventKind.NOT_READY and not terminating:
            move("not-ready", e.t, e.detail)
        elif k is EventKind.DELETING:
            terminating = True
            move("deleting", e.t, e.detail)
        elif k is EventKind.PRESTOP_START:
            terminating = True
            move("prestop", e.t, e.detail)
        elif k is EventKind.PRESTOP_END and state == "prestop":
            move("deleting", e.t, e.detail)
        elif k is EventKind.SIGTERM and state != "sigkill":
            terminating = True
            move("sigterm", e.t, e.detail)
        elif k is EventKind.SIGKILL:
            terminating = True
            move("sigkill", e.t, e.detail)
        elif k is EventKind.EXITED:
            move(None, e.t, "")
    move(None, max(end, since), "")
    return segments


def _timeline_traces(
    run: Run, lanes: list[str], failures: list[tuple[Record, str]], end: float
) -> list[dict[str, Any]]:
    index = {name: i for i, name in enumerate(lanes)}
    per_replica: dict[str, list[Event]] = defaultdict(list)
    for e in run.events:
        if e.replica in index:
            per_replica[e.replica].append(e)
    traces: list[dict[str, Any]] = []
    # phases: one bar trace per phase (one legend entry each)
    bars: dict[str, dict[str, list[Any]]] = defaultdict(lambda: defaultdict(list))
    for name, events in per_replica.items():
        for phase, t0, t1, detail in _segments(events, end):
            b = bars[phase]
            b["base"].append(_r(t0))
            b["x"].append(_r(t1 - t0))
            b["y"].append(index[name])
            b["text"].append(
                f"{name}: {PHASE_STYLES[phase][0]} {t0:.2f} → {t1:.2f} s ({t1 - t0:.2f} s)"
                + (f"<br>{html.escape(detail[:120])}" if detail else "")
            )
    for phase, (label, colour) in PHASE_STYLES.items():
        if phase not in bars:
            continue
        b = bars[phase]
        traces.append(
            {
                "type": "bar",
                "orientation": "h",
                "name": label,
                "legendgroup": "phases",
                "legendgrouptitle": {"text": "replica phase"},
                "base": b["base"],
                "x": b["x"],
                "y": b["y"],
                "width": 0.42,
                "marker": {"color": colour, "line": {"width": 0}},
                "hovertext": b["text"],
                "hoverinfo": "text",
                "xaxis": "x",
                "yaxis": "y",
            }
        )
    # lifecycle marks
    marks: dict[EventKind, dict[str, list[Any]]] = defaultdict(lambda: defaultdict(list))
    views: dict[bool, dict[str, list[Any]]] = defaultdict(lambda: defaultdict(list))
    clients = sorted({e.client for e in run.events if e.client is not None}) or [0]
    offsets = {c: 0.3 + 0.1 * (i / max(1, len(clients) - 1)) for i, c in enumerate(clients)}
    for name, events in per_replica.items():
        for e in events:
            if e.kind in (EventKind.VIEW_ADDED, EventKind.VIEW_REMOVED) and e.client is not None:
                added = e.kind is EventKind.VIEW_ADDED
                v = views[added]
                v["x"].append(_r(e.t))
                v["y"].append(_r(index[name] + offsets.get(e.client, 0.3)))
                verb = "routes to" if added else "stopped routing to"
                v["text"].append(
                    f"t={e.t:.3f} s: client {e.client} {verb} {name}"
                    + (f"<br>{html.escape(e.detail[:120])}" if e.detail else "")
                )
            elif e.kind in _MARKS:
                m = marks[e.kind]
                m["x"].append(_r(e.t))
                m["y"].append(index[name])
                m["text"].append(
                    f"t={e.t:.3f} s: {name} {_MARKS[e.kind][2]}"
                    + (f"<br>{html.escape(e.detail[:160])}" if e.detail else "")
                )
    for kind, (symbol, colour, label) in _MARKS.items():
        if kind not in marks:
            continue
        m = marks[kind]
        traces.append(
            {
                "type": "scatter",
                "mode": "markers",
                "name": label,
                "legendgroup": "events",
                "legendgrouptitle": {"text": "lifecycle"},
                "x": m["x"],
                "y": m["y"],
                "marker": {
                    "symbol": symbol,
                    "color": colour,
                    "size": 11,
                    "line": {"width": 2, "color": colour},
                },
                "hovertext": m["text"],
                "hoverinfo": "text",
                "xaxis": "x",
                "yaxis": "y",
            }
        )
    for added in (True, False):
        if added not in views:
            continue
        v = views[added]
        traces.append(
            {
                "type": "scatter",
                "mode": "markers",
                "name": "view added (per client)" if added else "view removed (per client)",
                "legendgroup": "views",
                "legendgrouptitle": {"text": "client views"},
                "x": v["x"],
                "y": v["y"],
                "marker": {
                    "symbol": "triangle-up" if added else "triangle-down",
                    "color": "#16a34a" if added else "#ea580c",
                    "size": 8,
                },
                "hovertext": v["text"],
                "hoverinfo": "text",
                "xaxis": "x",
                "yaxis": "y",
            }
        )
    # failures on their replica's lane
    by_class: dict[str, list[tuple[Record, str]]] = defaultdict(list)
    for r, replica in failures:
        by_class[_outcome(r)].append((r, replica))
    grouped = len(failures) > MAX_LANE_FAILURES
    for outcome, items in by_class.items():
        xs: list[float] = []
        ys: list[float] = []
        texts: list[str] = []
        if grouped:  # one mark per (replica, 50 ms) with the count
            cells: dict[tuple[str, int], list[Record]] = defaultdict(list)
            for r, replica in items:
                cells[(replica, int(r.sent / 0.05))].append(r)
            for (replica, _), rs in cells.items():
                xs.append(_r(rs[0].sent))
                ys.append(index.get(replica, 0) - 0.32)
                texts.append(f"{len(rs)} failed ({outcome}) on {replica} (seq {rs[0].seq}…)")
        else:
            for r, replica in items:
                xs.append(_r(r.sent))
                ys.append(index.get(replica, 0) - 0.32)
                texts.append(f"seq {r.seq}: {outcome} on {replica}, sent t={r.sent:.3f} s")
        traces.append(
            {
                "type": "scatter",
                "mode": "markers",
                "name": f"{outcome} (on its replica)",
                "legendgroup": f"outcome-{outcome}",
                "showlegend": False,
                "x": xs,
                "y": ys,
                "marker": {
                    "symbol": "x",
                    "color": OUTCOME_COLOURS.get(outcome, "#000000"),
                    "size": 7,
                },
                "hovertext": texts,
                "hoverinfo": "text",
                "xaxis": "x",
                "yaxis": "y",
            }
        )
    return traces


# -- requests ----------------------------------------------------------------------------------
def _request_traces(
    points: RequestPoints, replicas: dict[int, str]
) -> tuple[list[dict[str, Any]], int]:
    """Scatter traces of row 2 and the number of successes left out."""
    by_outcome: dict[str, list[Record]] = defaultdict(list)
    dropped = 0
    for outcome in ("ok", "artefact"):
        kept, left_out = points.points(outcome)
        if kept:
            by_outcome[outcome] = kept
        dropped += left_out
    for r in points.failed:
        by_outcome[_outcome(r)].append(r)
    traces: list[dict[str, Any]] = []
    order = ["ok", "artefact", *sorted(k for k in by_outcome if k not in ("ok", "artefact"))]
    for outcome in order:
        items = by_outcome.get(outcome)
        if not items:
            continue
        failed = outcome not in ("ok", "artefact")
        name = outcome if outcome in ("ok", "artefact") else f"failed: {outcome}"
        traces.append(
            {
                "type": "scatter",
                "mode": "markers",
                "name": name,
                "legendgroup": f"outcome-{outcome}",
                "legendgrouptitle": {"text": "requests"} if outcome == order[0] else None,
                "x": [_r(r.sent) for r in items],
                "y": [latency_ms(r) for r in items],
                "customdata": [r.seq for r in items],
                "text": [replicas.get(r.seq, r.replica) or "-" for r in items],
                "hovertemplate": (
                    f"seq %{{customdata}} {outcome}<br>%{{text}}<br>sent %{{x:.3f}} s"
                    "<br>%{y} ms<extra></extra>"
                ),
                "marker": {
                    "color": OUTCOME_COLOURS.get(outcome, "#000000"),
                    "size": 7 if failed else 4,
                    "opacity": 0.95 if failed else 0.45,
                    "symbol": "x" if failed else "circle",
                },
                "xaxis": "x2",
                "yaxis": "y2",
            }
        )
    for t in traces:
        if t["legendgrouptitle"] is None:
            del t["legendgrouptitle"]
    return traces, dropped


def _bin_traces(points: RequestPoints) -> list[dict[str, Any]]:
    # at most BINS bins, and about 20 requests a bin or more so that percentiles mean something
    width, first, rows = points.rows()
    centres: list[float] = []
    pcts: dict[str, list[float | None]] = {k: [] for k in ("p50", "p90", "p99", "max")}
    ok_counts: list[int] = []
    fail_counts: list[int] = []
    for b, row in enumerate(rows):
        centres.append(_r((first + b + 0.5) * width))
        p = {} if row is None else row.latencies.percentiles()
        for k in pcts:
            pcts[k].append(_r(p[k], 2) if k in p else None)
        ok_counts.append(0 if row is None else row.requests)
        fail_counts.append(0 if row is None else row.failed)
    colours = {"p50": "#2563eb", "p90": "#7c3aed", "p99": "#db2777", "max": "#9ca3af"}
    traces: list[dict[str, Any]] = [
        {
            "type": "scatter",
            "mode": "lines",
            "name": f"latency {k}",
            "legendgroup": "latency",
            "legendgrouptitle": {"text": f"per {width:g} s"} if k == "p50" else None,
            "x": centres,
            "y": v,
            "line": {"color": colours[k], "width": 1 if k == "max" else 2, "shape": "hv"},
            "connectgaps": False,
            "hovertemplate": f"{k} %{{y}} ms<extra></extra>",
            "xaxis": "x3",
            "yaxis": "y3",
        }
        for k, v in pcts.items()
    ]
    for t in traces:
        if t["legendgrouptitle"] is None:
            del t["legendgrouptitle"]
    for name, counts, colour in (
        ("requests per bin", ok_counts, "#93c5fd"),
        ("failed per bin", fail_counts, "#dc2626"),
    ):
        traces.append(
            {
                "type": "bar",
                "name": name,
                "legendgroup": "throughput",
                "x": centres,
                "y": counts,
                "marker": {"color": colour},
                "hovertemplate": f"%{{y}} {name.split()[0]}<extra></extra>",
                "xaxis": "x4",
                "yaxis": "y4",
            }
        )
    return traces


# -- the figure --------------------------------------------------------------------------------
def figure(
    run: Run,
    analysis: Analysis,
    *,
    replicas: dict[int, str] | None = None,
    points: RequestPoints | None = None,
) -> dict[str, Any]:
    """The Plotly figure (``{"data": [...], "layout": {...}}``) of the report. ``replicas`` maps
    a failed request's seq to the replica it was sent to (default: the failure contexts').
    ``points``: the requests as gathered while the records streamed (default: gathered now from
    ``run.records``; the figure is the same either way)."""
    if points is None:
        points = RequestPoints.of(run.events, run.records)
    contexts = {c.seq: c for c in analysis.contexts}
    sent_to = {seq: c.replica for seq, c in contexts.items()}
    if replicas:
        sent_to.update(replicas)
    failures = [(r, sent_to.get(r.seq) or r.replica or _NO_REPLICA) for r in points.failed]
    lanes = _lanes(run.events, [name for _, name in failures])
    span = points.span
    traces = _timeline_traces(run, lanes, failures, span[1])
    request_traces, dropped = _request_traces(points, sent_to)
    traces.extend(request_traces)
    traces.extend(_bin_traces(points))
    lane_height = 34 * max(1, len(lanes)) + 40
    rows = [lane_height, 260, 190, 130]
    gap = 36
    total = sum(rows) + gap * (len(rows) - 1) + 90
    domains: list[list[float]] = []
    top = 1.0
    for h in rows:
        bottom = top - h / (total - 90)
        domains.append([max(0.0, _r(bottom, 4)), _r(top, 4)])
        top = bottom - gap / (total - 90)
    shapes: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for e in run.events:
        if e.kind in (EventKind.ROLLOUT_START, EventKind.ROLLOUT_END) and not e.replica:
            shapes.append(
                {
                    "type": "line",
                    "xref": "x",
                    "yref": "paper",
                    "x0": _r(e.t),
                    "x1": _r(e.t),
                    "y0": 0,
                    "y1": 1,
                    "line": {"color": "#6b7280", "width": 1, "dash": "dot"},
                }
            )
            annotations.append(
                {
                    "x": _r(e.t),
                    "y": 1.0,
                    "xref": "x",
                    "yref": "paper",
                    "text": e.kind.value.replace("_", " "),
                    "showarrow": False,
                    "yanchor": "bottom",
                    "font": {"size": 10, "color": "#6b7280"},
                }
            )
    xaxis: dict[str, Any] = {"showgrid": True, "zeroline": False, "range": [span[0], span[1]]}
    layout: dict[str, Any] = {
        "height": total,
        "margin": {"l": 90, "r": 20, "t": 40, "b": 50},
        "hovermode": "closest",
        "barmode": "overlay",
        "plot_bgcolor": "#ffffff",
        "legend": {"groupclick": "toggleitem", "font": {"size": 11}},
        "shapes": shapes,
        "annotations": annotations,
        "xaxis": {**xaxis, "anchor": "y", "showticklabels": True},
        "xaxis2": {**xaxis, "anchor": "y2", "matches": "x", "showticklabels": False},
        "xaxis3": {**xaxis, "anchor": "y3", "matches": "x", "showticklabels": False},
        "xaxis4": {
            **xaxis,
            "anchor": "y4",
            "matches": "x",
            "title": {"text": "seconds since the run started"},
        },
        "yaxis": {
            "domain": domains[0],
            "tickmode": "array",
            "tickvals": list(range(len(lanes))),
            "ticktext": lanes,
            "range": [len(lanes) - 0.5, -0.6],
            "fixedrange": True,
            "showgrid": False,
            "zeroline": False,
        },
        "yaxis2": {
            "domain": domains[1],
            "type": "log",
            "dtick": 1,
            "tickformat": "~g",
            "title": {"text": "latency (ms)"},
            "zeroline": False,
        },
        "yaxis3": {"domain": domains[2], "title": {"text": "ms"}, "rangemode": "tozero"},
        "yaxis4": {"domain": domains[3], "title": {"text": "requests"}, "fixedrange": True},
    }
    return {"data": traces, "layout": layout, "dropped_ok": dropped, "lanes": lanes}
