"""``python -m lossless.check``: the ``check`` command alone (same options and exit codes).

Useful where only the ``check`` extra is installed; ``lossless check`` is the usual entry point.
"""

from __future__ import annotations

import argparse
import sys

from lossless.check.command import add_parser
from lossless.errors import LosslessError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lossless")
    subparsers = parser.add_subparsers(dest="command")
    add_parser(subparsers)
    args = parser.parse_args(["check", *(sys.argv[1:] if argv is None else argv)])
    try:
        return int(args.func(args))
    except LosslessError as exc:
        print(f"lossless check: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("lossless check: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
