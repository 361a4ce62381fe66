"""A small ASGI app for ``lossless verify`` and ``lossless demo``.

Every request to ``/`` (or any path but the probes) does 0-50 ms of simulated work and answers
its version (``LOSSLESS_VERSION``, default ``v1``) and the port it serves on, e.g.
``{"version": "v2", "port": 41233}``. ``/readyz`` and ``/livez`` answer ``ok``.

Two ways to run it, the two sides of the demo:

- naive: ``python -m uvicorn examples.app:app --port 8000``. On SIGTERM uvicorn closes its
  listener at once: clients still routing to it get refused connections.
- lossless: ``lossless serve examples.app:app --port 8000 --drain-delay 2``. The runtime's
  middleware answers ``/readyz`` itself (503 from SIGTERM on) and keeps serving for the drain
  delay before it closes the listener.

Plain ASGI (no framework) so that a replica starts fast.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

VERSION = os.environ.get("LOSSLESS_VERSION", "v1")
MAX_WORK = float(os.environ.get("EXAMPLE_MAX_WORK", "0.05"))  # seconds of simulated work


async def _respond(send: Send, status: int, body: bytes, content_type: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    path = scope.get("path", "/")
    if path in ("/readyz", "/livez", "/healthz"):
        await _respond(send, 200, b"ok", b"text/plain")
        return
    await asyncio.sleep(random.uniform(0.0, MAX_WORK))
    server = scope.get("server") or ("", 0)
    body = json.dumps({"version": VERSION, "port": server[1]}).encode()
    await _respond(send, 200, body, b"application/json")
