"""A baseline of accepted findings, so a repository with existing findings can gate new ones.

Contract:

- :func:`fingerprint` identifies a finding without its line and column: the rule code, the file,
  the object (``Kind/namespace/name`` or the Dockerfile) and the message with line numbers in it
  masked. Moving an object within its file, or adding lines above it, keeps the fingerprint; a
  change to what the finding says (another grace period, another port) makes a new one.
- :func:`write_baseline` stores the counting findings of a report (suppressed ones are not
  needed) as JSON, sorted, one entry per finding (a fingerprint may repeat).
- :func:`read_baseline` reads it back, or raises :class:`~lossless.errors.LosslessError` with one
  line naming the file and the problem.
- :func:`apply_baseline` marks each finding that the baseline lists (as many times as it lists
  it) as suppressed with SARIF kind ``external``, so it no longer counts for the exit code; it
  returns how many baseline entries matched nothing (fixed since: the baseline can be rewritten).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

from lossless.check.engine import Report
from lossless.check.model import Finding, Suppression
from lossless.errors import LosslessError

__all__ = ["VERSION", "apply_baseline", "fingerprint", "read_baseline", "write_baseline"]

VERSION = 1
# "line 12", "lines 3", "Dockerfile:6" (no space after the colon): positions quoted in a message.
_LINE_NUMBER = re.compile(r"(\blines?\s+|\w:)\d+")


def fingerprint(finding: Finding) -> str:
    """A stable id of ``finding`` that survives line shifts (see the module docstring)."""
    message = _LINE_NUMBER.sub(lambda m: m.group(1) + "N", finding.message)
    key = "\0".join((finding.code, finding.location.path, finding.subject, message))
    return hashlib.sha256(key.encode()).hexdigest()[:20]


def write_baseline(path: Path, report: Report) -> int:
    """Write the counting findings of ``report`` to ``path``; returns how many."""
    entries = sorted(
        (
            {
                "fingerprint": fingerprint(f),
                "code": f.code,
                "path": f.location.path,
                "object": f.subject,
                "message": f.message,
            }
            for f in report.active
        ),
        key=lambda e: (e["path"], e["code"], e["object"], e["fingerprint"]),
    )
    document = {"version": VERSION, "tool": "lossless check", "findings": entries}
    try:
        path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        raise LosslessError(f"cannot write baseline {path}: {exc.strerror or exc}") from None
    return len(entries)


def read_baseline(path: Path) -> Counter[str]:
    """Fingerprints listed in the baseline at ``path``, with their counts."""
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LosslessError(
            f"baseline {path} not found (create it with --write-baseline {path})"
        ) from None
    except OSError as exc:
        raise LosslessError(f"cannot read baseline {path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LosslessError(f"baseline {path} is not JSON: {exc}") from None
    findings = data.get("findings") if isinstance(data, dict) else None
    if (
        not isinstance(data, dict)
        or data.get("version") != VERSION
        or not isinstance(findings, list)
    ):
        raise LosslessError(
            f"baseline {path} is not a lossless check baseline (version {VERSION}); "
            "rewrite it with --write-baseline"
        )
    counts: Counter[str] = Counter()
    for entry in findings:
        value = entry.get("fingerprint") if isinstance(entry, dict) else None
        if not isinstance(value, str):
            raise LosslessError(f"baseline {path}: an entry has no fingerprint")
        counts[value] += 1
    return counts


def apply_baseline(report: Report, baseline: Counter[str], name: str) -> int:
    """Suppress the findings ``baseline`` lists; returns the number of unmatched entries."""
    left = Counter(baseline)
    findings = []
    for finding in report.findings:
        if finding.suppression is None:
            key = fingerprint(finding)
            if left[key] > 0:
                left[key] -= 1
                finding = dataclasses.replace(
                    finding, suppression=Suppression(f"in baseline {name}", "external")
                )
        findings.append(finding)
    report.findings = findings
    return sum(left.values())
