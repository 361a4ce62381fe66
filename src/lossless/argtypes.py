"""argparse ``type=`` converters shared by every subcommand, so a flag means the same everywhere.

Durations accept plain seconds or a unit suffix (``500ms``, ``5s``, ``1m``; see
:func:`lossless._duration.parse_duration`). Each converter raises ``ArgumentTypeError``, which the
CLI turns into one line and exit 2.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from lossless._duration import parse_duration


def duration(text: str) -> float:
    """Any finite duration; the sign is left to the consumer (the runtime's settings validation
    names the setting and its environment variable in its message)."""
    try:
        value = parse_duration(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite duration: {text!r}")
    return value


def nonnegative_duration(text: str) -> float:
    value = duration(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite duration >= 0: {text!r}")
    return value


def positive_duration(text: str) -> float:
    value = duration(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive duration: {text!r}")
    return value


def positive_float(unit: str) -> Callable[[str], float]:
    """A converter for a finite number of ``unit`` > 0 (``--rate``: ``requests/s``)."""

    def convert(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number of {unit}: {text!r}") from None
        if not (value > 0 and value < float("inf")):
            raise argparse.ArgumentTypeError(f"must be a number of {unit} > 0: {text!r}")
        return value

    return convert


def ratio(text: str) -> float:
    """A share within 0..1 (``0.1``, or ``10%``)."""
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a ratio: {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be within 0..1 (or 0%..100%): {text!r}")
    return value


def add_duration(
    container: argparse._ActionsContainer,
    *flags: str,
    help: str,
    default: float | None = None,
    parse: Callable[[str], float] = nonnegative_duration,
    dest: str | None = None,
) -> None:
    """Add the duration flag ``flags`` (metavar ``SECONDS``) to a parser or group, parsed by
    ``parse`` (:func:`nonnegative_duration` unless told: :func:`duration`,
    :func:`positive_duration`): every duration flag is declared and refused the same way, one
    line naming the flag (argparse's ``argument --FLAG: ...``) and exit 2."""
    if dest is None:
        container.add_argument(*flags, type=parse, default=default, metavar="SECONDS", help=help)
    else:
        container.add_argument(
            *flags, type=parse, default=default, metavar="SECONDS", help=help, dest=dest
        )


def count(text: str) -> int:
    """A whole number >= 0 (a count of requests, replicas, ...)."""
    return _whole(text, 0)


def positive_count(text: str) -> int:
    """A whole number >= 1 (workers, threads, a backlog, ...)."""
    return _whole(text, 1)


def _whole(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
    return value


def port_number(text: str) -> int:
    """A TCP port, 0..65535 (0: any free port)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a TCP port 0..65535, got {value}")
    return value
