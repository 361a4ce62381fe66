"""The one entry point: ``lossless {serve,run,prestop,check,verify,report,demo}``.

Each subcommand lives in its own module, which exposes ``add_parser(subparsers)``; the parser it
adds sets ``func`` (a callable taking the parsed namespace and returning an exit code). Modules
import their optional dependencies only when they run, so ``lossless --help`` works with no extra
installed.

Exit codes: 0 success, 1 the command's own failure verdict (findings, failed requests, forced
shutdown), 2 usage or input errors. Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NoReturn

from lossless import __version__
from lossless.errors import LosslessError

# Subcommand modules, in the order ``--help`` lists them.
COMMAND_MODULES = (
    "lossless.serve.command",
    "lossless.supervise",
    "lossless.check.command",
    "lossless.verify.command",
    "lossless.verify.report_command",
    "lossless.verify.demo",
)

# A command that must start fast loads only its own module (``lossless check`` runs in CI on every
# commit, and the other commands' modules import asyncio and the runtime).
_ALONE = {"check": "lossless.check.command"}


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (the full usage stays in ``--help``)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``lossless`` parser; with ``command`` in ``_ALONE``, only that subcommand's."""
    parser = _Parser(
        prog="lossless",
        description="Upgrade services with zero failed requests, and prove it.",
    )
    parser.add_argument("--version", action="version", version=f"lossless {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    alone = _ALONE.get(command or "")
    for name in COMMAND_MODULES:
        if alone is not None and name != alone:
            continue
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and name.startswith(exc.name):
                continue  # that command is not part of this build
            raise
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(arguments[0] if arguments else None)
    args, extra = parser.parse_known_args(arguments)
    if extra and not getattr(args, "accepts_extra", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra  # for commands that parse more themselves (serve: uvicorn's options)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        code = func(args)
    except LosslessError as exc:
        print(f"lossless {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"lossless {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
