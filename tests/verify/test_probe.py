"""Readiness probes with the kubelet's semantics (pkg/kubelet/prober/worker.go,
pkg/probe/http/http.go): thresholds, initial delay, 200-399 success, timeouts."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from lossless.errors import LosslessError
from lossless.verify.lab.prober import (
    ExecAction,
    HTTPGetAction,
    ProbeSpec,
    ReadinessProber,
    SleepAction,
    TCPSocketAction,
    run_handler,
)
from lossless.verify.model import Clock
from tests.verify.misbehaving import refusing_port


@contextlib.asynccontextmanager
async def http_server(statuses: dict[str, int], hang: bool = False) -> AsyncIterator[int]:
    """A real HTTP/1.1 server on 127.0.0.1 answering each path with its status (404 otherwise);
    ``hang`` makes it read the request and never answer."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = (await reader.readline()).decode()
            while (await reader.readline()) not in (b"\r\n", b""):
                pass
            if hang:
                await asyncio.sleep(30)
            path = line.split()[1] if len(line.split()) > 1 else "/"
            status = statuses.get(path, 404)
            writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n".encode())
            await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield port
    finally:
        server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 1)


@pytest.mark.parametrize(
    ("status", "ok"),
    [(200, True), (204, True), (301, True), (399, True), (400, False), (404, False), (500, False),
     (503, False)],
)  # fmt: skip
def test_http_status_200_to_399_succeeds(status: int, ok: bool) -> None:
    async def main() -> tuple[bool, str]:
        async with http_server({"/readyz": status}) as port:
            return await run_handler(HTTPGetAction("/readyz"), port, 1.0)

    success, detail = asyncio.run(main())
    assert success is ok
    assert str(status) in detail


def test_http_refused_and_timeout_fail() -> None:
    async def main() -> None:
        with refusing_port() as port:  # bound, not listening: refused
            success, detail = await run_handler(HTTPGetAction("/"), port, 1.0)
        assert not success and "refused" in detail.lower()
        async with http_server({"/": 200}, hang=True) as port:
            loop = asyncio.get_running_loop()
            start = loop.time()
            success, detail = await run_handler(HTTPGetAction("/"), port, 0.3)
            assert not success and "timeout" in detail
            assert 0.25 < loop.time() - start < 1.0

    asyncio.run(main())


def test_tcp_exec_and_sleep_handlers() -> None:
    async def main() -> None:
        async with http_server({}) as port:
            assert (await run_handler(TCPSocketAction(), port, 1.0))[0]
        with refusing_port() as closed:
            assert not (await run_handler(TCPSocketAction(), closed, 1.0))[0]
        # a process spawned on a loaded machine may take a while: 10 s (the timeout's case below)
        assert (await run_handler(ExecAction(("true",)), port, 10.0))[0]
        assert not (await run_handler(ExecAction(("false",)), port, 10.0))[0]
        ok, detail = await run_handler(ExecAction(("sleep", "5")), port, 0.2)
        assert not ok and "timeout" in detail
        ok, detail = await run_handler(ExecAction(("sh", "-c", 'test "$PORT" = ' + str(port))),
                                       port, 10.0)  # fmt: skip
        assert ok, detail
        loop = asyncio.get_running_loop()
        start = loop.time()
        assert (await run_handler(SleepAction(0.2), port, 5))[0]
        assert loop.time() - start >= 0.19

    asyncio.run(main())


def _prober(spec: ProbeSpec, changes: list[tuple[bool, str]]) -> ReadinessProber:
    return ReadinessProber(
        spec, 1, clock=lambda: 0.0, started_at=0.0, on_change=lambda r, d: changes.append((r, d))
    )


def test_thresholds_need_consecutive_results() -> None:
    changes: list[tuple[bool, str]] = []
    spec = ProbeSpec(HTTPGetAction("/"), success_threshold=2, failure_threshold=3)
    p = _prober(spec, changes)
    assert not p.ready  # a readiness worker starts at Failure
    p.observe(True, "s1")
    assert not p.ready  # 1 success < successThreshold 2
    p.observe(False, "f")
    p.observe(True, "s1")
    assert not p.ready  # the run was reset by the failure
    p.observe(True, "s2")
    assert p.ready and changes == [(True, "s2")]
    p.observe(False, "f1")
    p.observe(False, "f2")
    p.observe(True, "s")
    p.observe(False, "f1")
    p.observe(False, "f2")
    assert p.ready  # never 3 failures in a row
    p.observe(False, "f3")
    assert not p.ready and changes[-1] == (False, "f3")


def test_initial_delay_and_period_on_a_real_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """initialDelaySeconds 0.5, periodSeconds 0.2: the first probe is on the first tick after
    the delay (0.6 s), then one a tick. Timed from when each probe started: never before the
    delay, at most LATE after its tick (a loaded machine holds the loop; a fixed 1.05 s window
    with 2 to 4 probes and the first before 0.85 s failed that way)."""
    from lossless.verify.lab import prober as prober_module

    late = 0.6
    clock = Clock()
    starts: list[float] = []
    original = prober_module.run_handler

    async def timed(*args: object, **kwargs: object) -> tuple[bool, str]:
        starts.append(clock.now())
        return await original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(prober_module, "run_handler", timed)

    async def main() -> list[float]:
        ready_at: list[float] = []
        async with http_server({"/readyz": 200}) as port:
            spec = ProbeSpec(HTTPGetAction("/readyz"), initial_delay=0.5, period=0.2)
            prober = ReadinessProber(
                spec,
                port,
                clock=clock.now,
                started_at=clock.now(),
                on_change=lambda ready, _d: ready_at.append(clock.now()),
            )
            task = asyncio.create_task(prober.run())
            try:
                async with asyncio.timeout(10):
                    while len(starts) < 4:
                        await asyncio.sleep(0.02)
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        assert ready_at and ready_at[0] >= starts[0]  # ready on the first success
        return starts[:4]

    first, *_, fourth = asyncio.run(main())
    # ticks at 0, 0.2, 0.4 are skipped (initial delay); 0.6 is the first probe
    assert 0.5 <= first <= 0.6 + late, first
    # then one a tick (0.8, 1.0, 1.2): not back to back, not a tick in two
    assert 0.4 - 0.02 <= fourth - first <= 0.6 + late, (first, fourth)


@pytest.mark.parametrize(
    "kwargs",
    [{"period": 0}, {"timeout": -1}, {"initial_delay": -1}, {"success_threshold": 0},
     {"failure_threshold": 0}],
)  # fmt: skip
def test_probe_spec_validation(kwargs: dict[str, float]) -> None:
    with pytest.raises(LosslessError):
        ProbeSpec(HTTPGetAction("/"), **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("how", ["timeout", "cancel"])
def test_an_exec_handler_cut_short_is_reaped_before_it_returns(how: str) -> None:
    """An exec handler that times out, or is cancelled (a lab closing mid-probe), has killed and
    reaped its process when it returns: a loop closed right after leaves no subprocess
    transport "still running" (an unraisable ResourceWarning once collected)."""
    import gc
    import warnings

    async def main() -> None:
        action = ExecAction(("sleep", "5"))
        if how == "timeout":
            ok, detail = await run_handler(action, 1, 0.1)
            assert not ok and "timeout" in detail
            return
        task = asyncio.ensure_future(run_handler(action, 1, 5.0))
        await asyncio.sleep(0.1)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        for _ in range(5):
            asyncio.run(main())
            gc.collect()
    assert not [w for w in caught if "still running" in str(w.message)], caught
