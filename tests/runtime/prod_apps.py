"""Apps for the production-shape tests (streams, workers, drain hooks, backlog, options), served
by ``lossless serve`` as ``prod_apps:asgi`` / ``prod_apps:wsgi``; other paths go to apps.py.

- ``/sse``: a Starlette ``StreamingResponse`` (text/event-stream) yielding an event every 100 ms
  forever; with ``?bye=1`` it sends a last ``event: bye`` on its own once the drain starts.
- ``/chunked``: a raw ASGI (or WSGI generator) chunked body, a chunk every 100 ms forever.
- ``/stuck``: a raw ASGI chunked body that sends one chunk, then waits forever on an event
  (neither sends nor receives again).
- ``/pid``: the serving process id.
- WebSocket ``/ws``: echoes text messages.
- ``/block?s=SECONDS`` (ASGI): blocks the event loop (``time.sleep``), so nothing is accepted
  meanwhile and new connections wait in the kernel's accept queue; ``/block?until=PATH``: the
  same until the test creates PATH (it first appends ``block`` to ``APP_STARTED_FILE``).

``APP_STARTED_FILE``: every ``/slow`` request appends a line when it reaches the app
(:func:`wait_started`). Each stream's ``finally`` appends its name to ``APP_FINALLY_FILE``. ``APP_DRAIN_HOOK_FILE``:
an ``on_drain`` hook that sleeps ``APP_DRAIN_HOOK_SECONDS`` then writes that file;
``APP_DRAIN_HOOK_HANG``: a second hook that hangs, with that timeout.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time

from starlette.responses import StreamingResponse

from lossless.lifecycle import get_lifecycle
from tests.runtime import apps

lc = get_lifecycle()


def _started(path: str) -> None:
    """``/slow`` requests append a line to ``APP_STARTED_FILE`` when they reach the app, so a
    test can wait for them instead of sleeping."""
    marker = os.environ.get("APP_STARTED_FILE")
    if marker and path == "/slow":
        with open(marker, "a") as f:
            f.write(f"{os.getpid()}\n")


def _block(query: str) -> None:
    """Block the event loop (``time.sleep``): ``s=SECONDS``, or ``until=PATH``: until that file
    exists (at most 60 s), after appending ``block`` to ``APP_STARTED_FILE``."""
    params = dict(part.partition("=")[::2] for part in query.split("&") if part)
    until = params.get("until")
    if until is None:
        time.sleep(float(params.get("s") or "0.5"))
        return
    marker = os.environ.get("APP_STARTED_FILE")
    if marker:
        with open(marker, "a") as f:
            f.write("block\n")
    end = time.monotonic() + 60
    while not os.path.exists(until) and time.monotonic() < end:
        time.sleep(0.005)


def wait_started(marker: str, count: int, timeout: float = 10.0) -> None:
    """Block until ``count`` ``/slow`` requests have reached the app (bounded polling)."""
    end = time.monotonic() + timeout
    while True:
        try:
            with open(marker) as f:
                if len(f.read().split()) >= count:
                    return
        except FileNotFoundError:
            pass
        if time.monotonic() > end:
            raise AssertionError(f"{count} /slow request(s) did not reach the app in {timeout} s")
        time.sleep(0.01)


def _finally(name: str) -> None:
    path = os.environ.get("APP_FINALLY_FILE")
    if path:
        with open(path, "a") as f:
            f.write(f"{name} {os.getpid()}\n")


if os.environ.get("APP_DRAIN_HOOK_FILE"):
    _hook_file = os.environ["APP_DRAIN_HOOK_FILE"]

    @lc.on_drain
    def flush_buffer() -> None:
        time.sleep(float(os.environ.get("APP_DRAIN_HOOK_SECONDS", "0.5")))
        with open(_hook_file, "w") as f:
            f.write("flushed\n")


if os.environ.get("APP_DRAIN_HOOK_HANG"):

    def _hangs() -> None:
        threading.Event().wait(3600)

    lc.on_drain(_hangs, name="hangs", timeout=float(os.environ["APP_DRAIN_HOOK_HANG"]))


async def _events(bye: bool):  # type: ignore[no-untyped-def]
    try:
        i = 0
        drain = asyncio.ensure_future(lc.wait_draining()) if bye else None
        while True:
            if drain is not None and drain.done():
                yield "event: bye\ndata: last\n\n"
                return
            yield f"data: {i}\n\n"
            i += 1
            await asyncio.sleep(0.1)
    finally:
        _finally("sse-bye" if bye else "sse")


async def asgi(scope, receive, send):  # type: ignore[no-untyped-def]
    path = scope.get("path")
    if scope["type"] == "websocket":  # /ws: accept, then echo until the connection closes
        await receive()
        await send({"type": "websocket.accept"})
        while (message := await receive())["type"] == "websocket.receive":
            await send({"type": "websocket.send", "text": message.get("text") or ""})
        return
    if scope["type"] == "http" and path == "/sse":
        bye = b"bye=1" in scope.get("query_string", b"")
        response = StreamingResponse(_events(bye), media_type="text/event-stream")
        await response(scope, receive, send)
        return
    if scope["type"] == "http" and path == "/chunked":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        try:
            i = 0
            while True:
                await send({"type": "http.response.body", "body": b"%d\n" % i, "more_body": True})
                i += 1
                await asyncio.sleep(0.1)
        finally:
            _finally("chunked")
    if scope["type"] == "http" and path == "/stuck":  # one chunk, then waits for nothing
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"first\n", "more_body": True})
        try:
            await asyncio.Event().wait()
        finally:
            _finally("stuck")
    if scope["type"] == "http" and path == "/block":
        _block(scope["query_string"].decode())
    if scope["type"] == "http" and path in ("/pid", "/block"):
        body = str(os.getpid()).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})
        return
    if scope["type"] == "http":
        _started(path)
    await apps.asgi(scope, receive, send)


def wsgi(environ, start_response):  # type: ignore[no-untyped-def]
    path = environ["PATH_INFO"]
    if path in ("/sse", "/chunked"):
        kind = "text/event-stream" if path == "/sse" else "text/plain"
        start_response("200 OK", [("Content-Type", kind)])

        def chunks():  # type: ignore[no-untyped-def]
            try:
                i = 0
                while True:
                    yield (f"data: {i}\n\n" if path == "/sse" else f"{i}\n").encode()
                    i += 1
                    time.sleep(0.1)
            finally:
                _finally(path[1:])

        return chunks()
    if path == "/pid":
        body = str(os.getpid()).encode()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]
    _started(path)
    return apps.wsgi(environ, start_response)
