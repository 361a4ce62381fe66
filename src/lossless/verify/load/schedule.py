"""The open-loop schedule shared by the load generators (HTTP: :mod:`.generator`, gRPC:
:mod:`.grpc_client`): when each request is due, what counts as late, and when a run stops.

:class:`OpenLoop` holds a run's figures: ``count = round(rate * duration)`` requests, request
``seq`` due at ``start + seq / rate``. :meth:`OpenLoop.run` drives them: it never waits for a
response before sending the next request; a request is late when it is sent more than
``lag_budget`` after its due time (:meth:`OpenLoop.late`), and the generators then class a
successful one ``schedule_lag``. The loop itself owns only the order of events; the generator
supplies how to send (``issue``), how to wait (``wait_due``, ``wait_room``) and when to stop
(``stopped``), so each keeps its own hot path.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

from lossless.verify.model import Record

__all__ = ["BATCH", "Issue", "OpenLoop"]

# Issue at most this many due requests before yielding to the event loop, so a backlog (after a
# pause of the process) cannot starve the I/O callbacks that complete requests.
BATCH = 64

Issue = Callable[[int, float, int, bool, int], bool]
"""``issue(seq, intended, client, fresh, kind) -> bool``: start request ``seq`` (due at
``intended``, for ``client``, on a fresh connection or not, of mix kind ``kind``); False when
nothing was done because the generator is at its bound (then ``wait_room`` is awaited and the
same request is tried again)."""


def _no_kind() -> int:
    return 0


class OpenLoop:
    """The schedule of one run: ``count`` requests at ``rate`` per second, each late when sent
    more than ``lag_budget`` seconds after it was due.

    Construction validates the figures (``ValueError`` naming the bad one, ``unit`` naming what
    is sent: "requests", "calls"); the object is then immutable and may be shared."""

    __slots__ = ("count", "interval", "lag_budget", "new_conn_ratio", "rate", "seed")

    def __init__(
        self,
        rate: float,
        duration: float,
        new_conn_ratio: float,
        lag_budget: float,
        seed: int,
        *,
        unit: str = "requests",
    ) -> None:
        if not rate > 0:
            raise ValueError(f"rate must be > 0 {unit}/s, got {rate}")
        if not duration >= 0:
            raise ValueError(f"duration must be >= 0 s, got {duration}")
        if not 0.0 <= new_conn_ratio <= 1.0:
            raise ValueError(f"new_conn_ratio must be within [0, 1], got {new_conn_ratio}")
        if not lag_budget >= 0:
            raise ValueError(f"lag_budget must be >= 0 s, got {lag_budget}")
        self.rate = rate
        self.interval = 1.0 / rate
        self.count = round(rate * duration)
        self.new_conn_ratio = new_conn_ratio
        self.lag_budget = lag_budget
        self.seed = seed

    def late(self, rec: Record) -> bool:
        """``rec`` was sent more than ``lag_budget`` after its intended time."""
        return rec.sent - rec.intended > self.lag_budget

    async def run(
        self,
        now: Callable[[], float],
        issue: Issue,
        *,
        clients: int,
        stopped: Callable[[], bool],
        wait_due: Callable[[float], Awaitable[None]],
        wait_room: Callable[[], Awaitable[None]],
        choose: Callable[[], int] | None = None,
        tick: Callable[[float], None] | None = None,
        yield_each_batch: bool = False,
    ) -> None:
        """Send the schedule's requests, open loop, from ``now()`` at the call.

        Each pass reads ``now()`` (and calls ``tick(now)`` when given); while the next request
        is not due it awaits ``wait_due(seconds until due)`` (which may return early: the loop
        reads the clock again). Once due, the due requests are issued back to back, in ``seq``
        order, for client ``seq % clients``: a request on a fresh connection with probability
        ``new_conn_ratio`` (drawn from ``random.Random(seed)``), of kind ``choose()`` (0
        without). When ``issue`` returns False the loop awaits ``wait_room()`` and retries the
        same request with the same draws: waiting at the bound shows as lag, never as a
        dropped request. After :data:`BATCH` requests in a row (with ``yield_each_batch``,
        after every run of requests issued back to back) it yields once to the event loop.

        Returns when every request was issued, or at the first pass where ``stopped()`` is
        true (then no further request starts; those in flight are the caller's)."""
        count = self.count
        if count == 0:
            return
        rng = random.Random(self.seed)
        draw = rng.random
        ratio = self.new_conn_ratio
        choose = _no_kind if choose is None else choose
        clients = max(1, clients)
        interval = self.interval
        start = now()
        seq = 0
        fresh = draw() < ratio
        kind = choose()
        while seq < count and not stopped():
            t = now()
            if tick is not None:
                tick(t)
            intended = start + seq * interval
            if intended > t:
                await wait_due(intended - t)
                continue
            issued = 0
            while intended <= t:
                if not issue(seq, intended, seq % clients, fresh, kind):
                    await wait_room()
                    issued = -1
                    break
                seq += 1
                issued += 1
                fresh = draw() < ratio
                kind = choose()
                if seq >= count:
                    break
                intended = start + seq * interval
                if issued >= BATCH:
                    break
            if issued >= BATCH or (yield_each_batch and issued > 0):
                await asyncio.sleep(0)  # let responses in (and calls start) while catching up
