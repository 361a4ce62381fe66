"""Testing apps that use lossless: a fresh lifecycle per test, and the events of a drain.

The lifecycle is process-wide and runs once: after a test client's lifespan ends it is STOPPING,
so the next test's ``/readyz`` answers 503 (``[-]shutdown failed: lifecycle stopping``). In
tests, give each test the app's lifecycle anew::

    from lossless.testing import fresh_lifecycle, record_events

    def test_drain(app):
        with fresh_lifecycle() as lc, TestClient(app) as client:
            wait_until(lambda: client.get("/readyz").status_code == 200)
            with record_events() as events:
                lc.drain()
                assert client.get("/readyz").status_code == 503
            assert events.names()[0] == "draining"

:func:`fresh_lifecycle` installs :meth:`Lifecycle.renewed` of the current lifecycle (same checks,
hooks and callbacks, which the app registered at import; fresh state) as the process-wide one for
the block. Middleware that found its lifecycle through ``get_lifecycle()`` follows it, and comes
back to the previous one after the block. Middleware given ``lifecycle=`` explicitly keeps it:
build such apps per test instead.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Any

from lossless import events as _events
from lossless.lifecycle import Lifecycle, get_lifecycle, set_lifecycle
from lossless.settings import Settings

__all__ = ["EventLog", "fresh_lifecycle", "record_events"]


@contextlib.contextmanager
def fresh_lifecycle(settings: Settings | None = None) -> Iterator[Lifecycle]:
    """For the block: a renewed process-wide lifecycle (with ``settings`` when given, e.g.
    ``Settings(drain_delay=0)``). After it: its checks stop and the previous one is back."""
    previous = get_lifecycle()
    fresh = previous.renewed(settings)
    set_lifecycle(fresh)
    try:
        yield fresh
    finally:
        fresh.health.stop()
        set_lifecycle(previous)


class EventLog(list[dict[str, Any]]):
    """The structured events (each a dict with ``event``, ``ts``, ``pid``...) seen so far."""

    def names(self) -> list[str]:
        return [str(e["event"]) for e in list(self)]

    def wait_for(self, name: str, timeout: float = 5.0) -> dict[str, Any]:
        """The first event called ``name``, waiting for it up to ``timeout`` seconds (events
        from background threads, such as ``ready`` or ``drain_hook_done``, come a bit later).
        Raises ``AssertionError`` naming the events seen when it does not come."""
        end = time.monotonic() + timeout
        while True:
            for event in list(self):
                if event["event"] == name:
                    return event
            if time.monotonic() >= end:
                raise AssertionError(f"no event {name!r} in {timeout:g} s; saw {self.names()}")
            time.sleep(0.01)


class _Recorder(logging.Handler):
    def __init__(self, sink: EventLog) -> None:
        super().__init__(logging.DEBUG)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        payload = getattr(record, "lossless", None)
        if isinstance(payload, dict):
            self.sink.append(payload)


@contextlib.contextmanager
def record_events() -> Iterator[EventLog]:
    """Collect every lossless event emitted (from any thread) during the block."""
    log = EventLog()
    handler = _Recorder(log)
    logger = _events.logger
    level = logger.level
    logger.setLevel(logging.INFO if level in (logging.NOTSET,) or level > logging.INFO else level)
    logger.addHandler(handler)
    try:
        yield log
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
