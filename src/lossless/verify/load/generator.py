"""Open-loop HTTP/1.1 load: one :class:`~lossless.verify.model.Record` per request, no retries.

The generator fixes every request's intended send time in advance (``seq`` at ``start + seq /
rate``), so a slow or stalled server cannot slow the load down: a request whose connection is busy
gets another connection instead of waiting (the classic "coordinated omission" of closed-loop
tools such as ``hey`` or ``ab``; see Gil Tene, "How NOT to Measure Latency", and wrk2's README).

Connections model how real clients reach a Kubernetes Service:

- request ``seq`` belongs to client ``seq % view.clients`` (a node's kube-proxy, an ingress, a
  caller with a registry cache);
- each client keeps a keep-alive pool; every connection is pinned to the endpoint the client's
  view returned when it was opened (``view.pick(client)``, at connect time), exactly as an
  established conntrack entry stays on its backend after the endpoint left the Service;
- the pool is LIFO (the most recently used idle connection first, as Go's ``http.Transport`` and
  urllib3 do), grows when every pooled connection is busy and only shrinks when a connection is
  closed by the server, errors, answers ``Connection: close``, or is evicted at ``max_conns``;
- with a view whose ``per_endpoint_pools`` is true (``--traffic registry``: callers that
  balance per request, like gRPC subchannels), the client picks the endpoint *first* for every
  request and reuses an idle connection to that endpoint only: once its view drops an endpoint,
  that endpoint's pooled connections are no longer used;
- a share ``new_conn_ratio`` of the requests (chosen by a generator seeded with ``seed``) is sent
  on a fresh one-shot connection with ``Connection: close`` (new callers, clients without pools).

Times (``intended``, ``sent``, ``first_byte``, ``end``) are run-relative seconds from ``clock``:
``sent`` is when the generator started the request (connect initiated, or the write on a pooled
connection) so a slow ``connect()`` is the service's latency, not schedule lag; ``end`` is when
the outcome was known (response complete, or the error observed); ``first_byte`` is ``None`` when
no response byte arrived. ``bytes`` counts response body bytes. ``conn_id`` numbers connections from
1 in opening order (0: no connection was opened).

Error classes (:class:`~lossless.verify.model.ErrorClass`):

- ``refused``: ``connect()`` failed with ECONNREFUSED (or another connect error such as
  EHOSTUNREACH: the endpoint could not be reached at all);
- ``connect_timeout``: ``connect()`` did not complete within ``connect_timeout``;
- ``reset``: the connection was reset or closed before any response byte (including a pooled
  connection the server closed just as the request was written);
- ``truncated``: some response bytes arrived but not a complete response (body shorter than
  ``Content-Length``, unfinished chunked body, reset mid-response, or a malformed response);
- ``502``/``503``/``504``/``5xx``: the status line said so (takes precedence over truncation);
- ``timeout``: no complete response within ``timeout`` seconds of ``sent``; the connection is
  aborted (checked by one sweeper every ``min(50 ms, timeout / 4)``, not one timer a request);
- ``no_endpoint``: the client's view had no endpoint when a connection was needed;
- ``fd_exhausted`` (artefact): EMFILE, ENFILE or EADDRNOTAVAIL in the generator itself;
- ``schedule_lag`` (artefact): the request was *otherwise successful* but was sent more than
  ``lag_budget`` after its intended time. A late request that failed keeps its service error class
  (a failure is never hidden behind an artefact); its lateness stays visible as
  ``Record.lag`` (``sent - intended``), which the analysis reports for every failure.

Garbage collection: while the load runs, automatic collection is off and the sweeper collects
the young generations every 10 ms (:func:`young_collections_only`): a full collection walks every
record kept so far and would stall the schedule for tens of milliseconds.

Concurrency: everything runs inside one :class:`asyncio.TaskGroup` owned by :func:`run_load`
(scheduler, timeout sweeper, one task per connection attempt); pooled requests need no task at all
(the protocol's callbacks complete them). The parser is ``httptools`` (llhttp, C) driven from an
:class:`asyncio.Protocol`; on uvloop (use :func:`run`) this is several times faster than
``asyncio`` streams. See docs/verify-load.md.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import functools
import gc
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar, cast

import httptools

from lossless.verify.load.mix import RequestKind, RequestMix
from lossless.verify.load.schedule import OpenLoop
from lossless.verify.model import Clock, Endpoint, EndpointView, ErrorClass, Record

__all__ = ["run", "run_load"]

T = TypeVar("T")

# errno values that mean the generator itself ran out of descriptors or local ports.
_FD_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.EADDRNOTAVAIL})

_STATUS_CLASSES = {502: ErrorClass.HTTP_502, 503: ErrorClass.HTTP_503, 504: ErrorClass.HTTP_504}

_OK = ErrorClass.NONE

_REPLICA_HEADER = b"x-lossless-replica"


@contextlib.contextmanager
def young_collections_only() -> Iterator[None]:
    """Keep the garbage collector from stalling the schedule while the load runs.

    CPython's automatic collections are triggered by allocations; now and then one is a full
    (generation 2) collection, which walks every tracked object: every record kept so far, every
    connection and parser. With tens of thousands of records that is tens of milliseconds during
    which no request is sent (the stall measured by bench/bench_load.py, issue 13). Inside this
    context automatic collection is off and the caller runs :func:`collect_young` on a short
    period instead: generations 0 and 1 only (the objects of the last period, a fraction of a
    millisecond), so young cycles are still freed; objects that survive go to generation 2, which
    is not collected until the context exits and automatic collection resumes (cyclic garbage
    that reached generation 2 is freed then). Restores the previous state, also on error.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def collect_young() -> None:
    """Collect generations 0 and 1 when generation 0 has reached its threshold."""
    if gc.get_count()[0] >= gc.get_threshold()[0]:
        gc.collect(1)


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on uvloop when it is installed, else on the default asyncio loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is part of the verify extra
        return asyncio.run(main)
    result: T = uvloop.run(main)
    return result


def _classify_os_error(exc: OSError) -> ErrorClass:
    """The class of a failed connect()."""
    if isinstance(exc, TimeoutError):
        return ErrorClass.CONNECT_TIMEOUT
    if exc.errno in _FD_ERRNOS:
        return ErrorClass.FD_EXHAUSTED
    if isinstance(exc, ConnectionResetError | ConnectionAbortedError):
        return ErrorClass.RESET
    return ErrorClass.REFUSED


class _Conn(asyncio.Protocol):
    """One client connection, pinned to ``endpoint``; serves one request at a time.

    Lifecycle: created before ``connect()``; ``send`` writes a request; the parser callbacks or
    ``connection_lost`` complete it through ``_Generator.finish``; ``dead`` once it must not be
    used again (it then no longer counts against ``max_conns``).
    """

    def __init__(
        self, gen: _Generator, endpoint: Endpoint, client: int, conn_id: int, pooled: bool
    ) -> None:
        self.gen = gen
        self.endpoint = endpoint
        self.client = client
        self.conn_id = conn_id
        self.pooled = pooled
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.rec: Record | None = None
        self.served = 0
        self.dead = False
        self.idle = False
        self._reset_response()

    def _reset_response(self) -> None:
        self.got_bytes = False
        self.headers_done = False
        self.delimited = False  # Content-Length or chunked: EOF before the end is truncation
        self.keep_alive = False
        self.status = 0
        self.body = 0

    # -- driving --------------------------------------------------------------------------
    def send(self, rec: Record, request: bytes) -> None:
        self.rec = rec
        self.idle = False
        rec.conn_id = self.conn_id
        rec.reused = self.served > 0
        rec.replica = self.endpoint.name
        self._reset_response()
        transport = self.transport
        assert transport is not None
        transport.write(request)

    def abort(self) -> None:
        """Stop using the connection at once (RST); idempotent."""
        self.gen.drop(self)
        if self.transport is not None:
            self.transport.abort()

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        rec = self.rec
        if rec is None:  # bytes on an idle connection: the framing is lost, never reuse it
            self.abort()
            return
        if not self.got_bytes:
            self.got_bytes = True
            rec.first_byte = self.gen.now()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.gen.finish(rec, ErrorClass.TRUNCATED, self)

    def eof_received(self) -> bool:
        return False  # close our side too; connection_lost completes any pending request

    def connection_lost(self, exc: Exception | None) -> None:
        rec = self.rec
        if rec is not None and rec.end is None:
            if not self.got_bytes:
                error = ErrorClass.RESET
            elif self.headers_done and not self.delimited and exc is None:
                error = ErrorClass.NONE  # body delimited by the connection's end: complete
            else:
                error = ErrorClass.TRUNCATED
            self.gen.finish(rec, error, self, complete=error is _OK)
        self.gen.drop(self)

    # -- httptools callbacks -----------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        n = len(name)
        if n == 14 or n == 17:  # content-length / transfer-encoding
            lowered = name.lower()
            if lowered == b"content-length" or lowered == b"transfer-encoding":
                self.delimited = True
        elif n == 18 and name.lower() == _REPLICA_HEADER and self.rec is not None:
            self.rec.replica = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.headers_done = True
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self.body += len(body)

    def on_message_complete(self) -> None:
        rec = self.rec
        if rec is None or self.status < 200:  # an informational (1xx) response: keep reading
            if rec is not None:
                self._reset_response()
                self.got_bytes = True
            return
        self.gen.finish(rec, _OK, self, complete=True)


class _Generator:
    """The state of one :func:`run_load` call."""

    def __init__(
        self,
        view: EndpointView,
        clock: Clock,
        *,
        mix: RequestMix,
        timeout: float,
        connect_timeout: float,
        plan: OpenLoop,
        max_conns: int,
        on_record: Callable[[Record], None] | None,
    ) -> None:
        self.view = view
        self.plan = plan
        self.clock = clock
        self.now = clock.now
        self.kinds = mix.kinds
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.late = plan.late
        self.max_conns = max_conns
        self.on_record = on_record
        self.records: list[Record] = []
        self.keep_records = True  # run_load(keep_records=False): records only go to on_record
        self.pools: list[list[_Conn]] = [[] for _ in range(max(1, view.clients))]
        self.per_endpoint = bool(getattr(view, "per_endpoint_pools", False))
        self.open_conns = 0
        self.next_conn_id = 1
        self.inflight: collections.deque[tuple[Record, _Conn]] = collections.deque()
        self.pending = 0  # requests issued and not finished
        self.callback_error: BaseException | None = None
        self._prefixes: dict[tuple[Endpoint, bool, int], bytes] = {}
        self._wake: asyncio.Future[None] | None = None
        self._waiting_release = False
        self._tg: asyncio.TaskGroup | None = None

    # -- requests ------------------------------------------------------------------------------
    def request_bytes(self, endpoint: Endpoint, seq: int, close: bool, kind: int = 0) -> bytes:
        key = (endpoint, close, kind)
        prefix = self._prefixes.get(key)
        if prefix is None:
            prefix = self.kinds[kind].head(endpoint.host, endpoint.port, close)
            self._prefixes[key] = prefix
        body = self.kinds[kind].body
        return prefix + b"%d\r\n\r\n" % seq + body if body else prefix + b"%d\r\n\r\n" % seq

    def issue(self, seq: int, intended: float, client: int, fresh: bool, kind: int = 0) -> bool:
        """Start request ``seq``; False (nothing done) when ``max_conns`` connections are busy."""
        pool = self.pools[client]
        balanced = self.per_endpoint and not fresh
        picked = self.view.pick(client) if balanced else None
        conn_index = -1 if pool else None
        if balanced:  # the newest idle connection to the picked endpoint, if any
            conn_index = None
            if picked is not None:
                for i in range(len(pool) - 1, -1, -1):
                    if pool[i].endpoint.name == picked.name:
                        conn_index = i
                        break
        if not fresh and conn_index is not None:
            conn = pool.pop(conn_index)
            rec = Record(
                seq, intended, self.now(), None, None, 0, 0, _OK, "", 0, False, client, kind
            )
            self._track(rec, conn)
            conn.send(rec, self.request_bytes(conn.endpoint, seq, False, kind))
            return True
        if self.open_conns >= self.max_conns and not self._evict_idle():
            return False
        rec = Record(seq, intended, self.now(), None, None, 0, 0, _OK, "", 0, False, client, kind)
        endpoint = picked if balanced else self.view.pick(client)
        if endpoint is None:
            self.pending += 1
            self.finish(rec, ErrorClass.NO_ENDPOINT, None)
            return True
        conn = _Conn(self, endpoint, client, self.next_conn_id, pooled=not fresh)
        self.next_conn_id += 1
        self.open_conns += 1
        rec.conn_id = conn.conn_id
        rec.replica = endpoint.name
        self._track(rec, conn)
        assert self._tg is not None
        self._tg.create_task(self._connect(conn, rec, fresh))
        return True

    def _track(self, rec: Record, conn: _Conn) -> None:
        self.pending += 1
        self.inflight.append((rec, conn))

    def _evict_idle(self) -> bool:
        """Close one idle pooled connection (of any client) to make room; False if none."""
        for pool in self.pools:
            if pool:
                conn = pool.pop(0)  # the least recently used
                conn.abort()
                return True
        return False

    async def _connect(self, conn: _Conn, rec: Record, fresh: bool) -> None:
        loop = asyncio.get_running_loop()
        endpoint = conn.endpoint
        error = ErrorClass.NONE
        try:
            async with asyncio.timeout(self.connect_timeout):
                await loop.create_connection(lambda: conn, endpoint.host, endpoint.port)
        except TimeoutError:
            error = ErrorClass.CONNECT_TIMEOUT
        except OSError as exc:
            error = _classify_os_error(exc)
        if error is not ErrorClass.NONE:
            self.finish(rec, error, conn)
            self.drop(conn)
            return
        if rec.end is not None or conn.dead:  # timed out meanwhile, or the run is closing
            conn.abort()
            return
        conn.send(rec, self.request_bytes(endpoint, rec.seq, fresh, rec.kind))

    # -- completion ----------------------------------------------------------------------------
    def finish(
        self, rec: Record, error: ErrorClass, conn: _Conn | None, *, complete: bool = False
    ) -> None:
        """Complete ``rec`` exactly once, then release ``conn`` to its pool (after a complete
        keep-alive response, whatever its status) or close it."""
        if rec.end is not None:
            return
        rec.end = self.now()
        if conn is not None and conn.headers_done and conn.rec is rec:
            rec.status = conn.status
            rec.bytes = conn.body
        if (error is _OK or error is ErrorClass.TRUNCATED) and rec.status >= 500:
            error = _STATUS_CLASSES.get(rec.status, ErrorClass.HTTP_5XX)
        if error is ErrorClass.NONE and self.late(rec):
            error = ErrorClass.SCHEDULE_LAG
        rec.error = error
        self.pending -= 1
        if self.keep_records:
            self.records.append(rec)
        if self.on_record is not None:
            try:
                self.on_record(rec)
            except Exception as exc:  # surfaced by run_load once the run is wound down
                if self.callback_error is None:
                    self.callback_error = exc
                self.wake()
        if conn is not None:
            conn.rec = None
            if complete and conn.pooled and conn.keep_alive and not conn.dead:
                conn.served += 1
                conn.idle = True
                self.pools[conn.client].append(conn)
                self.released()
            elif conn.dead:
                pass
            elif complete:
                self._close(conn)  # one-shot, or the server asked for Connection: close
            else:
                conn.abort()
        if self.pending == 0:
            self.released()

    def _close(self, conn: _Conn) -> None:
        self.drop(conn)
        if conn.transport is not None:
            conn.transport.close()

    def drop(self, conn: _Conn) -> None:
        """Forget ``conn``: out of its pool and of the ``max_conns`` count; idempotent."""
        if conn.dead:
            return
        conn.dead = True
        self.open_conns -= 1
        if conn.idle:
            conn.idle = False
            pool = self.pools[conn.client]
            if conn in pool:
                pool.remove(conn)
        self.released()

    def sweep(self) -> None:
        """Fail the requests older than ``timeout`` (oldest first)."""
        inflight = self.inflight
        deadline = self.now() - self.timeout
        while inflight:
            rec, conn = inflight[0]
            if rec.end is not None:
                inflight.popleft()
            elif rec.sent <= deadline:
                inflight.popleft()
                self.finish(rec, ErrorClass.TIMEOUT, conn)
            else:
                break

    # -- scheduling ----------------------------------------------------------------------------
    def released(self) -> None:
        """A connection was released or a request completed: wake a wait for that only."""
        if self._waiting_release:
            self.wake()

    def wake(self) -> None:
        fut = self._wake
        if fut is not None and not fut.done():
            fut.set_result(None)

    async def sleep(self, delay: float | None) -> None:
        """Sleep ``delay`` seconds, or (``None``) until a connection is released or a request
        completes; ``wake()`` (a stop, a callback error) ends either early."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._wake = fut
        self._waiting_release = delay is None
        handle = None if delay is None else loop.call_later(delay, self.wake)
        try:
            await fut
        finally:
            self._wake = None
            self._waiting_release = False
            if handle is not None:
                handle.cancel()

    async def schedule(self, stop: asyncio.Event) -> None:
        """Issue the run's requests on ``self.plan`` (:meth:`OpenLoop.run`) until done,
        ``stop`` or an ``on_record`` error; at ``max_conns`` wait for a connection release."""
        await self.plan.run(
            self.now,
            self.issue,
            clients=self.view.clients,
            stopped=lambda: stop.is_set() or self.callback_error is not None,
            wait_due=self.sleep,
            wait_room=functools.partial(self.sleep, None),  # at max_conns: until a release
            choose=RequestMix(self.kinds).chooser(self.plan.seed),
        )

    async def sweeper(self, done: asyncio.Event) -> None:
        tick = min(0.05, self.timeout / 4)
        young = min(tick, 0.01)  # young collections at least every 10 ms (see run_load)
        elapsed = 0.0
        while not done.is_set():
            if elapsed >= tick:
                self.sweep()
                elapsed = 0.0
            collect_young()
            await asyncio.sleep(young)
            elapsed += young

    def close_all(self) -> None:
        for pool in self.pools:
            for conn in list(pool):
                self._close(conn)
        for _rec, conn in self.inflight:
            if not conn.dead:
                conn.abort()


async def run_load(
    view: EndpointView,
    clock: Clock,
    *,
    rate: float,
    duration: float,
    path: str = "/",
    mix: RequestMix | None = None,
    new_conn_ratio: float = 0.1,
    timeout: float = 5.0,
    connect_timeout: float = 1.0,
    lag_budget: float = 0.1,
    max_conns: int = 2000,
    on_record: Callable[[Record], None] | None = None,
    stop: asyncio.Event | None = None,
    seed: int = 0,
    keep_records: bool = True,
) -> list[Record]:
    """Send ``round(rate * duration)`` requests, open loop; return their records.

    The requests are GET ``path``, or with ``mix`` each request's kind is drawn from it (seeded
    with ``seed``; ``Record.kind`` is the kind's index in ``mix.kinds``).

    Request ``seq`` is due at ``start + seq / rate`` (``start`` is ``clock.now()`` at the call)
    and carries the header ``x-lossless-seq: <seq>``. Each request yields exactly one
    :class:`Record`, passed to ``on_record`` as soon as it is complete (in completion order) and
    returned at the end sorted by ``seq``; no request is ever retried.

    The generator never waits for a response before sending the next request: when every pooled
    connection of the client is busy it opens another one, up to ``max_conns`` open connections;
    only then does the schedule wait (for a connection to be released), which shows as lag. A
    request sent more than ``lag_budget`` after its intended time is still sent; if it succeeds
    its error is ``schedule_lag`` (an artefact, see the module docstring).

    Stopping: when ``stop`` is set no further request is started; the requests in flight complete
    (each bounded by ``timeout``), then the function returns. Cancelling the call aborts every
    connection. An exception raised by ``on_record`` ends the run the same way and is then
    re-raised. Keep-alive and fresh connections are all closed before returning.

    ``keep_records=False`` keeps none in memory (the result is then empty): a caller that
    streams them through ``on_record`` runs in memory that does not grow with the requests.
    """
    plan = OpenLoop(rate, duration, new_conn_ratio, lag_budget, seed)
    if not (timeout > 0 and connect_timeout > 0 and max_conns >= 1):
        raise ValueError("timeout and connect_timeout must be > 0, max_conns >= 1")
    gen = _Generator(
        view,
        clock,
        mix=mix if mix is not None else RequestMix((RequestKind(path=path),)),
        timeout=timeout,
        connect_timeout=connect_timeout,
        plan=plan,
        max_conns=max_conns,
        on_record=on_record,
    )
    gen.keep_records = keep_records
    stop_event = stop if stop is not None else asyncio.Event()
    done = asyncio.Event()
    try:
        with young_collections_only():
            await _drive(gen, stop_event, done)
    finally:
        gen.close_all()
    if gen.callback_error is not None:
        raise gen.callback_error
    gen.records.sort(key=lambda r: r.seq)
    return gen.records


async def _drive(gen: _Generator, stop_event: asyncio.Event, done: asyncio.Event) -> None:
    """The scheduler, the sweeper and the stop watcher of one :func:`run_load` call."""

    async def watch_stop() -> None:
        await stop_event.wait()
        gen.wake()

    async with asyncio.TaskGroup() as tg:
        gen._tg = tg
        sweeper = tg.create_task(gen.sweeper(done))
        watcher = tg.create_task(watch_stop())
        await gen.schedule(stop_event)
        while gen.pending > 0:  # each is bounded by the sweeper's timeout
            await gen.sleep(None)
        done.set()
        watcher.cancel()
        sweeper.cancel()
