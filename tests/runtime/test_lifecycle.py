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


def test_not_ready_until_critical_checks_pass() -> None:
    lc = _lc()
    ok = threading.Event()
    lc.add_check("dep", lambda: ok.is_set())
    lc.add_check("opt", lambda: False, critical=False)
    lc.startup_sync()
    lc.health.evaluate()
    assert lc.state is State.STARTING
    ok.set()
    lc.health.evaluate()
    assert lc.state is State.READY and lc.is_ready()
    ok.clear()
    lc.health.evaluate()
    assert lc.state is State.READY and not lc.is_ready()  # readiness follows the check
    lc.health.stop()


def test_drain_hooks_are_bounded_and_do_not_delay_the_drain() -> None:
    lc = _lc(drain_hook_timeout=0.2, shutdown_timeout=5)
    done = threading.Event()

    def slow_deregister() -> None:
        time.sleep(5)

    lc.on_drain(slow_deregister)
    lc.on_drain(done.set, name="fast")
    start = time.monotonic()
    lc.drain()
    assert time.monotonic() - start < 0.05  # drain() returns at once
    assert done.wait(1)
    for thread in lc._drain_hook_threads:
        thread.join(1)
    assert not lc._drain_hook_threads[0].is_alive()  # cut by its timeout (the call is abandoned)


def test_shutdown_hook_cut_at_the_deadline_is_forced() -> None:
    lc = _lc(shutdown_timeout=0.3)

    @lc.on_shutdown
    async def stuck() -> None:
        await asyncio.sleep(10)

    lc.drain()
    start = time.monotonic()
    lc.shutdown_sync()
    assert time.monotonic() - start < 1
    assert lc.forced and "stuck" in lc.forced[0]
    assert lc.stopped() == 1


def test_skip_delay_and_remaining() -> None:
    lc = Lifecycle(Settings(drain_delay=10, shutdown_timeout=20))
    assert lc.delay_remaining() == 0 and lc.remaining() == 20
    lc.drain()
    assert 9 < lc.delay_remaining() <= 10
    lc.skip_delay()
    assert lc.delay_remaining() == 0
    assert 19 < lc.remaining() <= 20


def test_in_flight_tracking() -> None:
    lc = _lc()
    token = lc.request_started({"method": "GET", "path": "/x"})
    assert lc.in_flight == 1
    assert [r.description for r in lc.in_flight_requests()] == ["GET /x"]
    lc.request_finished(token)
    assert lc.in_flight == 0


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
    pytest.importorskip("prometheus_client")
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
