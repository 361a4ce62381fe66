"""Rendering of the long-lived clients (:class:`~lossless.verify.analysis.streams.StreamAnalysis`):
summary rows and lines for the text report, a lane per stream on the HTML report's timeline and
the table of failed sessions. Rendering only: every figure comes from the analysis."""

from __future__ import annotations

import html
from collections import defaultdict
from typing import Any

from lossless.verify.analysis.streams import StreamAnalysis, StreamFailure

__all__ = ["add_stream_lanes", "stream_failures_html", "stream_lines", "stream_rows"]

# session group -> (legend label, bar colour) on the stream lanes
SESSION_STYLES: dict[str, tuple[str, str]] = {
    "clean": ("open, ended cleanly", "#60a5fa"),  # a reconnect follows
    "stopped": ("open until the run stopped", "#93c5fd"),
    "cut": ("open, then ended without a clean end", "#fb923c"),  # established, then failed
    "failed": ("failed to connect", "#dc2626"),  # never established
}
_LANE_HEIGHT = 26


def stream_rows(sa: StreamAnalysis) -> list[tuple[str, str]]:
    """The summary rows: what was kept open, sessions and reconnects, failures by outcome."""
    kept = []
    if sa.streams:
        kept.append(f"{sa.streams} SSE")
    if sa.websockets:
        kept.append(f"{sa.websockets} WebSocket")
    by = ", ".join(f"{k} {v}" for k, v in sa.failures_by_outcome.items())
    failures = f"{sa.failures}" + (f" ({by})" if by else "")
    return [
        (
            "streams",
            f"{' + '.join(kept) or 'none'} kept open · {sa.sessions} sessions · "
            f"{sa.reconnects} reconnects · {sa.clean_ends} clean ends",
        ),
        ("stream failures", failures),
    ]


def _example(f: StreamFailure) -> str:
    parts = [f"{f.stream}#{f.session} {f.outcome}", f"replica {f.replica or '?'} ({f.phase})"]
    if f.since_sigterm is not None:
        parts.append(f"{f.since_sigterm:+.2f} s after SIGTERM")
    if f.since_endpoint_removed is not None:
        parts.append(f"{f.since_endpoint_removed:+.2f} s after endpoint removal")
    if f.detail:
        parts.append(f.detail)
    return ", ".join(parts)


def stream_lines(sa: StreamAnalysis) -> list[str]:
    """Plain lines for ``lossless report``: the summary rows and the streams' causes."""
    width = max(len(k) for k, _ in stream_rows(sa))
    lines = [""] + [f"{k.ljust(width)}  {v}" for k, v in stream_rows(sa)]
    if sa.causes:
        lines.append("stream causes:")
    for i, c in enumerate(sa.causes, start=1):
        lines.append(f"  {i}. [{c.count}] {c.cause}")
        lines.append(f"     fix: {c.fix}")
        lines.extend(f"     e.g. {_example(e)}" for e in c.examples[:3])
    return lines


def add_stream_lanes(fig: dict[str, Any], sa: StreamAnalysis) -> None:
    """Add one lane per stream below the replicas' lanes of ``fig`` (the report's Plotly
    figure, first row): a bar per session coloured by outcome (hover: replica, times, detail) and
    a ✕ where a session failed. Grows the figure by a lane's height per stream."""
    layout = fig["layout"]
    yaxis = layout["yaxis"]
    ticktext: list[str] = list(yaxis["ticktext"])
    names = sorted({s.name for s in sa.sessions_list}, key=lambda n: (n.split("-")[0], len(n), n))
    first = len(ticktext)
    index = {name: first + i for i, name in enumerate(names)}
    bars: dict[str, dict[str, list[Any]]] = defaultdict(lambda: defaultdict(list))
    fails: dict[str, list[Any]] = defaultdict(list)
    for s in sa.sessions_list:
        if not s.failed:
            group = s.outcome.value
        else:
            group = "failed" if s.established is None else "cut"
        b = bars[group]
        b["base"].append(round(s.opened, 3))
        b["x"].append(round(max(s.end - s.opened, 0.001), 3))
        b["y"].append(index[s.name])
        b["text"].append(
            html.escape(
                f"{s.name} session {s.session} → {s.replica or '?'}: {s.outcome.value} "
                f"{s.opened:.2f} → {s.end:.2f} s, {s.messages} messages"
                + (f"; {s.detail}" if s.detail else "")
            )
        )
        if s.failed:
            fails["x"].append(round(s.end, 3))
            fails["y"].append(index[s.name])
            fails["text"].append(html.escape(f"{s.name} session {s.session}: {s.outcome.value}"))
    for group, (label, colour) in SESSION_STYLES.items():
        if group not in bars:
            continue
        b = bars[group]
        fig["data"].append(
            {
                "type": "bar",
                "orientation": "h",
                "name": f"stream session: {label}",
                "legendgroup": "streams",
                "legendgrouptitle": {"text": "long-lived clients"},
                "base": b["base"],
                "x": b["x"],
                "y": b["y"],
                "width": 0.5,
                "marker": {"color": colour, "line": {"width": 1, "color": "#ffffff"}},
                "hovertext": b["text"],
                "hoverinfo": "text",
                "xaxis": "x",
                "yaxis": "y",
            }
        )
    if fails:
        fig["data"].append(
            {
                "type": "scatter",
                "mode": "markers",
                "name": "stream failed",
                "legendgroup": "streams",
                "x": fails["x"],
                "y": fails["y"],
                "marker": {"symbol": "x", "color": "#991b1b", "size": 10},
                "hovertext": fails["text"],
                "hoverinfo": "text",
                "xaxis": "x",
                "yaxis": "y",
            }
        )
    ticktext.extend(names)
    yaxis["ticktext"] = ticktext
    yaxis["tickvals"] = list(range(len(ticktext)))
    yaxis["range"] = [len(ticktext) - 0.5, -0.6]
    layout["height"] = layout["height"] + _LANE_HEIGHT * len(names)


def stream_failures_html(sa: StreamAnalysis) -> str:
    """The streams' section of the HTML report: summary, causes and every failed session."""
    e = html.escape
    rows = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in stream_rows(sa))
    causes = "".join(
        f"<tr><td>{e(c.kind)}</td><td>{c.count}</td><td>{e(c.cause)}</td><td>{e(c.fix)}</td></tr>"
        for c in sa.causes
    )
    failed = "".join(
        "<tr>"
        + "".join(
            f"<td>{e(str(v))}</td>"
            for v in (
                f.stream,
                f.session,
                f.outcome,
                f.kind,
                f.replica,
                f.phase,
                "" if f.since_sigterm is None else f"{f.since_sigterm:+.3f}",
                "" if f.since_endpoint_removed is None else f"{f.since_endpoint_removed:+.3f}",
                f"{f.opened:.3f} → {f.end:.3f}",
                f.detail,
            )
        )
        + "</tr>"
        for f in sa.failed
    )
    out = [f"<h2>Long-lived clients</h2><table>{rows}</table>"]
    if causes:
        out.append(
            f"<table><tr><th>kind</th><th>count</th><th>cause</th><th>fix</th></tr>{causes}</table>"
        )
    if failed:
        out.append(
            f"<h3>Failed stream sessions ({sa.failures})</h3><table><tr><th>stream</th>"
            "<th>session</th><th>outcome</th><th>cause</th><th>replica</th><th>phase</th>"
            "<th>since SIGTERM (s)</th><th>since endpoint removal (s)</th><th>open (s)</th>"
            f"<th>detail</th></tr>{failed}</table>"
        )
    return "".join(out)
