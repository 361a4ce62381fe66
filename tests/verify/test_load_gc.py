"""The load generator and the garbage collector: no full collection while the load runs.

A full (generation 2) collection walks every record kept so far; with tens of thousands of them
it stalls the schedule for tens of milliseconds (issue 13). The thresholds are set so low here
that, without the generator's own policy, CPython would run full collections many times during
a 0.5 s run; with it, only young collections run during the load, and automatic collection is
back afterwards.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from lossless.verify.load.generator import run, run_load
from lossless.verify.model import Clock, Endpoint

from .misbehaving import StaticView, serve


@pytest.fixture
def low_thresholds() -> Iterator[None]:
    before = gc.get_threshold()
    # CPython skips a full collection until the objects that survived since the last one exceed
    # 25 % of those it found then: freeze what exists, so that the last full collection found
    # nothing and the next ones are due at once
    gc.freeze()
    gc.collect()
    gc.set_threshold(50, 1, 1)  # a full collection every ~50 allocations when automatic
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()


def test_no_full_collection_while_the_load_runs(low_thresholds: None) -> None:
    collections: list[tuple[str, int]] = []
    running = [False]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start" and running[0]:
            collections.append((phase, info["generation"]))

    async def main(port: int) -> int:
        view = StaticView([Endpoint("r1", "127.0.0.1", port)], 1)
        running[0] = True
        try:
            records = await run_load(view, Clock(), rate=400, duration=0.5)
        finally:
            running[0] = False
        return len(records)

    assert gc.isenabled()
    gc.callbacks.append(on_gc)
    try:
        with serve() as port:
            assert run(main(port)) == 200
    finally:
        gc.callbacks.remove(on_gc)
    generations = [g for _, g in collections]
    assert generations, "young generations must still be collected during the load"
    assert 2 not in generations, generations
    assert gc.isenabled()  # automatic collection is back after the run
