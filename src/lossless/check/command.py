"""``lossless check``: find manifests, Dockerfiles and entrypoints that drop requests on upgrade.

Exit codes: 0 when no finding at or above ``--fail-on`` counts; 1 when one does; 2 on a usage
error or when any input could not be read or parsed (the other inputs are still checked and
reported; an input error wins over findings, so a partial check never passes as a clean one).
Findings listed in a ``--baseline`` file do not count; ``--write-baseline`` records the current
findings and exits 0 (2 on an input error: a baseline of a partial check is not written).
Input errors and notes are one line each on stderr; findings go to stdout (or ``--output``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lossless import argtypes
from lossless.check.config import Config, find_config, load_config, parse_kube_version
from lossless.check.model import Severity
from lossless.errors import LosslessError

__all__ = ["add_parser", "run"]

_FAIL_ON = ("error", "warning", "info", "never")


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``check`` subcommand (its ``func`` is :func:`run`)."""
    parser = subparsers.add_parser(
        "check",
        help="flag manifests, Dockerfiles and entrypoints that drop requests on upgrade",
        description=(
            "Static analysis of Kubernetes manifests (also Helm and kustomize output), "
            "Dockerfiles and entrypoint scripts for upgrades that drop requests."
        ),
        epilog="Exit codes: 0 clean, 1 findings at or above --fail-on, 2 usage or input error.",
    )
    parser.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help="files, directories (recursive) or - for stdin (default: .)",
    )
    parser.add_argument(
        "--format", choices=("text", "json", "sarif"), default="text", help="output format"
    )
    parser.add_argument("-o", "--output", metavar="FILE", help="write the report to FILE")
    parser.add_argument(
        "--fail-on",
        choices=_FAIL_ON,
        default=None,
        help="lowest severity that makes the exit code 1 (default: error)",
    )
    parser.add_argument(
        "--kube-version", metavar="X.Y", help="target Kubernetes version (e.g. 1.30)"
    )
    parser.add_argument(
        "--config", metavar="FILE", help="pyproject.toml to read [tool.lossless.check] from"
    )
    parser.add_argument(
        "--select", metavar="CODES", help="comma-separated codes or prefixes to run (LL2,LL401)"
    )
    parser.add_argument("--ignore", metavar="CODES", help="comma-separated codes never reported")
    parser.add_argument(
        "--grace-margin", type=int, metavar="S", help="seconds kept free in the grace period"
    )
    parser.add_argument(
        "--source-root",
        action="append",
        default=[],
        metavar="DIR",
        help="where to look for Helm templates / kustomize origins (repeatable)",
    )
    parser.add_argument(
        "--max-file-size",
        type=argtypes.positive_float("MiB"),
        default=16,
        metavar="MIB",
        help="refuse inputs larger than this (default: 16 MiB)",
    )
    parser.add_argument(
        "-j",
        "--jobs",
        type=int,
        default=None,
        metavar="N",
        help="parse inputs on N processes when there are many (default: every core)",
    )
    fixing = parser.add_mutually_exclusive_group()
    fixing.add_argument(
        "--diff",
        action="store_true",
        help="print the safe fixes as a unified diff and exit (1 when there are any)",
    )
    fixing.add_argument(
        "--fix", action="store_true", help="apply the safe fixes, then report what is left"
    )
    parser.add_argument(
        "--baseline",
        metavar="FILE",
        help="findings listed in FILE do not count (only new ones fail); see --write-baseline",
    )
    parser.add_argument(
        "--write-baseline",
        metavar="FILE",
        help="write the current findings to FILE as the accepted baseline, then exit 0",
    )
    parser.add_argument(
        "--show-suppressed", action="store_true", help="list suppressed findings (text format)"
    )
    parser.add_argument("--list-rules", action="store_true", help="print the rules and exit")
    parser.set_defaults(func=run)


def _codes(text: str) -> list[str]:
    from lossless.check.config import _codes as validate

    try:
        return validate([c for c in text.split(",") if c.strip()])
    except (TypeError, ValueError) as exc:
        raise LosslessError(str(exc)) from None


def build_config(args: argparse.Namespace) -> Config:
    """The configuration file (``--config`` or discovered), then the command-line overrides."""
    if args.config:
        path = Path(args.config)
        if not path.is_file():
            raise LosslessError(f"config file {args.config} not found")
        config = load_config(path, explicit=True)
    else:
        config = load_config(find_config(Path.cwd()))
    if args.kube_version:
        try:
            config.kube_version = parse_kube_version(args.kube_version)
        except ValueError as exc:
            raise LosslessError(str(exc)) from None
    if args.fail_on:
        config.fail_on = None if args.fail_on == "never" else Severity.parse(args.fail_on)
    if args.select:
        config.select = _codes(args.select)
    if args.ignore:
        config.ignore = [*config.ignore, *_codes(args.ignore)]
    if args.grace_margin is not None:
        if args.grace_margin < 0:
            raise LosslessError("--grace-margin must be >= 0")
        config.grace_margin = args.grace_margin
    config.source_roots = [*config.source_roots, *args.source_root]
    return config


def _list_rules() -> str:
    from lossless.check.model import all_rules

    lines = [f"{'code':6}  {'family':10}  {'severity':8}  summary"]
    for rule in all_rules():
        lines.append(f"{rule.code:6}  {rule.family:10}  {rule.severity.label:8}  {rule.summary}")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    """Run the check; returns the exit code (see the module docstring)."""
    if args.list_rules:
        sys.stdout.write(_list_rules())
        return 0
    try:
        from lossless.check.engine import run_check
        from lossless.check.report import render, summary_line
    except ModuleNotFoundError as exc:  # pragma: no cover - the extra is not installed
        raise LosslessError(
            f"lossless check needs {exc.name}: pip install 'lossless[check]'"
        ) from None
    config = build_config(args)
    if args.paths.count("-") > 1:
        raise LosslessError("stdin (-) can be given only once")
    if args.jobs is not None and args.jobs < 1:
        raise LosslessError("--jobs must be >= 1")
    if args.baseline and args.write_baseline:
        raise LosslessError("--baseline and --write-baseline cannot be used together")
    if args.baseline:
        from lossless.check.baseline import read_baseline

        baseline = read_baseline(Path(args.baseline))
    if args.diff or args.fix:
        fixed = _fix(args, config)
        if fixed is not None:
            return fixed
    report = run_check(
        args.paths or ["."],
        config,
        max_bytes=int(args.max_file_size * 1024 * 1024),
        jobs=args.jobs,
    )
    if args.write_baseline and not report.errors:
        from lossless.check.baseline import write_baseline

        count = write_baseline(Path(args.write_baseline), report)
        print(f"lossless check: wrote {count} findings to {args.write_baseline}", file=sys.stderr)
    if args.baseline:
        from lossless.check.baseline import apply_baseline

        stale = apply_baseline(report, baseline, args.baseline)
        if stale:
            report.notes.append(
                f"{stale} finding{'s' * (stale != 1)} in baseline {args.baseline} no longer "
                f"occur{'s' * (stale == 1)}: rewrite it with --write-baseline {args.baseline}"
            )
    for note in report.notes:
        print(f"lossless check: note: {note}", file=sys.stderr)
    for error in report.errors:
        print(f"lossless check: error: {error}", file=sys.stderr)
    output = render(report, args.format, show_suppressed=args.show_suppressed)
    if args.output:
        try:
            Path(args.output).write_text(output, encoding="utf-8")
        except OSError as exc:
            raise LosslessError(f"cannot write {args.output}: {exc.strerror or exc}") from None
        print(f"lossless check: {summary_line(report)}", file=sys.stderr)
    else:
        sys.stdout.write(output)
    if args.write_baseline and not report.errors:
        return 0
    if args.write_baseline:
        print(
            f"lossless check: error: baseline {args.write_baseline} not written: "
            "fix the input errors first",
            file=sys.stderr,
        )
    return report.exit_code(config)


def _fix(args: argparse.Namespace, config: Config) -> int | None:
    """``--diff``: print the fixes, return the exit code. ``--fix``: write them, return None (the
    check then runs on the fixed files)."""
    from lossless.check import fix

    planned = fix.plan(
        args.paths or ["."],
        config,
        max_bytes=int(args.max_file_size * 1024 * 1024),
        jobs=args.jobs,
    )
    for note in planned.notes:
        print(f"lossless check: note: {note}", file=sys.stderr)
    changed = fix.apply(planned.edits, planned.originals)
    if args.diff:
        sys.stdout.write(fix.diff(planned.originals, changed))
        for error in planned.errors:
            print(f"lossless check: error: {error}", file=sys.stderr)
        return 2 if planned.errors else (1 if changed else 0)
    count = 0
    for path, text in changed.items():
        try:
            Path(path).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise LosslessError(f"cannot write {path}: {exc.strerror or exc}") from None
        count += sum(1 for e in planned.edits if e.path == path)
    if changed:
        print(
            f"lossless check: fixed {count} finding{'s' * (count != 1)} in {len(changed)} "
            f"file{'s' * (len(changed) != 1)}",
            file=sys.stderr,
        )
    return None
