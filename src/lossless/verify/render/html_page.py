"""A self-contained HTML report of one run: see the rollout, every request and every failure.

:func:`render_html` returns one HTML document that works offline (plotly.js is inlined, no CDN,
no external file) with:

- a summary (requests, failures, success ratio, latency, the run's settings);
- one Plotly figure with four rows on a shared, zoomable time axis (run-relative seconds):

  1. a lane per replica with its phases as bars (:data:`PHASE_STYLES`: pending, starting,
     ready, not ready, deleting, preStop, SIGTERM sent, SIGKILL sent) built from the timeline,
     marks for its lifecycle events (deletion, endpoint removal, SIGTERM, listener closed,
     SIGKILL, exit) and the moments each client's view added (▲) or dropped (▼) it, and every
     failed request as an ✕ under the lane of the replica it was sent to;
  2. every request as a point at (sent, latency) coloured by outcome (:data:`OUTCOME_COLOURS`);
     failures are never left out; successes are decimated beyond :data:`MAX_OK_POINTS` (the
     slowest request of each time bin is always kept, so spikes stay visible);
  3. latency percentiles (p50, p90, p99, max of successful requests) per time bin;
  4. requests per bin, ok and failed (stacked);

- the causes (cause, fix, count) and a table of the failed requests (at most
  :data:`MAX_TABLE_ROWS` rows) with what the client saw, the replica's phase, the timing against
  its SIGTERM and its removal from the client's view, what the proxy saw (``ingress`` runs) and
  the cause. Clicking a failure point scrolls to its row.

The figure is drawn with SVG (no WebGL: it renders in every browser, remote desktop and headless
browser, and the decimation keeps it fast); see docs/html-report.md for the choice of Plotly.
Rendering only: every figure comes from the run and its analysis.
"""

from __future__ import annotations

import html
import importlib
import json
import os
from collections.abc import Sequence

from lossless.errors import LosslessError
from lossless.verify.analysis.core import Analysis, FailureContext
from lossless.verify.analysis.kinds import CauseKind
from lossless.verify.analysis.proxy import ProxyAnalysis
from lossless.verify.analysis.report import Report
from lossless.verify.analysis.verdict import Verdict
from lossless.verify.model import Record
from lossless.verify.render.figure_points import MAX_OK_POINTS, RequestPoints
from lossless.verify.render.html_figure import figure
from lossless.verify.render.html_stress import stress_section
from lossless.verify.results import Run

__all__ = ["MAX_TABLE_ROWS", "render_html", "write_html"]

MAX_TABLE_ROWS = 1000  # failed requests listed in the table at most


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _fmt_s(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def _summary(run: Run, a: Analysis, proxy: ProxyAnalysis | None, v: Verdict | None) -> str:
    lat = a.latency_ms
    latency = " · ".join(f"{k} {lat[k]:.1f} ms" for k in ("p50", "p99", "max") if k in lat) or "-"
    by_class = ", ".join(f"{k} {v}" for k, v in a.failures_by_class.items())
    verdict = "ok" if a.failures == 0 and a.retried == 0 else "failures"
    s = run.settings
    cards = [
        ("requests", f"{a.requests}", f"{a.rate_sent:g} req/s over {a.duration_s:.1f} s"),
        ("failures", f"{a.failures}", by_class or "none"),
        ("success", f"{a.success_ratio * 100:.3f} %", "of the service's answers"),
        ("latency", latency, "complete responses < 500"),
        ("artefacts", f"{a.artefacts}", "generator's own (not the service)"),
    ]
    if proxy is not None:
        cards.append(
            (
                "hidden by proxy retries",
                f"{a.retried}",
                "requests that succeeded only after a retry"
                + (
                    f" (p99 {a.retried_latency_ms['p99']:.0f} ms)"
                    if "p99" in a.retried_latency_ms
                    else ""
                ),
            )
        )
    if v is not None:
        cards.insert(
            0,
            (
                "verdict",
                v.outcome.value,
                "; ".join(v.reasons) or f"achieved {a.rate_achieved:g} of {a.rate_sent:g} req/s",
            ),
        )
    out = [f'<div class="cards verdict-{verdict}">']
    for title, value, note in cards:
        slug = title.split()[0]
        extra = f" outcome-{value}" if slug == "verdict" else ""
        out.append(
            f'<div class="card card-{_e(slug)}{extra}"><div class="k">{_e(title)}</div>'
            f'<div class="v">{_e(value)}</div><div class="n">{_e(note)}</div></div>'
        )
    out.append("</div>")
    keys = (
        "strategy",
        "traffic",
        "replicas",
        "rate",
        "clients",
        "propagation_delay",
        "grace_period",
        "prestop",
        "max_surge",
        "max_unavailable",
        "new_conn_ratio",
        "command",
        "new_command",
        "ingress",
    )
    rows = [
        f"<tr><th>{_e(k)}</th><td><code>{_e(_setting(s[k]))}</code></td></tr>"
        for k in keys
        if s.get(k) not in (None, "", [])
    ]
    if rows:
        out.append(
            '<details class="settings"><summary>settings</summary><table>'
            + "".join(rows)
            + "</table></details>"
        )
    return "\n".join(out)


def _setting(value: object) -> str:
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={_setting(v)}" for k, v in value.items())
    return str(value)


def _causes_table(a: Analysis) -> str:
    if not a.causes:
        return '<p class="none">No request failed.</p>'
    rows = [
        f'<tr class="cause-row" id="cause-{_e(c.kind)}"><td class="num">{c.count}</td>'
        f"<td><code>{_e(c.kind)}</code></td><td>{_e(c.cause)}</td><td>{_e(c.fix)}</td></tr>"
        for c in a.causes
    ]
    return (
        '<table class="causes"><thead><tr><th>count</th><th>kind</th><th>cause</th>'
        "<th>fix</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    )


def _failure_row(c: FailureContext, kind: str, proxy_text: str, records: dict[int, Record]) -> str:
    r = records.get(c.seq)
    saw = c.error or str(c.status)
    if r is not None and r.status and str(r.status) != saw:
        saw += f" (HTTP {r.status})"
    if r is not None and r.end is not None:
        saw += f" after {(r.end - r.sent) * 1000:.0f} ms"
    if c.in_view is None:
        view = ""
    elif c.in_view:
        view = "yes" + (
            f", {c.view_removed_in:.2f} s more" if c.view_removed_in is not None else ""
        )
    else:
        view = "no"
    return (
        f'<tr class="failure-row" id="failure-{c.seq}"><td class="num">{c.seq}</td>'
        f'<td class="num">{c.sent:.3f}</td><td>{_e(saw)}</td>'
        f"<td>{_e(c.replica or '-')}</td><td>{_e(c.phase)}</td>"
        f'<td class="num">{_fmt_s(c.since_sigterm)}</td><td>{_e(view)}</td>'
        f"<td>{c.client} / #{c.conn_id}{' reused' if c.reused else ''}</td>"
        f"<td>{_e(proxy_text)}</td>"
        f'<td><a href="#cause-{_e(kind)}"><code>{_e(kind)}</code></a></td></tr>'
    )


def _failures_table(
    run: Run,
    a: Analysis,
    kinds: dict[int, CauseKind | str],
    proxy: ProxyAnalysis | None,
    failed: Sequence[Record],
) -> str:
    if not a.contexts:
        return ""
    records = {r.seq: r for r in failed}
    if run.records and any(c.seq not in records for c in a.contexts):
        records = {r.seq: r for r in run.records}  # a proxy's contexts name retried requests
    proxy_views = proxy.by_seq() if proxy is not None else {}
    rows: list[str] = []
    for c in a.contexts[:MAX_TABLE_ROWS]:
        pf = proxy_views.get(c.seq)
        proxy_text = ""
        if proxy is not None:
            proxy_text = "no log line" if pf is None or pf.proxy is None else pf.proxy.describe()
        rows.append(_failure_row(c, kinds.get(c.seq, ""), proxy_text, records))
    more = len(a.contexts) - MAX_TABLE_ROWS
    note = (
        f'<p class="more">{more} more failed requests are not listed (lossless report '
        f"--json {_e(run.dir)} has them all).</p>"
        if more > 0
        else ""
    )
    return (
        '<table class="failures"><thead><tr><th>seq</th><th>sent (s)</th><th>client saw</th>'
        "<th>replica</th><th>phase at send</th><th>since SIGTERM (s)</th>"
        "<th>still in the client's view</th><th>client / conn</th><th>proxy saw</th>"
        "<th>cause</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>" + note
    )


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#111827}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:28px 0 8px}
.sub{color:#6b7280;margin-bottom:16px}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:12px 0}
.card{border:1px solid #e5e7eb;border-radius:8px;padding:8px 12px;min-width:150px}
.card .k{color:#6b7280;font-size:12px}.card .v{font-size:20px;font-weight:600}
.card .n{color:#6b7280;font-size:12px}
.verdict-failures .card-failures .v{color:#dc2626}
.verdict-ok .card-failures .v{color:#16a34a}
.card-verdict .v{text-transform:uppercase}
.outcome-pass .v{color:#16a34a} .outcome-fail .v{color:#dc2626} .outcome-inconclusive .v{color:#d97706}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{border-bottom:1px solid #e5e7eb;padding:4px 6px;text-align:left;vertical-align:top}
th{background:#f9fafb;position:sticky;top:0}
td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.failure-row:target{background:#fef3c7}
details.settings{margin:8px 0} details.settings table{width:auto}
.none{color:#16a34a} .more,.note{color:#6b7280}
code{font-size:12px}
"""

_JS = """
(function(){
  var spec = JSON.parse(document.getElementById('lossless-figure').textContent);
  var el = document.getElementById('timeline');
  Plotly.newPlot(el, spec.data, spec.layout, {responsive: true, displaylogo: false,
    scrollZoom: false, toImageButtonOptions: {format: 'png', filename: 'lossless-run'}});
  el.on('plotly_click', function(ev){
    if (!ev || !ev.points || !ev.points.length) return;
    var seq = ev.points[0].customdata;
    var row = seq === undefined ? null : document.getElementById('failure-' + seq);
    if (row) { location.hash = 'failure-' + seq; row.scrollIntoView({block: 'center'}); }
  });
  document.body.setAttribute('data-rendered', 'yes');
})();
"""


def _plotly_js() -> str:
    try:
        offline = importlib.import_module("plotly.offline")  # untyped: no stubs needed
    except ImportError:
        raise LosslessError(
            "the HTML report needs plotly: pip install 'lossless[verify]' (or pip install plotly)"
        ) from None
    return str(offline.get_plotlyjs())


def _json_for_script(obj: object) -> str:
    text = json.dumps(obj, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    return text.replace("</", "<\\/")


def render_html(
    report: Report,
    *,
    verdict: Verdict | None = None,
    title: str | None = None,
    points: RequestPoints | None = None,
) -> str:
    """The report of one analysed run as one self-contained HTML document (see the module
    docstring). Renders only: the run was analysed once (:func:`~lossless.verify.analysis.report.
    analyse`); ``verdict`` (when given) heads the summary; ``points`` are the requests as the
    analysis' pass gathered them (a :class:`RequestPoints` sink of ``analyse_dir``), needed when
    ``report.run.records`` were streamed, not kept. Raises LosslessError when plotly is not
    installed."""
    run, analysis, proxy, kinds = report.run, report.analysis, report.proxy, report.kinds
    replicas = report.replicas
    if points is None:  # the records are in memory: gather the points now (the same figure)
        points = RequestPoints.of(run.events, run.records)
    fig = figure(run, analysis, replicas=replicas, points=points)
    dropped = int(fig.pop("dropped_ok"))
    lanes = fig.pop("lanes")
    streams_html = ""
    if report.streams is not None:  # the long-lived clients (issue 13 item 3)
        from lossless.verify.render.streams import add_stream_lanes, stream_failures_html

        add_stream_lanes(fig, report.streams)
        streams_html = stream_failures_html(report.streams)
    heading = title or f"lossless verify: {run.dir.name}"
    note = (
        f'<p class="note">{dropped} of the {points.n} requests are not drawn: beyond '
        f"{MAX_OK_POINTS} successful ones the figure keeps the slowest of each time bin and a "
        "few others (decimation, so the page stays small whatever the run's length); every "
        "failure is drawn.</p>"
        if dropped
        else ""
    )
    warnings = "".join(f'<p class="note">warning: {_e(w)}</p>' for w in analysis.warnings)
    return "".join(
        [
            "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>",
            f"<title>{_e(heading)}</title>",
            "<meta name='viewport' content='width=device-width, initial-scale=1'>",
            f"<style>{_CSS}</style>",
            "<script>",
            _plotly_js(),
            "</script></head><body>",
            f"<h1>{_e(heading)}</h1>",
            f'<div class="sub">{_e(run.dir)} · {len(lanes)} replicas · '
            f"{len(run.events)} timeline events</div>",
            _summary(run, analysis, proxy, verdict),
            warnings,
            "<h2>Timeline</h2>",
            "<p class=\"note\">Lanes: a replica's phases; ▲/▼ a client's view added/dropped it; "
            "✕ a failed request sent to it. Drag to zoom, double-click to reset; click a failed "
            "request to find it in the table.</p>",
            note,
            '<div id="timeline"></div>',
            "<h2>Causes</h2>",
            _causes_table(analysis),
            stress_section(
                run, points.failed, report.upgrades
            ),  # issue 16: restarts, faults, upgrades (render/html_stress.py)
            f"<h2>Failed requests ({len(analysis.contexts)})</h2>" if analysis.contexts else "",
            _failures_table(run, analysis, kinds, proxy, points.failed),
            streams_html,
            '<script type="application/json" id="lossless-figure">',
            _json_for_script(fig),
            "</script>",
            f"<script>{_JS}</script>",
            "</body></html>\n",
        ]
    )


def write_html(
    report: Report,
    path: str | os.PathLike[str],
    *,
    verdict: Verdict | None = None,
    points: RequestPoints | None = None,
) -> int:
    """Write :func:`render_html` to ``path``; return its size in bytes. LosslessError when the
    file cannot be written."""
    data = render_html(report, verdict=verdict, points=points).encode("utf-8")
    try:
        with open(path, "wb") as f:
            f.write(data)
    except OSError as exc:
        raise LosslessError(f"{path}: cannot write: {exc}") from None
    return len(data)
