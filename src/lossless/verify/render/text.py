"""Rendering of an :class:`~lossless.verify.analysis.core.Analysis`: text (rich on a terminal, plain
aligned text otherwise) and JSON. Rendering only: every figure comes from the analysis."""

from __future__ import annotations

import io
import json
import sys

from lossless.verify.analysis.core import Analysis, FailureContext

__all__ = ["render_json", "render_text"]


def _ms(values: dict[str, float], keys: tuple[str, ...]) -> str:
    if not values:
        return "-"
    return "  ".join(f"{k} {values[k]:.2f}" for k in keys if k in values) + " ms"


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items()) if counts else "none"


def _summary(a: Analysis) -> list[tuple[str, str]]:
    late = f"{a.late} sent more than {a.lag_budget_s * 1000:g} ms late"
    return [
        ("requests", f"{a.requests}  ({a.rate_sent:g} req/s sent over {a.duration_s:.1f} s)"),
        ("ok", f"{a.ok}  ({a.success_ratio * 100:.3f} % of the service's answers)"),
        ("failures", f"{a.failures}  ({_counts(a.failures_by_class)})"),
        ("artefacts", f"{a.artefacts}  ({_counts(a.artefacts_by_class)}; {late})"),
        ("status codes", _counts(a.status_codes)),
        ("latency", _ms(a.latency_ms, ("p50", "p90", "p99", "p999", "max"))),
        ("schedule lag", _ms(a.lag_ms, ("p50", "p99", "max"))),
    ]


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


def _plain(a: Analysis) -> str:
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
    return "\n".join(lines) + "\n"


def _rich(a: Analysis) -> str:
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
    return out.getvalue()


def render_text(analysis: Analysis, *, tty: bool | None = None) -> str:
    """The summary table and the causes; with colours (rich) when ``tty`` (default: whether
    stdout is a terminal) and rich is installed, else plain aligned text."""
    if tty is None:
        tty = sys.stdout.isatty()
    if tty:
        try:
            return _rich(analysis)
        except ImportError:  # pragma: no cover - rich is part of the verify extra
            pass
    return _plain(analysis)


def render_json(analysis: Analysis) -> str:
    """``Analysis.to_json()`` as indented JSON text (ends with a newline)."""
    return json.dumps(analysis.to_json(), indent=2, ensure_ascii=False) + "\n"
