"""argparse ``type=`` converters shared by every subcommand, so a flag means the same everywhere.

Durations accept plain seconds or a unit suffix (``500ms``, ``5s``, ``1m``; see
:func:`lossless.settings.parse_duration`). Each converter raises ``ArgumentTypeError``, which the
CLI turns into one line and exit 2.
"""

from __future__ import annotations

import argparse
import math

from lossless.settings import parse_duration


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


def count(text: str) -> int:
    """A whole number >= 0 (a count of requests, replicas, ...)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value
