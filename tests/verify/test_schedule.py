"""The open-loop schedule shared by the HTTP and gRPC generators (verify/load/schedule.py).

The loop is driven with a clock the test advances in its wait callbacks: the schedule's
contract is about which request is issued when, not about real time (the generators' own
tests run it against real servers).
"""

from __future__ import annotations

import asyncio
import random

import pytest

from lossless.verify.load.schedule import BATCH, OpenLoop
from lossless.verify.model import ErrorClass, Record


class _Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def now(self) -> float:
        return self.t

    async def advance(self, seconds: float) -> None:
        self.t += seconds
        await asyncio.sleep(0)


def _plan(**kw: float) -> OpenLoop:
    args: dict[str, float] = {
        "rate": 10.0,
        "duration": 1.0,
        "new_conn_ratio": 0.5,
        "lag_budget": 0.1,
        "seed": 7,
    }
    args.update(kw)
    return OpenLoop(
        args["rate"],
        args["duration"],
        args["new_conn_ratio"],
        args["lag_budget"],
        int(args["seed"]),
    )


def test_every_request_is_issued_once_in_order_when_due() -> None:
    clock = _Clock()
    issued: list[tuple[int, float, int, bool, int, float]] = []

    def issue(seq: int, intended: float, client: int, fresh: bool, kind: int) -> bool:
        issued.append((seq, intended, client, fresh, kind, clock.t))
        return True

    kinds = iter(range(1000))
    plan = _plan()
    asyncio.run(
        plan.run(
            clock.now,
            issue,
            clients=3,
            stopped=lambda: False,
            wait_due=clock.advance,
            wait_room=lambda: clock.advance(1.0),
            choose=lambda: next(kinds),
        )
    )
    assert plan.count == 10
    assert [i[0] for i in issued] == list(range(10))
    assert [i[1] for i in issued] == pytest.approx([100.0 + s / 10 for s in range(10)])
    assert all(at >= intended for _, intended, _, _, _, at in issued)  # never early
    assert [i[2] for i in issued] == [s % 3 for s in range(10)]
    rng = random.Random(7)
    assert [i[3] for i in issued] == [rng.random() < 0.5 for _ in range(10)]
    assert [i[4] for i in issued] == list(range(10))  # one draw of the kind per request


def test_at_the_bound_the_same_request_waits_and_is_retried_late() -> None:
    """1. request 3 finds the generator at its bound 2. the loop awaits wait_room (1 s)
    Result: request 3 is issued again with the same draws, 1 s late, and nothing is dropped."""
    clock = _Clock()
    issued: list[tuple[int, bool, int, float]] = []
    refused: list[tuple[int, bool, int]] = []
    rooms = 0

    def issue(seq: int, intended: float, client: int, fresh: bool, kind: int) -> bool:
        if seq == 3 and not refused:
            refused.append((seq, fresh, kind))
            return False
        issued.append((seq, fresh, kind, clock.t - intended))
        return True

    async def wait_room() -> None:
        nonlocal rooms
        rooms += 1
        await clock.advance(1.0)

    kinds = iter(range(1000))
    asyncio.run(
        _plan(rate=10.0, duration=0.5).run(
            clock.now,
            issue,
            clients=1,
            stopped=lambda: False,
            wait_due=clock.advance,
            wait_room=wait_room,
            choose=lambda: next(kinds),
        )
    )
    assert rooms == 1
    assert [i[0] for i in issued] == [0, 1, 2, 3, 4]
    assert (issued[3][0], issued[3][1], issued[3][2]) == refused[0]
    assert issued[3][3] == pytest.approx(1.0)
    # request 4 was due during the wait: issued back to back with 3, late as well
    assert issued[4][3] == pytest.approx(0.9)


def test_a_backlog_is_issued_in_batches_and_a_stop_ends_the_schedule() -> None:
    """1. the whole schedule is due at once (the process paused 10 s after the start)
    2. stopped() turns true after three batches
    Result: three passes of BATCH requests each, in order, with other tasks run in between."""
    reads = iter([100.0])
    seqs: list[int] = []
    passes: list[int] = []  # requests issued when each pass began
    between: list[int] = []  # requests issued when another task got to run

    def now() -> float:
        return next(reads, 110.0)

    def issue(seq: int, intended: float, client: int, fresh: bool, kind: int) -> bool:
        seqs.append(seq)
        return True

    async def other() -> None:
        while True:
            between.append(len(seqs))
            await asyncio.sleep(0)

    async def never() -> None:
        raise AssertionError("no bound in this schedule")

    async def main() -> None:
        watcher = asyncio.ensure_future(other())
        await _plan(rate=1000.0, duration=1.0).run(
            now,
            issue,
            clients=1,
            stopped=lambda: len(seqs) >= 3 * BATCH,
            wait_due=asyncio.sleep,
            wait_room=never,
            tick=lambda t: passes.append(len(seqs)),
        )
        watcher.cancel()

    asyncio.run(main())
    assert seqs == list(range(3 * BATCH))
    assert passes == [0, BATCH, 2 * BATCH]
    assert {BATCH, 2 * BATCH} <= set(between)


def test_late_and_bad_figures() -> None:
    plan = _plan(lag_budget=0.1)
    rec = Record(0, 1.0, 1.25, None, None, 0, 0, ErrorClass.NONE, "", 0, False, 0, 0)
    assert plan.late(rec)
    rec.sent = 1.05
    assert not plan.late(rec)
    with pytest.raises(ValueError, match="rate must be > 0 calls/s, got 0"):
        OpenLoop(0, 1, 0, 0, 0, unit="calls")
    with pytest.raises(ValueError, match="lag_budget must be >= 0 s, got -1"):
        _plan(lag_budget=-1)
    with pytest.raises(ValueError, match=r"new_conn_ratio must be within \[0, 1\]"):
        _plan(new_conn_ratio=2)
