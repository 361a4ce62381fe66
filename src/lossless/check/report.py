"""Rendering a :class:`~lossless.check.engine.Report`: text (ruff-like), JSON, SARIF 2.1.0.

Renderers only format: they never decide what is a finding or what the exit code is.

- text: ``path:line:col: CODE message`` per active finding, sorted, then one summary line.
  Suppressed findings are listed only with ``show_suppressed``.
- JSON: ``{"version", "findings": [...], "errors": [...], "summary": {...}}``; each finding has
  ``code``, ``name``, ``severity``, ``message``, ``location`` (``path``, ``line``, ``column``,
  ``end_line``, ``end_column``, and ``rendered`` when mapped to a Helm/kustomize source),
  ``object`` and ``suppressed`` (``null`` or ``{"reason"}``).
- SARIF 2.1.0: one run; the driver lists every enabled rule with its help text; results carry
  real regions, ``suppressions`` for suppressed findings (``external`` for a baseline's), the
  rendered position as a related location, and ``partialFingerprints`` that survive line shifts
  (the baseline's fingerprint); input errors are tool execution notifications.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson

from lossless import __version__
from lossless.check.baseline import fingerprint
from lossless.check.engine import Report
from lossless.check.model import Finding, InputError, Location, Rule, Severity

__all__ = ["render", "render_json", "render_sarif", "render_text", "summary_line"]

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
DOCS_BASE = "docs/rules"


def _dumps(value: Any) -> str:
    """JSON with two-space indents, in key order (orjson: C speed; UTF-8, RFC 8259)."""
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()


def summary_line(report: Report) -> str:
    active = report.active
    suppressed = len(report.findings) - len(active)
    tail = f"; {suppressed} suppressed" if suppressed else ""
    errors = f"; {len(report.errors)} input error{'s' * (len(report.errors) != 1)}"
    errors = errors if report.errors else ""
    if not active:
        return f"All checks passed ({report.files} files, {report.objects} objects){tail}{errors}."
    counts = []
    for severity in (Severity.ERROR, Severity.WARNING, Severity.INFO):
        n = sum(1 for f in active if f.severity == severity)
        if n:
            counts.append(f"{n} {severity.label}{'s' if n != 1 else ''}")
    noun = "finding" if len(active) == 1 else "findings"
    return f"Found {len(active)} {noun} ({', '.join(counts)}){tail}{errors}."


def render_text(report: Report, *, show_suppressed: bool = False) -> str:
    lines = []
    for finding in report.findings:
        if finding.suppression is not None and not show_suppressed:
            continue
        line = f"{finding.location}: {finding.code} {finding.message}"
        if finding.suppression is not None:
            line += f" (suppressed: {finding.suppression.reason})"
        lines.append(line)
    lines.append(summary_line(report))
    return "\n".join(lines) + "\n"


def _location_json(location: Location) -> dict[str, Any]:
    data: dict[str, Any] = {
        "path": location.path,
        "line": location.line,
        "column": location.column,
        "end_line": location.end_line,
        "end_column": location.end_column,
    }
    if location.rendered is not None:
        data["rendered"] = _location_json(location.rendered)
    return data


def finding_json(finding: Finding) -> dict[str, Any]:
    return {
        "code": finding.code,
        "name": finding.rule.name,
        "family": finding.rule.family,
        "severity": finding.severity.label,
        "message": finding.message,
        "location": _location_json(finding.location),
        "object": finding.subject,
        "suppressed": (
            {"reason": finding.suppression.reason} if finding.suppression is not None else None
        ),
    }


def render_json(report: Report) -> str:
    """The report as JSON: ``finding_json`` of every finding, the input errors and the summary."""
    active = report.active
    data = {
        "version": __version__,
        "findings": [finding_json(f) for f in report.findings],
        "errors": [{"path": e.path, "line": e.line, "message": e.message} for e in report.errors],
        "summary": {
            "files": report.files,
            "objects": report.objects,
            "findings": len(active),
            "suppressed": len(report.findings) - len(active),
            "by_severity": {
                s.label: sum(1 for f in active if f.severity == s)
                for s in (Severity.ERROR, Severity.WARNING, Severity.INFO)
            },
            "input_errors": len(report.errors),
        },
    }
    return _dumps(data) + "\n"


def _artifact(path: str) -> dict[str, Any]:
    """A SARIF artifactLocation: relative URIs against SRCROOT (the working directory)."""
    return dict(_artifact_in(path, os.getcwd()))


@functools.lru_cache(maxsize=4096)
def _artifact_in(path: str, cwd: str) -> tuple[tuple[str, str], ...]:
    # Cached: tens of thousands of findings name a handful of files.
    if path == "-":
        return (("uri", "stdin"),)
    candidate = Path(path)
    if candidate.is_absolute():
        try:
            candidate = candidate.relative_to(Path(cwd))
        except ValueError:
            return (("uri", candidate.as_uri()),)
    return (("uri", quote(candidate.as_posix())), ("uriBaseId", "SRCROOT"))


def _physical(location: Location) -> dict[str, Any]:
    region: dict[str, Any] = {"startLine": location.line, "startColumn": location.column}
    if location.end_line is not None:
        region["endLine"] = location.end_line
    if location.end_column is not None and location.end_column > location.column:
        region["endColumn"] = location.end_column
    return {"artifactLocation": _artifact(location.path), "region": region}


def _rule_descriptor(rule: Rule) -> dict[str, Any]:
    return {
        "id": rule.code,
        "name": rule.name,
        "shortDescription": {"text": rule.summary},
        "fullDescription": {"text": rule.doc.split("## Why is this bad?")[0].strip()},
        "help": {"text": _plain(rule.doc), "markdown": rule.doc},
        "defaultConfiguration": {"level": rule.severity.sarif_level},
        "properties": {
            "tags": ["lossless", rule.family],
            "family": rule.family,
            "status": rule.status.value,
            "docs": f"{DOCS_BASE}/{rule.code}.md",
        },
    }


def _plain(markdown: str) -> str:
    return "\n".join(
        line[3:] if line.startswith("## ") else line
        for line in markdown.splitlines()
        if not line.startswith("```")
    )


def _notification(error: InputError) -> dict[str, Any]:
    note: dict[str, Any] = {"level": "error", "message": {"text": error.message}}
    location = Location(error.path, error.line or 1, 1)
    note["locations"] = [{"physicalLocation": _physical(location)}]
    return note


def render_sarif(report: Report) -> str:
    rules = report.rules
    index = {rule.code: i for i, rule in enumerate(rules)}
    results = []
    for finding in report.findings:
        result: dict[str, Any] = {
            "ruleId": finding.code,
            "ruleIndex": index.get(finding.code, -1),
            "level": finding.severity.sarif_level,
            "message": {"text": finding.message},
            "locations": [{"physicalLocation": _physical(finding.location)}],
        }
        if finding.location.rendered is not None:
            result["relatedLocations"] = [
                {
                    "id": 1,
                    "physicalLocation": _physical(finding.location.rendered),
                    "message": {"text": "position in the rendered output"},
                }
            ]
        # Stable across line shifts: code scanning tracks a finding as the same alert.
        result["partialFingerprints"] = {"losslessFinding/v1": fingerprint(finding)}
        if finding.subject:
            result["properties"] = {"object": finding.subject}
        if finding.suppression is not None:
            result["suppressions"] = [
                {"kind": finding.suppression.kind, "justification": finding.suppression.reason}
            ]
        results.append(result)
    run: dict[str, Any] = {
        "tool": {
            "driver": {
                "name": "lossless",
                "version": __version__,
                "semanticVersion": __version__,
                "rules": [_rule_descriptor(rule) for rule in rules],
            }
        },
        "originalUriBaseIds": {"SRCROOT": {"uri": Path.cwd().as_uri() + "/"}},
        "invocations": [
            {
                "executionSuccessful": not report.errors,
                "toolExecutionNotifications": [_notification(e) for e in report.errors],
            }
        ],
        "columnKind": "unicodeCodePoints",
        "results": results,
    }
    document = {"$schema": SARIF_SCHEMA, "version": "2.1.0", "runs": [run]}
    return _dumps(document) + "\n"


def render(report: Report, fmt: str, *, show_suppressed: bool = False) -> str:
    """Render in ``fmt`` (``text``, ``json`` or ``sarif``)."""
    if fmt == "json":
        return render_json(report)
    if fmt == "sarif":
        return render_sarif(report)
    return render_text(report, show_suppressed=show_suppressed)
