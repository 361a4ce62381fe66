"""Open streams (SSE, chunked) end cleanly at t0 + D: real servers, real signals, raw sockets.

Scenario (each server shape): 1. an SSE client and a chunked client connected 2. SIGTERM with
D = 1 s and a 0.3 s close window. Result: each stream gets its terminating chunk at or after
t0 + D and soon after t0 + D + window, the connection then closes; exit 0, no ``forced`` event,
no traceback, and the app's generator ``finally`` ran for both streams.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from tests.runtime.conftest import Server

SHAPES = {
    "uvicorn": ("uvicorn", ()),
    "uvicorn-4-workers": ("uvicorn", ("--workers", "4")),
    "gunicorn": ("gunicorn", ()),
}
TARGET = {"uvicorn": "prod_apps:asgi", "gunicorn": "prod_apps:wsgi"}
DELAY, WINDOW = 1.0, 0.3


def _t0(server: Server) -> float:
    """t0 as wall-clock time, from the server's ``draining`` event: its ``ts`` less its
    ``t_plus`` (the event may be logged a moment after t0 on a loaded machine)."""
    event = next(e for e in server.events() if e["event"] == "draining")
    return float(event["ts"]) - float(event.get("t_plus") or 0.0)  # type: ignore[arg-type]


class StreamClient(threading.Thread):
    """GET ``path`` on a raw socket and read until the server closes; records the bytes and when
    the terminating chunk arrived (wall clock, to compare with the server's t0 event)."""

    def __init__(self, port: int, path: str) -> None:
        super().__init__(daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=15)
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        self.data = b""
        self.ended_at: float | None = None
        self.error: BaseException | None = None
        self.first = threading.Event()

    def run(self) -> None:
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return
                self.data += chunk
                _head, sep, body = self.data.partition(b"\r\n\r\n")
                if sep and body:
                    self.first.set()  # headers and a first chunk arrived
                if self.data.endswith(b"\r\n0\r\n\r\n") and self.ended_at is None:
                    self.ended_at = time.time()
        except OSError as exc:
            self.error = exc
        finally:
            self.first.set()
            self.sock.close()


@pytest.mark.parametrize("shape", list(SHAPES))
def test_streams_end_cleanly_at_t0_plus_d(serve, shape: str, tmp_path: Path) -> None:
    kind, extra = SHAPES[shape]
    finally_file = tmp_path / "finally"
    server: Server = serve(
        kind,
        *extra,
        "--drain-delay",
        str(DELAY),
        "--stream-close-window",
        str(WINDOW),
        "--shutdown-timeout",
        "10",
        target=TARGET[kind],
        env={"APP_FINALLY_FILE": str(finally_file)},
    )
    server.wait_ready()
    clients = [StreamClient(server.port, "/sse"), StreamClient(server.port, "/chunked")]
    for client in clients:
        client.start()
    for client in clients:
        assert client.first.wait(10), server.stderr()
    server.signal()
    for client in clients:
        client.join(15)
        assert not client.is_alive()
    assert server.wait_exit(15) == 0, server.stderr()
    assert server.event("draining") is not None, server.stderr()
    t0 = _t0(server)
    for client in clients:
        assert client.error is None, client.error
        assert client.data.startswith(b"HTTP/1.1 200"), client.data[:200]
        assert client.ended_at is not None, f"no terminating chunk: {client.data[-80:]!r}"
        assert client.ended_at >= t0 + DELAY, "a stream ended before t0 + D"
        # Generous on a shared 2-core machine (this thread may get the CPU half a second
        # late); a cut at the deadline would be ~9 s late.
        assert client.ended_at <= t0 + DELAY + WINDOW + 2.0, client.ended_at - t0
    assert not [e for e in server.events() if e["event"] == "forced"], server.stderr()
    assert "Traceback" not in "\n".join(server.lines), server.stderr()
    ran = finally_file.read_text().split()
    assert "sse" in ran and "chunked" in ran, ran


def test_app_sends_its_last_event_once_the_drain_starts(serve, tmp_path: Path) -> None:
    """1. an SSE client on /sse?bye=1, whose generator awaits ``lc.wait_draining()`` 2. SIGTERM
    with D = 30 s 3. once the stream ended, a second SIGTERM (skips the rest of D). Result: the
    client gets ``event: bye`` and a clean end within D (the app finished on its own: the
    server ended no stream), and the process exits 0. (D is long so that the app's end lands
    inside it however late anything gets the CPU.)"""
    finally_file = tmp_path / "finally"
    server: Server = serve(
        "uvicorn",
        "--drain-delay",
        "30",
        "--shutdown-timeout",
        "60",
        target="prod_apps:asgi",
        env={"APP_FINALLY_FILE": str(finally_file)},
    )
    server.wait_ready()
    client = StreamClient(server.port, "/sse?bye=1")
    client.start()
    assert client.first.wait(10)
    server.signal()
    client.join(15)
    assert not client.is_alive()
    assert server.event("listeners_closed") is None  # still within D
    server.signal()
    assert server.wait_exit(15) == 0, server.stderr()
    assert b"event: bye" in client.data
    assert client.data.endswith(b"\r\n0\r\n\r\n")
    t0 = _t0(server)
    assert client.ended_at is not None and client.ended_at < t0 + 30
    assert server.event("streams_ending") is None, server.stderr()  # none left to end
    assert "sse-bye" in finally_file.read_text()


def test_a_stream_blocked_elsewhere_is_cancelled_then_ended_cleanly(serve, tmp_path: Path) -> None:
    """1. a raw ASGI stream that sent one chunk and then waits on an event forever (it never
    calls send or receive again) 2. SIGTERM, D = 0.5 s, window 0. Result: about 1 s after
    t0 + D (the app's grace) it is cancelled, its ``finally`` runs, the client still gets the
    terminating chunk; exit 0, nothing forced, no traceback."""
    finally_file = tmp_path / "finally"
    server: Server = serve(
        "uvicorn",
        "--drain-delay",
        "0.5",
        "--stream-close-window",
        "0",
        "--shutdown-timeout",
        "10",
        target="prod_apps:asgi",
        env={"APP_FINALLY_FILE": str(finally_file)},
    )
    server.wait_ready()
    client = StreamClient(server.port, "/stuck")
    client.start()
    assert client.first.wait(10)
    server.signal()
    client.join(15)
    assert server.wait_exit(15) == 0, server.stderr()
    assert client.error is None and client.ended_at is not None, client.data[-80:]
    assert client.ended_at >= _t0(server) + 0.5 + 1.0  # its end time, then the app's grace
    assert not [e for e in server.events() if e["event"] == "forced"], server.stderr()
    assert "Traceback" not in "\n".join(server.lines), server.stderr()
    assert "stuck" in finally_file.read_text()


def test_registry_forgets_streams_that_end_without_their_last_part() -> None:
    """A streaming response whose app returns without the final body part (uvicorn then closes
    the connection) leaves nothing behind in the open-stream registry."""

    from lossless.asgi import LosslessMiddleware
    from lossless.lifecycle import Lifecycle
    from lossless.settings import Settings

    lc = Lifecycle(Settings(drain_delay=0))
    lc.streams.armed = True  # as lossless serve's server does
    seen = []

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"x", "more_body": True})
        seen.append(len(lc.streams))  # registered while open

    _serve_in_process(LosslessMiddleware(app, lifecycle=lc, loop_check=False), times=3)
    assert seen == [1, 1, 1]
    assert len(lc.streams) == 0
    lc.health.stop()


@pytest.mark.parametrize("armed", [False, True])
def test_responses_are_wrapped_only_where_a_server_ends_streams(armed: bool) -> None:
    """Under a server that never ends streams (any server but ``lossless serve``'s) the app gets
    the server's own ``receive`` and ``send``: tracking streams nobody ends would cost every
    request (bench/bench_overhead.py). Armed, streams are tracked."""

    from lossless.asgi import LosslessMiddleware
    from lossless.lifecycle import Lifecycle
    from lossless.settings import Settings

    lc = Lifecycle(Settings(drain_delay=0))
    lc.streams.armed = armed
    got = []

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        got.append((receive, send))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"x", "more_body": True})
        got.append(len(lc.streams))
        await send({"type": "http.response.body", "body": b""})

    receive, send = _serve_in_process(LosslessMiddleware(app, lifecycle=lc, loop_check=False))
    (app_receive, app_send), open_streams = got
    assert (app_receive is receive and app_send is send) is not armed
    assert open_streams == (1 if armed else 0)
    assert len(lc.streams) == 0
    lc.health.stop()


def _serve_in_process(middleware: object, times: int = 1) -> tuple[object, object]:
    """Call ``middleware`` with one GET scope ``times`` times on a fresh loop, as a server
    would; return the ``receive`` and ``send`` it was given."""
    import asyncio

    scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "query_string": b""}

    async def receive():  # type: ignore[no-untyped-def]
        return {"type": "http.request"}

    async def send(message):  # type: ignore[no-untyped-def]
        return None

    async def main() -> None:
        for _ in range(times):
            await middleware(scope, receive, send)  # type: ignore[operator]

    asyncio.run(main())
    return receive, send
