"""``lossless run`` and ``lossless prestop``: the drain sequence for services that cannot import
the runtime (other languages, vendor binaries, apps nobody may touch).

- ``lossless run [OPTIONS] -- CMD ARGS...`` (:mod:`lossless.supervise.run`): a PID-1-safe
  supervisor that reaps zombies, forwards signals, serves probes, deregisters at t0 and delays the
  child's stop signal by the drain delay.
- ``lossless prestop`` (:mod:`lossless.supervise.prestop`): a preStop exec hook that sleeps
  without a ``sleep`` binary, or starts an app's drain through its admin endpoint and waits for
  the drain delay.
"""

from __future__ import annotations

import argparse

from lossless.supervise.prestop import add_prestop_parser, prestop_command
from lossless.supervise.run import Supervisor, add_run_parser, run_command

__all__ = ["Supervisor", "add_parser", "prestop_command", "run_command"]


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``run`` and ``prestop`` subcommands (the CLI dispatcher's module protocol)."""
    add_run_parser(subparsers)
    add_prestop_parser(subparsers)
