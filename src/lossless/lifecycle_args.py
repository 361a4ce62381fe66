"""The lifecycle flags (drain delay, shutdown timeout, probe paths...) shared by every command
that runs something under the drain sequence: ``lossless serve`` and ``lossless run``. An unset
flag falls back to its ``LOSSLESS_*`` variable (:meth:`Settings.from_env`)."""

from __future__ import annotations

import argparse

from lossless import argtypes
from lossless.settings import Settings


def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    """The lifecycle flags shared by ``serve`` and ``run``; unset flags fall back to env vars."""
    g = parser.add_argument_group("drain sequence (each also from a LOSSLESS_* variable)")
    # signed durations: the settings' validation names the setting and its variable
    for flag, text in (
        (
            "--drain-delay",
            "D: keep serving this long after SIGTERM (default 5 in Kubernetes, else 0)",
        ),
        ("--shutdown-timeout", "deadline for the whole drain, from SIGTERM (default 25)"),
        (
            "--grace-period",
            "the pod's terminationGracePeriodSeconds, to validate the timeout against",
        ),
        (
            "--stream-close-window",
            "end open streams and WebSockets over this window from t0 + D (default 10%% of D)",
        ),
    ):
        argtypes.add_duration(g, flag, help=text, parse=argtypes.duration)
    g.add_argument(
        "--stream-end",
        choices=["all", "sse", "none"],
        help="streams ended at t0 + D: all (SSE and chunked, default), sse, none",
    )
    g.add_argument("--readiness-path", metavar="PATH")
    g.add_argument("--liveness-path", metavar="PATH")
    g.add_argument("--startup-path", metavar="PATH")
    g.add_argument("--metrics-path", metavar="PATH", help="serve Prometheus metrics here")
    g.add_argument(
        "--expose-details",
        action="store_true",
        default=None,
        help="show check outputs to non-loopback callers",
    )


def settings_from_args(args: argparse.Namespace) -> Settings:
    settings = Settings.from_env(
        drain_delay=args.drain_delay,
        shutdown_timeout=args.shutdown_timeout,
        grace_period=args.grace_period,
        stream_close_window=args.stream_close_window,
        stream_end=args.stream_end,
        readiness_path=args.readiness_path,
        liveness_path=args.liveness_path,
        startup_path=args.startup_path,
        metrics_path=args.metrics_path,
        expose_details=args.expose_details,
    )
    return settings.resolved()
