"""Streaming responses (SSE, chunked) end cleanly at t0 + D instead of being cut at the deadline.

A response is a *stream* when it has no ``Content-Length`` (so HTTP/1.1 sends it chunked) and its
body comes in several parts. Without help, a stream that never ends by itself (an SSE feed) holds
the process until the deadline, is cut there without its terminating chunk and counts as forced.
Here, each open stream gets an end time from t0 + D, spread at random over the stream close window
(``Settings.stream_window``: 10 % of D, at most 2 s, unless set) so that thousands of clients do
not reconnect in the same millisecond. At its end time:

* ASGI (:class:`AsgiResponse`, used by :class:`lossless.asgi.LosslessMiddleware`): the app's
  ``receive`` answers ``http.disconnect`` (Starlette's ``StreamingResponse`` then cancels its body
  iterator, whose ``finally`` runs), and a later ``send`` raises :class:`StreamEnded` (apps that do
  not listen for a disconnect stop at their next chunk). When the app returns, the middleware
  sends the terminating chunk itself; the request ends as served, not forced, and nothing is
  logged as an error. An app that does neither within ``APP_GRACE`` (1 s: blocked on a queue)
  is cancelled, its ``finally`` runs, and the response still ends cleanly. The server
  integration starts the ends at t0 + D by calling
  :meth:`StreamRegistry.end_all` (``lossless serve`` does; under ``lossless run`` the middleware
  itself does, at the supervisor's t0 + D; under other servers streams run on). It says so
  beforehand by setting :attr:`StreamRegistry.armed`: until then the middleware does not wrap
  responses at all, so a server that never ends streams pays nothing for them.
* WSGI (:func:`wsgi_chunks`, used by :class:`lossless.wsgi.LosslessWSGIMiddleware`): the
  iteration over the app's body stops at the first chunk boundary after the end time; the server
  then closes the iterable (a generator's ``finally`` runs) and writes the terminating chunk. A
  WSGI body that blocks between chunks ends at its next chunk.

Apps that want to send a last event learn that the drain started from ``Lifecycle.draining`` or
``await Lifecycle.wait_draining()`` (at t0) and have until their end time (t0 + D + their share of
the window) to finish on their own. Responses with a ``Content-Length`` are never ended early:
they would be truncated. A finite chunked body (a streamed export) ended at t0 + D looks
complete to its client: set ``stream_end`` to ``sse`` (``--stream-end sse``) when such
responses must run to their end (bounded by the deadline).
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
import traceback
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any

from lossless import events
from lossless._asgi_types import Message, Receive, Send

__all__ = ["AsgiResponse", "StreamEnded", "StreamRegistry", "endable", "wsgi_chunks"]

_DISCONNECT: Message = {"type": "http.disconnect"}

#: Event-loop iterations given to the finaliser of an ended app's body iterator (see finish).
_FINALISE_TURNS = 3

#: Seconds an app gets after its stream's end time to return (after ``receive`` answered
#: ``http.disconnect``, or ``send`` raised) before it is cancelled.
APP_GRACE = 1.0


class StreamEnded(OSError):
    """Raised by ``send`` of a stream that the drain has ended (an ``OSError``, like a client
    disconnect, so frameworks treat it as one)."""


class StreamRegistry:
    """The open ASGI streams of one process, and when they end. Thread-safe for registration;
    :meth:`end_all` runs on the event loop that serves the streams."""

    def __init__(self, mode: str = "all") -> None:
        #: ``all``, ``sse`` or ``none``: which streams are ended (``Settings.stream_end``).
        self.mode = mode
        #: Set (before serving) by a server integration that calls :meth:`end_all` at t0 + D
        #: (``lossless serve``'s uvicorn server). While False the middleware does not track
        #: responses: nothing would ever end them, and tracking costs every request.
        self.armed = False
        self._open: set[AsgiResponse] = set()
        self._lock = threading.Lock()
        #: Set by :meth:`end_all`: streams opened later end within what is left of the window.
        self._ending_until: float | None = None
        self.ended = 0

    def __len__(self) -> int:
        return len(self._open)

    def add(self, stream: AsgiResponse) -> None:
        with self._lock:
            self._open.add(stream)
            until = self._ending_until
        if until is not None:
            self._schedule(stream, max(0.0, until - time.monotonic()))

    def discard(self, stream: AsgiResponse) -> None:
        with self._lock:
            self._open.discard(stream)

    def end_all(self, window: float) -> int:
        """Give every open stream (and every stream opened from now on) an end at a random moment
        within ``window`` seconds from now; return how many were open. Call it from the serving
        event loop at t0 + D."""
        with self._lock:
            self._ending_until = time.monotonic() + window
            streams = list(self._open)
        for stream in streams:
            self._schedule(stream, window)
        if streams:
            events.emit("streams_ending", streams=len(streams), window=round(window, 6))
        return len(streams)

    def _schedule(self, stream: AsgiResponse, window: float) -> None:
        delay = random.uniform(0.0, window) if window > 0 else 0.0
        loop = stream.loop
        if loop is None or loop.is_closed():
            stream.end()
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            loop.call_later(delay, stream.end)
        else:
            loop.call_soon_threadsafe(loop.call_later, delay, stream.end)


def endable(mode: str, headers: Iterable[tuple[Any, Any]]) -> bool:
    """Whether a response with these headers (bytes or str pairs) may be ended at t0 + D under
    ``mode``: never with a Content-Length (it would be truncated); SSE unless ``none``; other
    chunked bodies only under ``all``."""
    if mode == "none":
        return False
    sse = False
    for key, value in headers:
        name = key.lower() if isinstance(key, str) else key.decode("latin-1").lower()
        if name == "content-length":
            return False
        if name == "content-type":
            text = value if isinstance(value, str) else value.decode("latin-1")
            sse = text.lower().startswith("text/event-stream")
    return mode == "all" or sse


class AsgiResponse:
    """One HTTP request's ``receive``/``send`` pair as the app sees it: tracks whether the
    response is a stream, and ends it when the registry says so. Create one per request; pass
    :meth:`receive` and :meth:`send` to the app; call :meth:`finish` after it returned or raised."""

    __slots__ = (
        "_receive",
        "_registry",
        "_send",
        "_task",
        "_wake",
        "cancelled",
        "complete",
        "ended",
        "headers",
        "loop",
        "started",
        "streaming",
    )

    def __init__(self, registry: StreamRegistry, receive: Receive, send: Send) -> None:
        self._receive = receive
        self._send = send
        self._registry = registry
        self._wake: asyncio.Event | None = None
        self.started = False
        self.headers: Iterable[tuple[bytes, bytes]] = ()
        self.streaming = False
        self.complete = False
        self.ended = False
        self.loop: asyncio.AbstractEventLoop | None = None

    def send(self, message: Message) -> Awaitable[None]:
        # On every response's path, so a plain function returning the server's own awaitable
        # (no coroutine of ours per message): one dict lookup for a part that is not a stream.
        if message.get("more_body"):
            if self.ended:
                raise StreamEnded("lossless: the drain ended this stream")
            if not self.streaming:
                self._begin_stream()
        elif self.ended:
            raise StreamEnded("lossless: the drain ended this stream")
        elif message["type"] == "http.response.start":
            self.started = True
            self.headers = message.get("headers", ())
        elif self.streaming:
            self.complete = True
            self._registry.discard(self)
        return self._send(message)

    def _begin_stream(self) -> None:
        """The first body part with more to come: register the stream if it may be ended."""
        self.streaming = True
        if endable(self._registry.mode, self.headers):
            self.loop = asyncio.get_running_loop()
            self._task = asyncio.current_task()
            self.cancelled = False
            self._registry.add(self)

    async def receive(self) -> Message:
        if not self.started:
            return await self._receive()  # reading the request: nothing to end yet
        if self.ended:
            return _DISCONNECT
        if self._wake is None:
            self._wake = asyncio.Event()
        received = asyncio.ensure_future(self._receive())
        woken = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait((received, woken), return_when=asyncio.FIRST_COMPLETED)
        finally:
            woken.cancel()
        if received.done():
            return received.result()
        received.cancel()
        return _DISCONNECT

    def end(self) -> None:
        """End the stream now (on its event loop): see the module docstring."""
        if self.complete or self.ended:
            return
        self.ended = True
        if self._wake is not None:
            self._wake.set()
        if self.loop is not None:
            self.loop.call_later(APP_GRACE, self._cancel_app)

    def _cancel_app(self) -> None:
        """The app neither returned nor touched ``send``/``receive`` within :data:`APP_GRACE` of
        its end (blocked on something else): cancel it (its ``finally`` runs); the middleware
        then ends the response cleanly (see :meth:`was_cancelled`)."""
        if self.complete or self._task is None or self._task.done():
            return
        self.cancelled = True
        self._task.cancel(msg="lossless: stream ended by the drain")

    def was_cancelled(self) -> bool:
        """True when :meth:`_cancel_app` cancelled the app: the middleware absorbs that
        cancellation (``Task.uncancel``) and finishes the response instead of propagating it."""
        if not (self.ended and self.streaming and self.cancelled):
            return False
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        return True

    async def finish(self, error: BaseException | None) -> bool:
        """After the app returned (``error`` None) or raised ``error``: when the drain ended this
        stream, send the terminating chunk and return ``True`` (the error, a consequence of the
        end, is not the app's fault); otherwise return ``False`` (re-raise ``error``)."""
        if self.streaming and not self.complete:
            self._registry.discard(self)
        if not self.ended:
            return False
        if not self.complete:
            self.complete = True  # also: no cancellation of the app from now on
            try:
                await self._send({"type": "http.response.body", "body": b"", "more_body": False})
            except OSError:
                pass  # the client left meanwhile
        # Let the loop finalise the app's body iterator (its ``finally``) now, not at exit (a
        # server that stops right after, such as uvicorn raising its stop signal again, would
        # never run it). The error's frames hold the app's response and so the suspended
        # iterator: clear them (the error is swallowed here); the loop's finaliser hook then
        # schedules the iterator's aclose(), whose first step runs two iterations later.
        if error is not None:
            _clear_frames(error)
        for _ in range(_FINALISE_TURNS):
            await asyncio.sleep(0)
        self._registry.ended += 1
        events.emit("stream_ended", error=None if error is None else type(error).__name__)
        return True


def _clear_frames(error: BaseException) -> None:
    """Clear the locals of every finished frame in ``error``'s tracebacks, its causes and
    contexts (and an exception group's members): they hold the app's response objects."""
    seen: set[int] = set()
    todo = [error]
    while todo:
        exc = todo.pop()
        if id(exc) in seen:
            continue
        seen.add(id(exc))
        traceback.clear_frames(exc.__traceback__)
        todo += [e for e in (exc.__cause__, exc.__context__) if e is not None]
        if isinstance(exc, BaseExceptionGroup):
            todo += list(exc.exceptions)


def wsgi_chunks(body: Iterable[bytes], end_at: Callable[[], float | None]) -> Iterator[bytes]:
    """Iterate ``body`` until ``end_at()`` (a time, or ``None`` while not draining) has passed,
    checked before asking ``body`` for each next chunk; then stop without advancing ``body`` (the
    server closes it, which runs a generator's ``finally``, and ends the response)."""
    it = iter(body)
    while True:
        end = end_at()
        if end is not None and time.monotonic() >= end:
            events.emit("stream_ended", server="wsgi")
            return
        try:
            chunk = next(it)
        except StopIteration:
            return
        yield chunk
