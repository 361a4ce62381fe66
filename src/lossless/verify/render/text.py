"""Rendering of an :class:`~lossless.verify.analysis.core.Analysis`: text (rich on a terminal, plain
aligned text otherwise) and JSON. Rendering only: every figure comes from the analysis."""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Sequence

from lossless.verify.analysis.core import Analysis, FailureContext
from lossless.verify.analysis.streams import StreamAnalysis
from lossless.verify.analysis.verdict import Outcome, Verdict
from lossless.verify.render.streams import stream_lines

__all__ = ["describe_kind", "render_json", "render_text", "verdict_line"]


def _ms(values: dict[str, float], keys: tuple[str, ...]) -> str:
    if not values:
        return "-"
    return "  ".join(f"{k} {values[k]:.2f}" for k in keys if k in values) + " ms"


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items()) if counts else "none"


def _summary(a: Analysis) -> list[tuple[str, str]]:
    late = f"{a.late} sent more than {a.lag_budget_s * 1000:g} ms late"
    rows = [
        (
            "requests",
            f"{a.requests}  ({a.rate_sent:g} req/s scheduled, {a.rate_achieved:g} req/s "
            f"achieved, over {a.duration_s:.1f} s)",
        ),
        ("ok", f"{a.ok}  ({a.success_ratio * 100:.3f} % of the service's answers)"),
        ("failures", f"{a.failures}  ({_counts(a.failures_by_class)})"),
        ("artefacts", f"{a.artefacts}  ({_counts(a.artefacts_by_class)}; {late})"),
        ("status codes", _counts(a.status_codes)),
        ("latency", _ms(a.latency_ms, ("p50", "p90", "p99", "p999", "max"))),
        ("schedule lag", _ms(a.lag_ms, ("p50", "p99", "max"))),
    ]
    if a.retried or "ingress" in a.settings:
        rows.insert(3, ("retried", _retried(a)))
    if len(a.request_kinds) > 1 or any(
        not k["idempotent"] or k.get("retried") for k in a.request_kinds.values()
    ):
        rows.extend((f"  {name}", describe_kind(k)) for name, k in a.request_kinds.items())
    return rows


def describe_kind(k: dict[str, object]) -> str:
    """``80 requests, 6 failed (not idempotent: 6 not retried by the proxy)``."""
    text = f"{k['requests']} requests, {k['failures']} failed"
    notes = ["idempotent" if k["idempotent"] else "not idempotent"]
    if "not_retried" in k:
        notes.append(f"{k['not_retried']} failed without a proxy retry")
        notes.append(f"{k['retried']} saved by a proxy retry")
    return f"{text} ({'; '.join(notes)})"


def _retried(a: Analysis) -> str:
    """The requests a proxy saved only by retrying them: failures of the upgrade."""
    p99 = a.retried_latency_ms.get("p99")
    latency = f", latency p99 {p99:.0f} ms" if p99 is not None else ""
    return f"{a.retried}  (succeeded only after a proxy retry{latency})"


def verdict_line(a: Analysis, v: Verdict) -> str:
    """``verdict: fail (...)  · achieved 49.9 of 50 req/s · schedule lag p99 0.41 ms``: the
    verdict with the figures that say whether the run sent the load it promised."""
    head = f"verdict: {v.outcome.value}"
    if v.reasons:
        head += " (" + "; ".join(v.reasons) + ")"
    p99 = a.lag_ms.get("p99")
    lag = "-" if p99 is None else f"{p99:.2f} ms"
    return (
        f"{head}  · achieved {a.rate_achieved:g} of {a.rate_sent:g} req/s · schedule lag p99 {lag}"
    )


def _example(c: FailureContext) -> str:
    parts = [f"seq {c.seq}", c.error or str(c.status), f"{c.replica or '-'} {c.phase}"]
    if c.since_sigterm is not None and c.since_sigterm >= 0:
        parts.append(f"{c.since_sigterm:.2f} s after SIGTERM")
    elif c.since_deleting is not None and c.since_deleting >= 0:
        parts.append(f"{c.since_deleting:.2f} s after deletion")
    elif c.since_ready is not None:
        parts.append(f"{c.since_ready:.2f} s after ready")
    if c.in_view and c.view_removed_in is not None:
        parts.append(f"client {c.client} routed to it {c.view_removed_in:.2f} s more")
    if c.reused:
        parts.append("reused connection")
    return ", ".join(parts)


def _plain(a: Analysis, v: Verdict | None, extra: Sequence[str] = ()) -> str:
    rows = _summary(a)
    width = max(len(k) for k, _ in rows)
    lines = [f"{k.ljust(width)}  {v}" for k, v in rows]
    lines.append("")
    lines.append("causes:" if a.causes else "causes: none, no request failed")
    for i, c in enumerate(a.causes, start=1):
        lines.append(f"  {i}. [{c.count}] {c.cause}")
        lines.append(f"     fix: {c.fix}")
        for e in c.examples[:3]:
            lines.append(f"     e.g. {_example(e)}")
    lines.extend(f"warning: {w}" for w in a.warnings)
    lines.extend(extra)
    if v is not None:
        lines.append(verdict_line(a, v))
    return "\n".join(lines) + "\n"


def _rich(a: Analysis, v: Verdict | None, extra: Sequence[str] = ()) -> str:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120, highlight=False)
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    verdict = "green" if a.failures == 0 else "red"
    for key, value in _summary(a):
        value = escape(value)
        table.add_row(key, f"[{verdict}]{value}[/]" if key == "failures" else value)
    console.print(table)
    console.print()
    if not a.causes:
        console.print("[green]causes: none, no request failed[/]")
    for i, c in enumerate(a.causes, start=1):
        console.print(f"[bold red]{i}. \\[{c.count}][/] {escape(c.cause)}")
        console.print(f"   [bold]fix:[/] {escape(c.fix)}")
        for e in c.examples[:3]:
            console.print(f"   [dim]e.g. {escape(_example(e))}[/]")
    for w in a.warnings:
        console.print(f"[yellow]warning:[/] {escape(w)}")
    for line in extra:
        console.print(escape(line))
    if v is not None:
        colour = {Outcome.PASS: "green", Outcome.FAIL: "red"}.get(v.outcome, "yellow")
        console.print(f"[bold {colour}]{escape(verdict_line(a, v))}[/]")
    return out.getvalue()


def render_text(
    analysis: Analysis,
    verdict: Verdict | None = None,
    *,
    tty: bool | None = None,
    streams: StreamAnalysis | None = None,
) -> str:
    """The summary table, the causes and (given ``verdict``) the verdict line; with colours
    (rich) when ``tty`` (default: whether stdout is a terminal) and rich is installed, else plain
    aligned text."""
    if tty is None:
        tty = sys.stdout.isatty()
    extra = stream_lines(streams) if streams is not None else []
    if tty:
        try:
            return _rich(analysis, verdict, extra)
        except ImportError:  # pragma: no cover - rich is part of the verify extra
            pass
    return _plain(analysis, verdict, extra)


def render_json(
    analysis: Analysis, verdict: Verdict | None = None, *, streams: StreamAnalysis | None = None
) -> str:
    """``Analysis.to_json()`` (with ``Verdict.to_json()`` merged in when given, and ``streams``:
    the long-lived clients' section, null without any) as indented JSON text (ends with a
    newline)."""
    doc = analysis.to_json()
    doc["streams"] = None if streams is None else streams.to_json()
    if verdict is not None:
        doc.update(verdict.to_json())
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
