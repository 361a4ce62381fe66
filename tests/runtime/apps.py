"""Apps the runtime tests serve under ``lossless serve``: the same endpoints in ASGI and WSGI.

- ``/``: answers ``hello`` at once.
- ``/slow?s=SECONDS``: answers after sleeping; it first appends a line to ``APP_STARTED_FILE``
  (when set) so a test can wait for the request to reach the app instead of sleeping.
- ``/stream?n=N&s=SECONDS``: streams N chunks, sleeping between them.

Behaviour switches come from environment variables so one module serves every scenario:
``APP_STARTUP_SLEEP`` (a startup hook that sleeps), ``APP_READY_FILE`` (a critical check that
passes while the file exists), ``APP_OPTIONAL_FAIL`` (an optional check that always fails),
``APP_HANG_CHECK`` (a critical check that hangs, timeout ``APP_HANG_TIMEOUT`` or 0.2 s; with
``=optional`` optional).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from urllib.parse import parse_qs

from lossless.lifecycle import get_lifecycle

lc = get_lifecycle()


def _mark_started() -> None:
    marker = os.environ.get("APP_STARTED_FILE")
    if marker:
        with open(marker, "a") as f:
            f.write(f"{os.getpid()}\n")


if os.environ.get("APP_STARTUP_SLEEP"):

    @lc.on_startup
    async def _warm_up() -> None:
        await asyncio.sleep(float(os.environ["APP_STARTUP_SLEEP"]))


if os.environ.get("APP_READY_FILE"):
    _ready_file = os.environ["APP_READY_FILE"]

    @lc.check("ready_file")
    def _ready() -> str:
        if not os.path.exists(_ready_file):
            raise RuntimeError(f"{_ready_file} missing")
        return "ok"


if os.environ.get("APP_OPTIONAL_FAIL"):

    @lc.check("cache", critical=False)
    def _cache() -> None:
        raise ConnectionError("cache unreachable")


if os.environ.get("APP_HANG_CHECK"):
    _hang = threading.Event()

    @lc.check(
        "hangs",
        critical=os.environ["APP_HANG_CHECK"] != "optional",
        timeout=float(os.environ.get("APP_HANG_TIMEOUT", "0.2")),
    )
    def _hangs() -> None:
        _hang.wait(3600)


if os.environ.get("APP_READY_MARKER"):
    _marker = os.environ["APP_READY_MARKER"]

    @lc.on_ready
    def _mark() -> None:
        with open(_marker, "a") as f:
            f.write(f"{os.getpid()}\n")


def _params(query: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(query).items()}


async def asgi(scope, receive, send):  # type: ignore[no-untyped-def]
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    params = _params(scope.get("query_string", b"").decode())
    path = scope["path"]
    if path == "/stream":
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/plain")],
            }
        )
        for i in range(int(params.get("n", "3"))):
            await asyncio.sleep(float(params.get("s", "0.2")))
            await send(
                {"type": "http.response.body", "body": f"chunk{i}\n".encode(), "more_body": True}
            )
        await send({"type": "http.response.body", "body": b""})
        return
    if path == "/slow":
        _mark_started()
        await asyncio.sleep(float(params.get("s", "1")))
    body = b"hello"
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"5")],
        }
    )
    await send({"type": "http.response.body", "body": body})


def wsgi(environ, start_response):  # type: ignore[no-untyped-def]
    params = _params(environ.get("QUERY_STRING", ""))
    path = environ["PATH_INFO"]
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])

        def chunks():  # type: ignore[no-untyped-def]
            for i in range(int(params.get("n", "3"))):
                time.sleep(float(params.get("s", "0.2")))
                yield f"chunk{i}\n".encode()

        return chunks()
    if path == "/slow":
        _mark_started()
        time.sleep(float(params.get("s", "1")))
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [b"hello"]
