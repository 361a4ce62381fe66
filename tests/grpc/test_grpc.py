"""``lossless.grpc`` on real server processes (sync ``grpc.server`` and ``grpc.aio``), real
clients and real signals. No generated code: raw-bytes generic handlers and grpc.health.v1."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lossless.grpc import CUT_DETAILS
from tests.conftest import free_port
from tests.supervise._proc import Proc

Spawn = Callable[..., Proc]
APP = str(Path(__file__).with_name("grpc_app.py"))
MODES = ["sync", "aio"]
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Client:
    def __init__(self, port: int) -> None:
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.slow = self.channel.unary_unary("/t.Test/Slow")
        self.stream = self.channel.unary_stream("/t.Test/Stream")
        self.health = health_pb2_grpc.HealthStub(self.channel)

    def status(self, service: str = "") -> int:
        request = health_pb2.HealthCheckRequest(service=service)
        return int(self.health.Check(request, timeout=2).status)

    def wait_serving(self, timeout: float = 15.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                if self.status() == SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.05)
        raise AssertionError("never SERVING")


@pytest.fixture
def start(spawn: Spawn) -> Iterator[Callable[..., tuple[Proc, Client]]]:
    clients: list[Client] = []

    def run(mode: str, delay: float, timeout: float) -> tuple[Proc, Client]:
        port = free_port()
        env = {"LOSSLESS_DRAIN_DELAY": str(delay), "LOSSLESS_SHUTDOWN_TIMEOUT": str(timeout)}
        proc = spawn([sys.executable, APP, mode, str(port)], env=env)
        client = Client(port)
        clients.append(client)
        client.wait_serving()
        return proc, client

    yield run
    for client in clients:
        client.channel.close()


def _in_background(fn: Callable[[], object]) -> tuple[threading.Thread, dict[str, object]]:
    out: dict[str, object] = {}

    def target() -> None:
        try:
            out["result"] = fn()
        except grpc.RpcError as exc:
            out["code"], out["details"] = exc.code(), exc.details()
        out["end"] = time.monotonic()

    thread = threading.Thread(target=target)
    thread.start()
    time.sleep(0.2)
    return thread, out


@pytest.mark.parametrize("mode", MODES)
def test_1_health_follows_the_lifecycle(
    start: Callable[..., tuple[Proc, Client]], mode: str
) -> None:
    """1. server READY 2. SIGTERM (D = 1 s) 3. Check and an RPC during D. Result: SERVING
    before (for "" and the named service), NOT_SERVING within 100 ms of t0 for both, while RPCs
    are still served during D; exit 0."""
    proc, client = start(mode, 1.0, 5.0)
    assert client.status("t.Test") == SERVING
    t0 = proc.signal()
    end = time.monotonic() + 0.1
    while client.status() != NOT_SERVING:
        assert time.monotonic() < end, "still SERVING 100 ms after SIGTERM"
        time.sleep(0.005)
    assert client.status("t.Test") == NOT_SERVING
    assert client.slow(b"0", timeout=5) == b"done"
    assert proc.wait_exit(10) == 0, proc.stderr()
    assert proc.exited_at is not None and 1.0 <= proc.exited_at - t0 < 1.6


@pytest.mark.parametrize("mode", MODES)
def test_2_in_flight_rpc_finishes_new_rpcs_after_the_delay_are_refused(
    start: Callable[..., tuple[Proc, Client]], mode: str
) -> None:
    """1. a 1.5 s unary RPC in flight 2. SIGTERM (D = 0.4 s) 3. a new RPC at t0 + 0.8 s.
    Result: the new one fails UNAVAILABLE (cleanly refused), the in-flight one answers
    ``done``; the server exits 0 as soon as it has."""
    proc, client = start(mode, 0.4, 5.0)
    thread, out = _in_background(lambda: client.slow(b"1.5", timeout=10))
    t0 = proc.signal()
    time.sleep(0.8)
    fresh = Client(int(str(proc.argv[-1])))
    try:
        with pytest.raises(grpc.RpcError) as refused:
            fresh.slow(b"0", timeout=3)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        fresh.channel.close()
    thread.join(10)
    assert out.get("result") == b"done", out
    assert proc.wait_exit(10) == 0, proc.stderr()
    assert proc.exited_at is not None
    assert proc.exited_at - float(str(out["end"])) < 0.3
    assert proc.exited_at - t0 < 2.0


@pytest.mark.parametrize("mode", MODES)
def test_3_stream_is_cut_at_the_deadline_with_a_clear_status(
    start: Callable[..., tuple[Proc, Client]], mode: str
) -> None:
    """1. a response stream of 100 messages, 0.1 s apart 2. SIGTERM (D = 0.2 s, timeout
    1.5 s). Result: the stream ends at the deadline with UNAVAILABLE and CUT_DETAILS after
    about 15 messages; the server exits 1 and logs the cut RPC as forced."""
    proc, client = start(mode, 0.2, 1.5)
    received: list[bytes] = []

    def consume() -> None:
        for message in client.stream(b"100,0.1", timeout=20):
            received.append(message)

    thread, out = _in_background(consume)
    t0 = proc.signal()
    thread.join(10)
    assert out.get("code") == grpc.StatusCode.UNAVAILABLE, out
    assert out.get("details") == CUT_DETAILS
    assert 1.2 <= float(str(out["end"])) - t0 <= 1.8
    assert 10 <= len(received) < 100
    assert proc.wait_exit(10) == 1, proc.stderr()
    forced = [e for e in proc.events() if e["event"] == "forced"]
    assert any("/t.Test/Stream" in str(e["what"]) for e in forced), proc.stderr()


@pytest.mark.parametrize("mode", MODES)
def test_4_second_signal_skips_the_delay_third_stops_at_once(
    start: Callable[..., tuple[Proc, Client]], mode: str
) -> None:
    """1. a 10 s RPC in flight, D = 10 s 2. a second SIGTERM: the delay ends (new RPCs are
    refused) 3. a third: the server stops at once. Result: exit 1 within 1.5 s of t0."""
    proc, client = start(mode, 10.0, 20.0)
    thread, out = _in_background(lambda: client.slow(b"10", timeout=20))
    t0 = proc.signal()
    time.sleep(0.2)
    proc.signal()
    proc.wait_event("listeners_closed", 5)
    time.sleep(0.2)
    proc.signal()
    assert proc.wait_exit(10) == 1, proc.stderr()
    assert proc.exited_at is not None and proc.exited_at - t0 < 1.5
    thread.join(10)
    assert out.get("code") in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED), out
