"""``lossless report DIR``: analyse a recorded run directory (see lossless.verify.results).

Exit codes: those of ``lossless verify``'s verdict (:mod:`lossless.verify.analysis.verdict`): 0
pass, 1 more failures than ``--max-failures`` (default 0; requests saved only by a proxy retry
count unless ``--allow-retries``), 3 inconclusive; 2 for input errors (a missing or corrupt run
directory, a bad option), reported as one line without a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from lossless.errors import LosslessError
from lossless.verify.command import (
    add_verdict_flags,
    json_usage_errors,
    print_json_error,
    verdict_policy,
)


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "report",
        help="analyse a recorded verify run: failures, their causes and fixes",
        description="Read a run directory written by `lossless verify` (records.csv, "
        "timeline.jsonl, settings.json), explain every failed request and print a report.",
    )
    parser.add_argument("dir", metavar="DIR", help="the run directory")
    parser.add_argument("--json", action="store_true", help="print the analysis as JSON")
    parser.add_argument(
        "--export",
        choices=["vegeta-csv"],
        help="also write the records in another tool's format (needs --output)",
    )
    parser.add_argument("--output", metavar="FILE", help="where --export writes")
    parser.add_argument(
        "--html",
        metavar="FILE",
        help="also write a self-contained HTML report (timeline, requests, failures) to FILE",
    )
    add_verdict_flags(parser)
    json_usage_errors(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Analyse ``args.dir`` once; return the verdict's exit code; raise LosslessError (2), also
    printed as a JSON object on stdout under ``--json``."""
    try:
        return _run(args)
    except LosslessError as exc:
        if args.json:
            print_json_error(str(exc), exc.exit_code)
        raise


def _run(args: argparse.Namespace) -> int:
    from lossless.verify.analysis.verdict import judge
    from lossless.verify.command import analyse_for_output
    from lossless.verify.render.text import render_json, render_text

    if args.export and not args.output:
        raise LosslessError(f"--export {args.export} needs --output FILE")
    if args.output and not args.export:
        raise LosslessError("--output needs --export FORMAT")
    policy = verdict_policy(args)
    export = Path(args.output) if args.export == "vegeta-csv" else None
    # one pass over the records: analysis, HTML points, export (memory flat, issue 16)
    report, points = analyse_for_output(Path(args.dir), policy, html=bool(args.html), export=export)
    recorded = report.run
    if export is not None:
        print(f"wrote {report.analysis.requests} results to {args.output}", file=sys.stderr)
    # -- issue 16: restarts, per-upgrade figures, faults (not counted unless the run said so)
    from lossless.verify.stress_command import report as stress_report

    stress = stress_report(
        recorded.dir,
        report.analysis,
        bool(recorded.settings.get("faults_count")),
        report.upgrades,
    )
    verdict = judge(report, policy, uncounted=stress.uncounted())
    if args.html:
        from lossless.verify.render.html_page import write_html

        size = write_html(report, args.html, verdict=verdict, points=points)
        print(f"wrote the HTML report to {args.html} ({size / 1e6:.1f} MB)", file=sys.stderr)
    analysis = report.analysis
    if args.json:
        doc = json.loads(render_json(analysis, verdict, streams=report.streams))
        doc.update(stress.to_json(analysis.failures))
        sys.stdout.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    else:
        sys.stdout.write(render_text(analysis, verdict, streams=report.streams))
        sys.stdout.writelines(line + "\n" for line in stress.lines(analysis.failures))
    return verdict.exit_code
