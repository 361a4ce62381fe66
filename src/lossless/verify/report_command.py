"""``lossless report DIR``: analyse a recorded run directory (see lossless.verify.results).

Exit codes: 0 when the run's service failures are at most ``--max-failures`` (default 0), 1 when
there are more, 2 for input errors (a missing or corrupt run directory, a bad option), reported as
one line without a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from lossless import argtypes


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
    parser.add_argument(
        "--max-failures",
        type=argtypes.count,
        default=0,
        metavar="N",
        help="exit 1 when more than N requests failed (default 0)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Analyse ``args.dir``; return 0 (failures <= --max-failures) or 1; raise LosslessError (2)."""
    from lossless.errors import LosslessError
    from lossless.verify.analysis.core import analyze
    from lossless.verify.analysis.proxy import analyze_proxy
    from lossless.verify.render.text import render_json, render_text
    from lossless.verify.results import export_vegeta_csv, read_run

    if args.export and not args.output:
        raise LosslessError(f"--export {args.export} needs --output FILE")
    if args.output and not args.export:
        raise LosslessError("--output needs --export FORMAT")
    recorded = read_run(args.dir)
    if args.export == "vegeta-csv":
        export_vegeta_csv(recorded, args.output)
        print(f"wrote {len(recorded.records)} results to {args.output}", file=sys.stderr)
    proxy = analyze_proxy(recorded)  # a run through --traffic ingress: join the proxy's log
    analysis = analyze(recorded) if proxy is None else proxy.analysis
    if args.html:
        from lossless.verify.render.html_page import write_html

        size = write_html(recorded, analysis, args.html)
        print(f"wrote the HTML report to {args.html} ({size / 1e6:.1f} MB)", file=sys.stderr)
    # -- issue 16: restarts, per-upgrade figures, faults (not counted unless the run said so)
    from lossless.verify.stress_command import report as stress_report

    faults_count = bool(recorded.settings.get("faults_count", False))
    stress = stress_report(recorded.dir, analysis, faults_count)
    if args.json:
        doc = json.loads(render_json(analysis))
        doc.update(stress.to_json(analysis.failures))
        sys.stdout.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    else:
        sys.stdout.write(render_text(analysis))
        sys.stdout.writelines(line + "\n" for line in stress.lines(analysis.failures))
    return 0 if stress.counted(analysis.failures) <= args.max_failures else 1
