"""Long-lived clients: ``--streams N`` SSE / chunked HTTP streams and ``--websockets N``
WebSocket connections, each kept open and reconnected whenever it ends.

:func:`run_long_lived` runs every stream as a task until ``stop`` is set, then closes the
sessions still open (outcome ``stopped``) and returns. Each stream loops: pick an endpoint from
its client's *current* view (as the HTTP load does for a new connection: ``view.pick(client)``,
stream ``i`` belongs to client ``i % view.clients``), connect, read until the session ends,
record exactly one :class:`~lossless.verify.stream_records.StreamSession`, reconnect. After a
clean end it reconnects at once (a client told "restart" reconnects); after a failure it waits
``retry_delay`` (0.1 s) first, so a refusing endpoint yields one failure per tenth of a second
per stream, not a busy loop.

What counts as a clean end is the protocol's own (and nothing else):

- **SSE / chunked**: the response's body is complete as framed by HTTP/1.1: the terminating
  zero-length chunk, or all ``Content-Length`` bytes. EOF or a reset before it is a ``cut``; so
  is the end of a body delimited only by the connection's close (it cannot tell a clean end from
  a crash). A response other than 2xx is ``http_error``.
- **WebSocket** (the ``websockets`` library): a close frame with code 1000, 1001 or 1012
  (:data:`~lossless.verify.stream_records.CLEAN_CLOSE_CODES`); another code is ``close_error``;
  a connection that ends without a close frame is a ``cut``. A handshake answered with another
  status than 101 is ``http_error``.

Connect failures are classed like the HTTP load's (``refused``, ``connect_timeout``, ``reset``
before a response head, ``no_endpoint``). ``timeout`` bounds the connect and the response head /
handshake, never the stream's life.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httptools

from lossless.verify.model import Clock, Endpoint, EndpointView
from lossless.verify.stream_records import (
    CLEAN_CLOSE_CODES,
    SessionWriter,
    StreamOutcome,
    StreamSession,
)

if TYPE_CHECKING:
    from lossless.verify.config import VerifyConfig

__all__ = ["RETRY_DELAY", "run_long_lived", "start_long_lived"]

RETRY_DELAY = 0.1  # seconds before reconnecting after a failed session
_REPLICA_HEADER = b"x-lossless-replica"
_REFUSED_ERRNOS = frozenset(
    {errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EADDRNOTAVAIL}
)


class _Session:
    """The mutable state of one session while it runs; ``freeze`` makes the record."""

    def __init__(self, protocol: str, stream: int, session: int, client: int, t: float) -> None:
        self.protocol, self.stream, self.session, self.client = protocol, stream, session, client
        self.replica = ""
        self.opened = t
        self.established: float | None = None
        self.status = 0
        self.close_code = 0
        self.messages = 0

    def freeze(self, end: float, outcome: StreamOutcome, detail: str = "") -> StreamSession:
        return StreamSession(
            protocol=self.protocol,
            stream=self.stream,
            session=self.session,
            client=self.client,
            replica=self.replica,
            opened=self.opened,
            established=self.established,
            end=end,
            outcome=outcome,
            status=self.status,
            close_code=self.close_code,
            messages=self.messages,
            detail=detail,
        )


def _connect_failure(exc: BaseException, s: _Session) -> tuple[StreamOutcome, str]:
    """The outcome of an exception raised before the session was established."""
    if isinstance(exc, TimeoutError):
        return StreamOutcome.CONNECT_TIMEOUT, "no connection or response head within the timeout"
    if isinstance(exc, OSError) and exc.errno in _REFUSED_ERRNOS:
        return StreamOutcome.REFUSED, str(exc)
    return StreamOutcome.RESET, f"{type(exc).__name__}: {exc}"


# -- SSE / chunked --------------------------------------------------------------------------------
class _SSEParser:
    """httptools callbacks: the status and the replica header, event count, completion."""

    def __init__(self, s: _Session, clock: Clock) -> None:
        self.s, self.clock = s, clock
        self.parser = httptools.HttpResponseParser(self)
        self.complete = False
        self.chunked_or_length = False
        self._tail = b""

    def on_header(self, name: bytes, value: bytes) -> None:
        lower = name.lower()
        if lower == _REPLICA_HEADER:
            self.s.replica = value.decode("latin-1")
        elif lower in (b"content-length", b"transfer-encoding"):
            self.chunked_or_length = True

    def on_headers_complete(self) -> None:
        self.s.status = self.parser.get_status_code()
        self.s.established = self.clock.now()

    def on_body(self, body: bytes) -> None:
        data = self._tail + body
        self.s.messages += data.count(b"\n\n")
        self._tail = data[-1:]

    def on_message_complete(self) -> None:
        self.complete = True


async def _sse_session(s: _Session, ep: Endpoint, path: str, timeout: float, clock: Clock) -> Any:
    # asyncio.timeout, not wait_for: Python 3.11's wait_for swallows a cancellation that comes
    # as the connect completes (a refused connect, every 0.1 s), and the stream never stops
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(ep.host, ep.port)
    try:
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {ep.host}:{ep.port}\r\nAccept: text/event-stream\r\n"
            f"Cache-Control: no-cache\r\nx-lossless-stream: {s.protocol}-{s.stream}/{s.session}"
            "\r\n\r\n".encode("latin-1")
        )
        p = _SSEParser(s, clock)
        while not p.complete:
            try:
                if s.established is None:
                    async with asyncio.timeout(timeout):
                        data = await reader.read(65536)
                else:
                    data = await reader.read(65536)
            except TimeoutError:
                return StreamOutcome.CONNECT_TIMEOUT, "no response head within the timeout"
            except OSError as exc:
                if s.established is None:
                    return _connect_failure(exc, s)
                return StreamOutcome.CUT, f"{type(exc).__name__} mid-stream: {exc}"
            if not data:
                if s.established is None:
                    return StreamOutcome.RESET, "closed before the response head"
                why = (
                    "closed without the terminating chunk"
                    if p.chunked_or_length
                    else "body delimited by the connection's close (no framed end)"
                )
                return StreamOutcome.CUT, why
            try:
                p.parser.feed_data(data)
            except httptools.HttpParserError as exc:
                return StreamOutcome.CUT, f"malformed response: {exc}"
        if not 200 <= s.status < 300:
            return StreamOutcome.HTTP_ERROR, f"HTTP {s.status}"
        return StreamOutcome.CLEAN, "terminating chunk"
    finally:
        writer.close()


# -- WebSocket ------------------------------------------------------------------------------------
async def _ws_session(s: _Session, ep: Endpoint, path: str, timeout: float, clock: Clock) -> Any:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

    try:
        ws = await connect(
            f"ws://{ep.host}:{ep.port}{path}",
            open_timeout=timeout,
            ping_interval=None,  # our own traffic only: no keepalive pings (no extra timeouts)
            proxy=None,  # straight to the endpoint, never through a proxy from the environment
            close_timeout=timeout,
            max_size=None,
            additional_headers={"x-lossless-stream": f"{s.protocol}-{s.stream}/{s.session}"},
        )
    except InvalidStatus as exc:
        s.status = exc.response.status_code
        header = exc.response.headers.get(_REPLICA_HEADER.decode())
        if header:
            s.replica = header
        return StreamOutcome.HTTP_ERROR, f"handshake answered HTTP {s.status}"
    except (InvalidHandshake, EOFError) as exc:
        return StreamOutcome.RESET, f"handshake failed: {exc}"
    s.established = clock.now()
    s.status = 101
    if ws.response is not None:
        header = ws.response.headers.get(_REPLICA_HEADER.decode())
        if header:
            s.replica = header
    try:
        async for _message in ws:
            s.messages += 1
    except ConnectionClosed:
        pass
    finally:
        with contextlib.suppress(Exception):
            await ws.close()
    received = ws.protocol.close_rcvd
    if received is None:
        return StreamOutcome.CUT, "ended without a close frame"
    s.close_code = int(received.code)
    if s.close_code in CLEAN_CLOSE_CODES:
        return StreamOutcome.CLEAN, f"close {s.close_code}"
    return StreamOutcome.CLOSE_ERROR, f"close {s.close_code} {received.reason}".strip()


# -- the streams ----------------------------------------------------------------------------------
_SESSIONS = {"sse": _sse_session, "websocket": _ws_session}


async def _stream(
    protocol: str,
    index: int,
    view: EndpointView,
    clock: Clock,
    *,
    path: str,
    timeout: float,
    on_session: Callable[[StreamSession], None],
    retry_delay: float,
) -> None:
    """One long-lived client: connect, record, reconnect, until cancelled. A cancelled open
    session is recorded as ``stopped`` before the cancellation propagates."""
    client = index % max(1, view.clients)
    run_session = _SESSIONS[protocol]
    number = 0
    while True:
        s = _Session(protocol, index, number, client, clock.now())
        number += 1
        ep = view.pick(client)
        if ep is None:
            on_session(s.freeze(clock.now(), StreamOutcome.NO_ENDPOINT, "no endpoint in view"))
            await asyncio.sleep(retry_delay)
            continue
        s.replica = ep.name
        try:
            outcome, detail = await run_session(s, ep, path, timeout, clock)
        except asyncio.CancelledError:
            on_session(s.freeze(clock.now(), StreamOutcome.STOPPED, "open when the run stopped"))
            raise
        except (OSError, TimeoutError) as exc:
            if s.established is None:
                outcome, detail = _connect_failure(exc, s)
            else:
                outcome, detail = StreamOutcome.CUT, f"{type(exc).__name__}: {exc}"
        on_session(s.freeze(clock.now(), outcome, detail))
        if outcome.is_failure:
            await asyncio.sleep(retry_delay)


async def run_long_lived(
    view: EndpointView,
    clock: Clock,
    *,
    streams: int,
    websockets: int,
    stream_path: str,
    websocket_path: str,
    timeout: float,
    on_session: Callable[[StreamSession], None],
    stop: asyncio.Event,
    retry_delay: float = RETRY_DELAY,
) -> None:
    """Keep ``streams`` SSE streams and ``websockets`` WebSocket connections open against
    ``view`` until ``stop`` is set (see the module docstring); every session is passed to
    ``on_session`` (an exception raised by it ends the run and is re-raised). Returns after
    every stream has recorded its last session."""
    async with asyncio.TaskGroup() as tg:
        tasks = [
            tg.create_task(
                _stream(
                    protocol,
                    i,
                    view,
                    clock,
                    path=path,
                    timeout=timeout,
                    on_session=on_session,
                    retry_delay=retry_delay,
                )
            )
            for protocol, count, path in (
                ("sse", streams, stream_path),
                ("websocket", websockets, websocket_path),
            )
            for i in range(count)
        ]
        await stop.wait()
        for task in tasks:
            task.cancel()


def start_long_lived(
    cfg: VerifyConfig,
    view: EndpointView,
    clock: Clock,
    tg: asyncio.TaskGroup,
    stop: asyncio.Event,
    *,
    on_session: Callable[[StreamSession], None] | None = None,
) -> asyncio.Task[None]:
    """Start ``cfg``'s long-lived clients in ``tg`` (the runner's task group), writing every
    session to ``streams.csv`` in the run directory (created here, so a failure to create it
    fails the run at once) and then passing it to ``on_session``; the task ends, with the file
    closed, after ``stop``."""
    writer = SessionWriter(cfg.out_dir)

    def record(s: StreamSession) -> None:
        writer.write(s)
        if on_session is not None:
            on_session(s)

    async def run() -> None:
        try:
            await run_long_lived(
                view,
                clock,
                streams=cfg.streams,
                websockets=cfg.websockets,
                stream_path=cfg.stream_path,
                websocket_path=cfg.websocket_path,
                timeout=cfg.timeout,
                on_session=record,
                stop=stop,
            )
        finally:
            writer.close()

    return tg.create_task(run())
