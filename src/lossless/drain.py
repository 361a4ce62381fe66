"""The drain core: what the n-th stop signal means, for every server and ``lossless run``.

DESIGN.md: "A second signal skips what is left of D; a third exits at once." This module is the
one place that says so. Each server integration (uvicorn, gunicorn, gRPC) and the ``lossless run``
supervisor keeps a :class:`SignalCounter`, hands it every drain signal it receives (from its own
loop, never from the signal handler's stack) and carries out the :class:`Action` it returns:

* :attr:`Action.DRAIN` (1st): the counter has already called :meth:`Lifecycle.drain` (t0);
* :attr:`Action.SKIP_DELAY` (2nd): it has already called :meth:`Lifecycle.skip_delay`;
* :attr:`Action.EXIT_NOW` (3rd and later): the caller cuts what is left and exits at once with
  the forced exit code (how depends on the server: ``os._exit``, SIGKILL to workers or to the
  child's group).

Every signal is logged as one ``signal`` event with its count and action.
"""

from __future__ import annotations

import enum
import signal

from lossless import events
from lossless.lifecycle import Lifecycle

__all__ = ["HANDLED_SIGNALS", "Action", "SignalCounter", "action_for", "signal_name"]

HANDLED_SIGNALS: tuple[signal.Signals, ...] = (
    signal.SIGTERM,  # what Kubernetes (and most supervisors) send to stop a container
    signal.SIGINT,  # Ctrl-C in a terminal
)


class Action(enum.Enum):
    """What a drain signal asks for, by its rank."""

    DRAIN = "drain"
    SKIP_DELAY = "skip_delay"
    EXIT_NOW = "exit_now"


def action_for(count: int) -> Action:
    """1st signal: drain; 2nd: skip what is left of the drain delay; 3rd and later: exit now."""
    if count <= 1:
        return Action.DRAIN
    if count == 2:
        return Action.SKIP_DELAY
    return Action.EXIT_NOW


def signal_name(sig: int) -> str:
    """``SIGTERM`` for 15; the number as text for a value that is not a known signal."""
    try:
        return signal.Signals(sig).name
    except ValueError:
        return str(sig)


class SignalCounter:
    """Counts the drain signals of one server and applies the lifecycle part of each.

    Not thread-safe: call :meth:`handle` from the one place that processes signals (an event
    loop callback, a main loop, ``sigtimedwait``)."""

    def __init__(self, lifecycle: Lifecycle) -> None:
        self.lifecycle = lifecycle
        self.count = 0

    def handle(self, sig: int) -> Action:
        """Count ``sig``, log it, start the drain or skip the delay; return the action. For
        :attr:`Action.EXIT_NOW` the caller does the exiting (an ``exit_now`` event is logged)."""
        lc = self.lifecycle
        self.count += 1
        action = action_for(self.count)
        name = signal_name(sig)
        events.emit(
            "signal", signal=name, count=self.count, action=action.value, t_plus=lc.since_t0()
        )
        if action is Action.DRAIN:
            lc.drain(reason=name)
        elif action is Action.SKIP_DELAY:
            lc.skip_delay()
        else:
            events.emit("exit_now", t_plus=lc.since_t0())
        return action

    def drain_started_elsewhere(self) -> None:
        """The drain began without a signal (``drain()`` from code, the admin endpoint, a
        parent process): the next signal counts as the second one."""
        self.count = max(self.count, 1)
