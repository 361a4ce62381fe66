"""A plain ASGI app with long-lived clients for the tests of ``--streams`` / ``--websockets``.

- ``/``: 200 ``ok`` (the HTTP load);
- ``/stream``: a chunked SSE stream, one ``data: tick`` event every 0.1 s, never ending by itself;
- ``/ws``: a WebSocket sending one ``tick`` message every 0.1 s, never closing by itself.

With ``STREAM_END=drain`` (the app run under ``lossless serve``) the stream and the WebSocket end
cleanly once the runtime's drain delay has passed (t0 + drain delay, read from
``lossless.get_lifecycle()``): the SSE response with its terminating chunk, the WebSocket with
close 1012. Under plain uvicorn (no such variable) they are cut when the server stops.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

END_ON_DRAIN = os.environ.get("STREAM_END") == "drain"


def _drained() -> bool:
    """True from t0 + drain delay on (only under lossless serve with STREAM_END=drain)."""
    if not END_ON_DRAIN:
        return False
    from lossless import get_lifecycle

    lc = get_lifecycle()
    t0 = lc.t0
    return t0 is not None and time.monotonic() >= t0 + (lc.settings.drain_delay or 0.0)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "websocket":
        await _websocket(receive, send)
        return
    if scope["path"] == "/stream":
        await _stream(send)
        return
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"ok"})


async def _stream(send: Any) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")],
        }
    )
    while not _drained():
        await send({"type": "http.response.body", "body": b"data: tick\n\n", "more_body": True})
        await asyncio.sleep(0.1)
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _websocket(receive: Any, send: Any) -> None:
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    while not _drained():
        await send({"type": "websocket.send", "text": "tick"})
        await asyncio.sleep(0.1)
    await send({"type": "websocket.close", "code": 1012})
