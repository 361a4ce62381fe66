"""``lossless serve`` with the discovery flags, until the lead applies
docs/discovery-serve-patch.diff to src/lossless/serve/command.py.

Run as ``python -m tests.discovery.serve_with_registry serve APP ...``. It installs exactly what
the patch adds: :func:`lossless.discovery.cli.add_arguments` on the ``serve`` parser, and
:func:`lossless.discovery.cli.attach_from_args` right after ``serve`` creates its lifecycle (where
the patch calls it). Once the patch is in, the flags exist already and this only runs
``lossless``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from lossless import cli
from lossless.discovery import cli as discovery_cli
from lossless.lifecycle import Lifecycle
from lossless.serve import command


def _patched() -> bool:
    return hasattr(command, "discovery_cli")  # the patch imports it under that name


def install() -> None:
    if _patched():
        return
    original_add_parser = command.add_parser
    original_set_lifecycle = command.set_lifecycle
    current: dict[str, argparse.Namespace] = {}

    def add_parser(subparsers: Any) -> None:
        original_add_parser(subparsers)
        discovery_cli.add_arguments(subparsers.choices["serve"])

    def run(args: argparse.Namespace) -> int:
        current["args"] = args
        return original_run(args)

    def set_lifecycle(lifecycle: Lifecycle | None) -> None:
        original_set_lifecycle(lifecycle)
        if lifecycle is not None and "args" in current:
            args = current["args"]
            discovery_cli.attach_from_args(lifecycle, args, args.port)

    original_run = command.run
    command.add_parser = add_parser
    command.run = run
    command.set_lifecycle = set_lifecycle  # type: ignore[assignment]


if __name__ == "__main__":
    install()
    sys.exit(cli.main())
