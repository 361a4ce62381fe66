"""WebSockets close with 1012 at t0 + D, spread over the stream close window (not all in the same
millisecond, so their clients do not all reconnect at once)."""

from __future__ import annotations

import threading
import time

import websocket

from tests.runtime.conftest import Server

# The window is wide so that the spread survives this process waiting for the CPU: the close
# times are taken when the client threads run, and a stall as long as the window would
# bunch them all together.
DELAY, WINDOW = 0.5, 3.0


def test_websockets_close_with_1012_spread_over_the_window(serve) -> None:
    """1. six WebSocket clients connected 2. SIGTERM, D = 0.5 s, window 3 s. Result: each gets
    a close frame with code 1012 at or after t0 + D; the closes are spread (not one instant);
    exit 0."""
    server: Server = serve(
        "uvicorn",
        "--drain-delay",
        str(DELAY),
        "--stream-close-window",
        str(WINDOW),
        target="prod_apps:asgi",
    )
    server.wait_ready()
    sockets = [
        websocket.create_connection(f"ws://127.0.0.1:{server.port}/ws", timeout=15)
        for _ in range(6)
    ]
    for ws in sockets:
        ws.send("hi")
        assert ws.recv() == "hi"
    closes: list[tuple[int, float]] = []
    lock = threading.Lock()

    def wait_close(ws: websocket.WebSocket) -> None:
        frame = ws.recv_data_frame(True)[1]
        code = int.from_bytes(frame.data[:2], "big") if frame.data else 0
        with lock:
            closes.append((code, time.time()))

    threads = [threading.Thread(target=wait_close, args=(ws,)) for ws in sockets]
    for thread in threads:
        thread.start()
    server.signal()
    for thread in threads:
        thread.join(15)
    for ws in sockets:
        ws.shutdown()  # the server closed it: release our socket
    assert server.wait_exit(15) == 0, server.stderr()
    draining = next(e for e in server.events() if e["event"] == "draining")
    t0 = float(draining["ts"]) - float(draining.get("t_plus") or 0.0)  # type: ignore[arg-type]
    assert [code for code, _ in closes] == [1012] * 6, closes
    times = sorted(at for _, at in closes)
    assert times[0] >= t0 + DELAY, "a WebSocket closed before t0 + D"
    assert times[-1] - times[0] > 0.2, f"closes not spread: {[t - t0 for t in times]}"
