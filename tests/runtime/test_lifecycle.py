"""The lifecycle and health checks in-process: hooks, bounds, states, metrics."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from lossless import Lifecycle, Settings, State
from lossless.health import Health


def _lc(**kw: float) -> Lifecycle:
    return Lifecycle(Settings(**{"drain_delay": 0.0, **kw}))  # type: ignore[arg-type]


def test_states_and_hook_order() -> None:
    lc = _lc(shutdown_timeout=2)
    calls: list[str] = []
    lc.on_startup(lambda: calls.append("start1"))

    @lc.on_startup
    async def start2() -> None:
        calls.append("start2")

    lc.on_shutdown(lambda: calls.append("stop1"))
    lc.on_shutdown(lambda: calls.append("stop2"))
    lc.on_ready(lambda: calls.append("ready"))
    assert lc.state is State.STARTING
    lc.startup_sync()
    assert lc.state is State.READY and lc.is_ready()
    assert lc.drain() is True
    assert lc.drain() is False  # idempotent
    assert lc.state is State.DRAINING and not lc.is_ready()
    lc.shutdown_sync()
    assert lc.state is State.STOPPING
    assert lc.stopped() == 0
    assert calls == ["start1", "start2", "ready", "stop2", "stop1"]


def _until(condition: object, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() >= end:
            return False
        time.sleep(0.005)
    return True


def test_not_ready_until_critical_checks_pass() -> None:
    """The background checker decides (no manual round racing it)."""
    lc = _lc(check_interval=0.02)
    ok = threading.Event()
    rounds: list[bool] = []
    lc.add_check("dep", lambda: rounds.append(ok.is_set()) or ok.is_set())
    lc.add_check("opt", lambda: False, critical=False)
    lc.startup_sync()
    assert _until(lambda: len(rounds) >= 3)
    assert lc.state is State.STARTING
    ok.set()
    assert _until(lambda: lc.state is State.READY and lc.is_ready())
    ok.clear()
    assert _until(lambda: not lc.is_ready())  # readiness follows the check
    assert lc.state is State.READY
    lc.health.stop()


def test_drain_hooks_are_bounded_and_do_not_delay_the_drain() -> None:
    """drain() returns at once: well before the hooks' 2 s timeout, which a drain waiting for its
    hooks would take (the slow one takes 30 s); the slow hook is cut at that timeout."""
    lc = _lc(drain_hook_timeout=2, shutdown_timeout=60)
    done = threading.Event()
    release = threading.Event()

    def slow_deregister() -> None:
        release.wait(30)

    lc.on_drain(slow_deregister)
    lc.on_drain(done.set, name="fast")
    start = time.monotonic()
    lc.drain()
    assert time.monotonic() - start < 1.0  # drain() returns at once
    assert done.wait(5)
    for thread in lc._drain_hook_threads:
        thread.join(10)
    assert not lc._drain_hook_threads[0].is_alive()  # cut by its timeout (the call is abandoned)
    release.set()


def test_shutdown_hook_cut_at_the_deadline_is_forced() -> None:
    lc = _lc(shutdown_timeout=0.3)

    @lc.on_shutdown
    async def stuck() -> None:
        await asyncio.sleep(30)

    lc.drain()
    start = time.monotonic()
    lc.shutdown_sync()
    assert time.monotonic() - start < 5  # cut at the 0.3 s deadline, not after the 30 s hook
    assert lc.forced and "stuck" in lc.forced[0]
    assert lc.stopped() == 1


def test_skip_delay_and_remaining() -> None:
    lc = Lifecycle(Settings(drain_delay=100, shutdown_timeout=200))
    assert lc.delay_remaining() == 0 and lc.remaining() == 200
    lc.drain()
    assert 90 < lc.delay_remaining() <= 100  # wide: this thread may wait for the CPU
    lc.skip_delay()
    assert lc.delay_remaining() == 0
    assert 190 < lc.remaining() <= 200


def test_in_flight_tracking() -> None:
    lc = _lc()
    token = lc.request_started({"method": "GET", "path": "/x"})
    assert lc.in_flight == 1
    assert [r.description for r in lc.in_flight_requests()] == ["GET /x"]
    lc.drain()
    lc.request_finished(token)
    assert lc.in_flight == 0 and lc.served_during_drain == 1


def test_hanging_sync_check_is_not_stacked() -> None:
    health = Health(interval=0.05, default_timeout=0.1)
    calls = []
    gate = threading.Event()

    def hangs() -> None:
        calls.append(1)
        gate.wait(10)

    health.add("hangs", hangs)
    health.evaluate()
    health.evaluate()
    health.evaluate()
    assert _until(lambda: calls)  # the first call's thread may start after its 0.1 s timeout
    assert len(calls) == 1  # the hung call is not started again
    (result,) = health.results()
    assert not result.ok and "timeout" in result.output
    gate.set()


def test_duplicate_check_name_is_rejected() -> None:
    lc = _lc()
    lc.add_check("a", lambda: True)
    with pytest.raises(ValueError, match="already registered"):
        lc.add_check("a", lambda: True)


def test_metrics_render() -> None:
    from lossless import metrics

    lc = _lc()
    lc.startup_sync()
    token = lc.request_started("GET /")
    body, content_type = metrics.render(lc)
    text = body.decode()
    assert "lossless_in_flight_requests 1.0" in text
    assert 'lossless_state{state="ready"} 1.0' in text
    lc.drain()
    lc.request_finished(token)
    text = metrics.render(lc)[0].decode()
    assert "lossless_served_during_drain_total 1.0" in text
    assert content_type.startswith("text/plain")
    lc.health.stop()
