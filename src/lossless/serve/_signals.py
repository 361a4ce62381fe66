"""The signals a server under the lifecycle handles, and what the n-th one means."""

from __future__ import annotations

import signal

HANDLED_SIGNALS = (
    signal.SIGTERM,  # what Kubernetes (and most supervisors) send to stop a container
    signal.SIGINT,  # Ctrl-C in a terminal
)


def meaning(count: int) -> str:
    """1st signal: drain; 2nd: skip what is left of the drain delay; 3rd: exit at once."""
    return {1: "drain", 2: "skip_delay"}.get(count, "exit_now")


def name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return str(sig)
