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
    def __init__(self, port: int, started_file: Path | None = None) -> None:
        #: where the app notes each Slow call that started (``APP_STARTED_FILE``)
        self.started_file = started_file
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.slow = self.channel.unary_unary("/t.Test/Slow")
        self.stream = self.channel.unary_stream("/t.Test/Stream")
        self.health = health_pb2_grpc.HealthStub(self.channel)

    def status(self, service: str = "") -> int:
        request = health_pb2.HealthCheckRequest(service=service)
        return int(self.health.Check(request, timeout=2).status)

    def slow_started(self) -> int:
        """How many Slow calls have reached the app."""
        assert self.started_file is not None
        return len(self.started_file.read_text().split()) if self.started_file.exists() else 0

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
def start(spawn: Spawn, tmp_path: Path) -> Iterator[Callable[..., tuple[Proc, Client]]]:
    clients: list[Client] = []

    def run(mode: str, delay: float, timeout: float) -> tuple[Proc, Client]:
        port = free_port()
        started = tmp_path / f"started-{port}"
        env = {
            "LOSSLESS_DRAIN_DELAY": str(delay),
            "LOSSLESS_SHUTDOWN_TIMEOUT": str(timeout),
            "APP_STARTED_FILE": str(started),
        }
        proc = spawn([sys.executable, APP, mode, str(port)], env=env)
        client = Client(port, started)
        clients.append(client)
        client.wait_serving()
        return proc, client

    yield run
    for client in clients:
        client.channel.close()


def _in_background(
    fn: Callable[[], object], started: Callable[[], bool]
) -> tuple[threading.Thread, dict[str, object]]:
    """Run the RPC ``fn`` on a thread; return once ``started()`` says the server has it (bounded
    polling, not a guessed sleep)."""
    out: dict[str, object] = {}

    def target() -> None:
        try:
            out["result"] = fn()
        except grpc.RpcError as exc:
            out["code"], out["details"] = exc.code(), exc.details()
        out["end"] = time.monotonic()

    thread = threading.Thread(target=target)
    thread.start()
    end = time.monotonic() + 10
    while not started():
        assert time.monotonic() < end and "end" not in out, f"the RPC did not start: {out}"
        time.sleep(0.005)
    return thread, out


def _slow(client: Client, seconds: float) -> tuple[threading.Thread, dict[str, object]]:
    """A Slow RPC of ``seconds`` in flight (it has reached the app)."""
    before = client.slow_started()
    return _in_background(
        lambda: client.slow(str(seconds).encode(), timeout=60),
        lambda: client.slow_started() > before,
    )


@pytest.mark.parametrize("mode", MODES)
def test_1_health_follows_the_lifecycle(
    start: Callable[..., tuple[Proc, Client]], mode: str
) -> None:
    """1. server READY 2. SIGTERM (D = 3 s) 3. Check and an RPC during D. Result: SERVING
    before (for "" and the named service), NOT_SERVING from t0 for both (within 1 s of the
    signal: a loaded machine), while RPCs are still served during D; exit 0 at t0 + D (within
    2 s after it)."""
    proc, client = start(mode, 3.0, 10.0)
    assert client.status("t.Test") == SERVING
    sent_before = time.monotonic()  # t0 is later: the lower bound holds however late we run
    t0 = proc.signal()
    end = time.monotonic() + 1.0
    while client.status() != NOT_SERVING:
        assert time.monotonic() < end, "still SERVING 1 s after SIGTERM"
        time.sleep(0.005)
    assert client.status("t.Test") == NOT_SERVING
    assert client.slow(b"0", timeout=5) == b"done"
    assert proc.event("listeners_closed") is None  # still within D
    assert proc.wait_exit(10) == 0, proc.stderr()
    assert proc.exited_at is not None
    assert proc.exited_at - sent_before >= 3.0 and proc.exited_at - t0 < 3.0 + 2.0


@pytest.mark.parametrize("mode", MODES)
def test_2_in_flight_rpc_finishes_new_rpcs_after_the_delay_are_refused(
    start: Callable[..., tuple[Proc, Client]], mode: str
) -> None:
    """1. a 4 s unary RPC in flight 2. SIGTERM (D = 0.4 s) 3. a new RPC once the listeners are
    closed. Result: the new one fails UNAVAILABLE (cleanly refused) while the in-flight one
    still runs, which then answers ``done``; the server exits 0 as soon as it has (within
    1 s: a loaded machine; the deadline is 10 s)."""
    proc, client = start(mode, 0.4, 10.0)
    thread, out = _slow(client, 4)
    proc.signal()
    proc.wait_event("listeners_closed", 10)
    fresh = Client(int(str(proc.argv[-1])))
    try:
        with pytest.raises(grpc.RpcError) as refused:
            fresh.slow(b"0", timeout=3)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        fresh.channel.close()
    assert "end" not in out, out  # refused by the closed listener, not by an exit
    thread.join(10)
    assert out.get("result") == b"done", out
    assert proc.wait_exit(10) == 0, proc.stderr()
    assert proc.exited_at is not None
    assert proc.exited_at - float(str(out["end"])) < 1.0


@pytest.mark.parametrize("mode", MODES)
def test_3_stream_is_cut_at_the_deadline_with_a_clear_status(
    start: Callable[..., tuple[Proc, Client]], mode: str
) -> None:
    """1. a response stream of 100 messages, 0.1 s apart, under way 2. SIGTERM (D = 0.2 s,
    timeout 1.5 s). Result: the stream ends at the deadline with UNAVAILABLE and CUT_DETAILS
    after about 15 messages (not before its last 0.2 s; within 2 s after it on a loaded
    machine; the stream would last 10 s); the server exits 1 and logs the cut RPC as forced."""
    proc, client = start(mode, 0.2, 1.5)
    received: list[bytes] = []

    def consume() -> None:
        for message in client.stream(b"100,0.1", timeout=20):
            received.append(message)

    thread, out = _in_background(consume, lambda: bool(received))
    sent_before = time.monotonic()  # t0 is later: the lower bound holds however late we run
    t0 = proc.signal()
    thread.join(10)
    assert out.get("code") == grpc.StatusCode.UNAVAILABLE, out
    assert out.get("details") == CUT_DETAILS
    # cut before the next message once within CUT_MARGIN (0.1 s) of the deadline
    assert float(str(out["end"])) - sent_before >= 1.2
    assert float(str(out["end"])) - t0 <= 1.5 + 2.0
    assert 5 <= len(received) < 100
    assert proc.wait_exit(10) == 1, proc.stderr()
    forced = [e for e in proc.events() if e["event"] == "forced"]
    assert any("/t.Test/Stream" in str(e["what"]) for e in forced), proc.stderr()


@pytest.mark.parametrize("mode", MODES)
def test_4_second_signal_skips_the_delay_third_stops_at_once(
    start: Callable[..., tuple[Proc, Client]], mode: str
) -> None:
    """1. a 30 s RPC in flight, D = 30 s 2. a second SIGTERM, once the first was handled: the
    delay ends (new RPCs are refused) 3. a third: the server stops at once. Result: exit 1
    within 5 s of t0 (a loaded machine; D and the RPC are 30 s). Signals are sent one at a
    time: two pending SIGTERMs are one."""
    proc, client = start(mode, 30.0, 60.0)
    thread, out = _slow(client, 30)
    t0 = proc.signal()
    proc.wait_event("draining", 10)
    proc.signal()
    proc.wait_event("listeners_closed", 10)
    time.sleep(0.2)
    proc.signal()
    assert proc.wait_exit(10) == 1, proc.stderr()
    assert proc.exited_at is not None and proc.exited_at - t0 < 5.0
    thread.join(10)
    assert out.get("code") in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED), out
