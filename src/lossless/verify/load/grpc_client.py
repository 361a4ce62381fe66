"""Open-loop gRPC load (``lossless verify --grpc``): one :class:`~lossless.verify.model.Record`
per unary call, no retries by the generator.

Calls are made with grpcio's asyncio API on raw bytes (no generated stubs: the multicallable has
no serializer, so :attr:`GrpcTarget.request` is the serialized request message, empty by
default, and the response's size is recorded). The schedule is the HTTP generator's: call
``seq`` is due at ``start + seq / rate`` and belongs to client ``seq % view.clients``.

Channels model how gRPC clients reach a Kubernetes Service (as the HTTP keep-alive pools do):

- each client has one channel (one HTTP/2 connection, ``grpc.use_local_subchannel_pool`` so
  channels share no connection or reconnect backoff), pinned to the endpoint the client's view
  returned when it was opened (``view.pick(client)``); every call of the client is multiplexed
  on it, whatever is in flight;
- before a call, a channel that has served calls and is no longer READY (a GOAWAY from a
  stopping server, or a lost connection, turns it IDLE or TRANSIENT_FAILURE) is retired: the
  call opens a new channel to an endpoint of the client's *current* view. A channel is also
  retired after a call on it failed at the transport (``refused``/``unavailable``/``cancelled``).
  A retired channel is closed once its last call has ended (closing a channel cancels its
  calls);
- a share ``new_conn_ratio`` of the calls (seeded) is sent on a fresh one-shot channel, closed
  after the call (new callers);
- **kube-proxy reconnection**: when a call on a channel that was connected fails at connect
  (grpc reconnected the pinned address after a GOAWAY that arrived between the READY check and
  the call, and the port was closed), the call has reached no server; behind a Service the
  reconnect would have gone to an endpoint of the current view, so the call is sent once more
  on a new channel picked from the view. It stays one record (``sent`` is the first attempt,
  ``conn_id``/``replica`` the channel that decided the outcome, ``reused`` false). A call that
  reached a server is never sent twice.

Outcome of a call (``Record.grpc`` holds the status code, ``status`` is 200, the HTTP status of
every gRPC response, when the server answered with a status, and 0 otherwise):

- ``OK`` and the application's own codes (``INVALID_ARGUMENT``, ``NOT_FOUND``,
  ``ALREADY_EXISTS``, ``PERMISSION_DENIED``, ``RESOURCE_EXHAUSTED``, ``FAILED_PRECONDITION``,
  ``ABORTED``, ``OUT_OF_RANGE``, ``UNAUTHENTICATED``): an answer, error ``""`` (as an HTTP 4xx);
- ``UNAVAILABLE`` whose details say the channel failed to connect: ``refused`` (status 0);
- ``UNAVAILABLE`` otherwise (connection lost, ``Cancelling all calls`` of a server stopping
  without grace): ``unavailable``;
- ``CANCELLED``: ``cancelled``; ``DEADLINE_EXCEEDED`` (the call's deadline is ``timeout``):
  ``deadline_exceeded``; ``UNKNOWN``, ``INTERNAL``, ``UNIMPLEMENTED``, ``DATA_LOSS``:
  ``grpc_error``;
- ``no_endpoint``: the client's view was empty; ``schedule_lag`` (artefact): a successful call
  sent more than ``lag_budget`` late, as for HTTP.

Concurrency: one :class:`asyncio.TaskGroup` owned by :func:`run_grpc_load` (scheduler, channel
closers; each call is grpc's own invocation task, whose done callback records it); automatic garbage collection is replaced by young collections every
10 ms as in the HTTP generator.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import os
from collections.abc import Callable
from typing import Any

from lossless.errors import LosslessError
from lossless.verify.load.generator import collect_young, young_collections_only
from lossless.verify.load.schedule import OpenLoop
from lossless.verify.model import Clock, Endpoint, EndpointView, ErrorClass, Record

# Two grpc settings of this process, read when grpc is imported and removed from the
# environment again after, so the replicas inherit the user's environment unchanged:
# - GRPC_ENABLE_FORK_SUPPORT=0: the lab forks (preexec_fn) to start every replica; grpc's fork
#   handlers then run in the child while the load's threads are inside grpc, and the child died
#   of SIGSEGV before exec (6 of 150 spawns, measured); without them the child only execs;
# - GRPC_VERBOSITY=ERROR: grpc core logs INFO lines on stderr (every GOAWAY received) that would
#   garble the CLI's output; kept when the user set it.
_IMPORT_ENV = {"GRPC_ENABLE_FORK_SUPPORT": "0", "GRPC_VERBOSITY": "ERROR"}
_set = [name for name in _IMPORT_ENV if name not in os.environ]
os.environ.update((name, _IMPORT_ENV[name]) for name in _set)
try:
    import grpc  # type: ignore[import-untyped,import-not-found,unused-ignore]
    import grpc.aio  # type: ignore[import-untyped,import-not-found,unused-ignore]
except ImportError as exc:  # pragma: no cover - depends on the extras installed
    raise LosslessError(
        f"--grpc needs grpcio ({exc.name} is missing): pip install 'lossless[grpc]'"
    ) from exc
finally:
    for _name in _set:
        os.environ.pop(_name, None)

__all__ = ["GrpcTarget", "classify", "run_grpc_load"]

_OK = ErrorClass.NONE
_CLOSE_TIMEOUT = 2.0
#: Channel options: a channel's own subchannel (connection), never shared with another channel.
CHANNEL_OPTIONS = (("grpc.use_local_subchannel_pool", 1),)

_S = grpc.StatusCode
_APPLICATION = frozenset(
    {
        _S.OK,
        _S.INVALID_ARGUMENT,
        _S.NOT_FOUND,
        _S.ALREADY_EXISTS,
        _S.PERMISSION_DENIED,
        _S.RESOURCE_EXHAUSTED,
        _S.FAILED_PRECONDITION,
        _S.ABORTED,
        _S.OUT_OF_RANGE,
        _S.UNAUTHENTICATED,
    }
)
_BY_CODE = {
    _S.UNAVAILABLE: ErrorClass.UNAVAILABLE,
    _S.CANCELLED: ErrorClass.CANCELLED,
    _S.DEADLINE_EXCEEDED: ErrorClass.DEADLINE_EXCEEDED,
}
_READY = grpc.ChannelConnectivity.READY
_CODES = {code.value[0]: code for code in grpc.StatusCode}


@dataclasses.dataclass(frozen=True)
class GrpcTarget:
    """The unary method to call (``/package.Service/Method``) and the serialized request."""

    method: str
    request: bytes = b""

    @classmethod
    def parse(cls, text: str, request: bytes = b"") -> GrpcTarget:
        """``SERVICE/METHOD`` (a leading ``/`` is optional) -> a target; LosslessError naming
        ``--grpc`` for anything else."""
        service, sep, method = text.strip().lstrip("/").rpartition("/")
        if not sep or not service or not method or any(c.isspace() for c in text.strip()):
            raise LosslessError(
                f"--grpc {text!r}: expected SERVICE/METHOD, e.g. helloworld.Greeter/SayHello"
            )
        return cls(f"/{service}/{method}", request)

    def describe(self) -> str:
        return f"gRPC {self.method}"

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "request_bytes": len(self.request)}

    def request_kind(self) -> dict[str, Any]:
        """The run's one kind of request, as settings' ``requests`` lists kinds (the analysis
        and the vegeta export read it): on the wire a gRPC call is an HTTP/2 POST to
        ``/Service/Method``. Not idempotent: the generator cannot know the method's
        idempotency level, so it never claims a retry would be safe."""
        return {
            "name": f"gRPC {self.method}",
            "method": "POST",
            "path": self.method,
            "weight": 1.0,
            "idempotent": False,
            "body_bytes": len(self.request),
            "headers": [],
        }


def classify(code: Any, details: str | None) -> tuple[ErrorClass, int]:
    """The error class and ``Record.status`` of a call that ended with ``code``."""
    if code in _APPLICATION:
        return _OK, 200
    if code is _S.UNAVAILABLE and "failed to connect" in (details or "").lower():
        return ErrorClass.REFUSED, 0
    error = _BY_CODE.get(code)
    if error is None:  # UNKNOWN, INTERNAL, UNIMPLEMENTED, DATA_LOSS: the server's answer
        return ErrorClass.GRPC_ERROR, 200
    return error, 0


class _Channel:
    """One channel (one HTTP/2 connection) pinned to ``endpoint``."""

    __slots__ = ("active", "call", "channel", "client", "conn_id", "endpoint", "retired", "served")

    def __init__(self, endpoint: Endpoint, client: int, conn_id: int, method: str) -> None:
        self.endpoint = endpoint
        self.client = client
        self.conn_id = conn_id
        self.channel = grpc.aio.insecure_channel(
            f"{endpoint.host}:{endpoint.port}", options=CHANNEL_OPTIONS
        )
        self.call = self.channel.unary_unary(method)
        self.served = 0  # calls that got a status from the server
        self.active = 0
        self.retired = False

    def usable(self) -> bool:
        """Not retired, and READY once it has served (a GOAWAY or a lost connection ends it)."""
        if self.retired:
            return False
        if self.served == 0:
            return True
        state = self.channel.get_state(try_to_connect=False)
        return bool(state is _READY)


class _GrpcGenerator:
    """The state of one :func:`run_grpc_load` call."""

    def __init__(
        self,
        view: EndpointView,
        clock: Clock,
        target: GrpcTarget,
        *,
        timeout: float,
        plan: OpenLoop,
        max_inflight: int,
        on_record: Callable[[Record], None] | None,
    ) -> None:
        self.view = view
        self.plan = plan
        self.max_inflight = max_inflight
        self.room = asyncio.Event()
        self.now = clock.now
        self.target = target
        self.timeout = timeout
        self.on_record = on_record
        self.records: list[Record] = []
        self.channels: list[_Channel | None] = [None] * max(1, view.clients)
        self.next_conn_id = 1
        self.pending = 0
        self.callback_error: BaseException | None = None
        self.idle = asyncio.Event()
        self.idle.set()
        self.open: set[_Channel] = set()
        self._tg: asyncio.TaskGroup | None = None
        self._last_young = 0.0

    def _open(self, client: int) -> _Channel | None:
        endpoint = self.view.pick(client)
        if endpoint is None:
            return None
        ch = _Channel(endpoint, client, self.next_conn_id, self.target.method)
        self.next_conn_id += 1
        self.open.add(ch)
        return ch

    def _channel(self, client: int, fresh: bool) -> _Channel | None:
        if fresh:
            ch = self._open(client)
            if ch is not None:
                ch.retired = True  # one-shot: closed after its call
            return ch
        ch = self.channels[client]
        if ch is None or not ch.usable():
            if ch is not None:
                self._retire(ch)
            ch = self._open(client)
            self.channels[client] = ch
        return ch

    def _retire(self, ch: _Channel) -> None:
        ch.retired = True
        if self.channels[ch.client] is ch:
            self.channels[ch.client] = None
        if ch.active == 0 and ch in self.open:
            self.open.discard(ch)
            assert self._tg is not None
            self._tg.create_task(_close(ch))

    def issue(self, seq: int, intended: float, client: int, fresh: bool) -> None:
        rec = Record(seq, intended, self.now(), None, None, 0, 0, _OK, "", 0, False, client, 0)
        self.pending += 1
        self.idle.clear()
        ch = self._channel(client, fresh)
        if ch is None:
            rec.end = rec.sent
            self._finish(rec, ErrorClass.NO_ENDPOINT)
            return
        ch.active += 1  # taken now: the channel is not closed before the call starts on it
        self._start(rec, ch, reconnect=False)

    def _start(self, rec: Record, ch: _Channel, *, reconnect: bool) -> None:
        """Start one call of ``rec`` on ``ch`` (its ``active`` already counts it); ``_done``
        completes it. No task of ours: grpc's own invocation task reports the outcome (its
        done callback), one task per call as in a plain ``await stub(...)`` loop."""
        rec.conn_id = ch.conn_id
        rec.replica = ch.endpoint.name
        rec.reused = connected = ch.served > 0
        call = ch.call(self.target.request, timeout=self.timeout)
        task = getattr(call, "_invocation_task", None)
        if isinstance(task, asyncio.Future):
            task.add_done_callback(
                functools.partial(self._done, rec, ch, call, reconnect, connected)
            )
        else:  # pragma: no cover - a grpcio without it: await the call in a task of ours
            assert self._tg is not None
            self._tg.create_task(self._await(rec, ch, call, reconnect, connected))

    async def _await(
        self, rec: Record, ch: _Channel, call: Any, reconnect: bool, connected: bool
    ) -> None:  # pragma: no cover - see _start
        try:
            response = await call
        except grpc.aio.AioRpcError as exc:
            self._outcome(rec, ch, exc.code(), exc.details(), 0, reconnect, connected)
        else:
            self._outcome(rec, ch, _S.OK, "", len(response), reconnect, connected)

    def _done(
        self,
        rec: Record,
        ch: _Channel,
        call: Any,
        reconnect: bool,
        connected: bool,
        task: asyncio.Future[Any],
    ) -> None:
        """grpc's invocation task ended: its result is the response (bytes, as there is no
        deserializer) or grpc's EOF marker, the status then being the call's (what ``await
        call`` reads to raise AioRpcError)."""
        if task.cancelled():
            self._outcome(rec, ch, _S.CANCELLED, "cancelled", 0, reconnect, connected)
            return
        exc = task.exception()
        if exc is not None:
            if self.callback_error is None:
                self.callback_error = exc
            self._outcome(rec, ch, _S.UNKNOWN, repr(exc), 0, reconnect, connected)
            return
        response = task.result()
        if isinstance(response, bytes):
            self._outcome(rec, ch, _S.OK, "", len(response), reconnect, connected)
            return
        status = call._cython_call._status
        code = _CODES.get(status.code(), _S.UNKNOWN)
        self._outcome(rec, ch, code, status.details(), 0, reconnect, connected)

    def _outcome(
        self,
        rec: Record,
        ch: _Channel,
        code: Any,
        details: str | None,
        size: int,
        reconnect: bool,
        connected: bool,
    ) -> None:
        """Record the call's outcome; retire the channel after a transport failure; apply the
        kube-proxy reconnection (module docstring) once, on the current view."""
        ch.active -= 1
        if code is _S.OK:
            error, rec.status, rec.bytes = _OK, 200, size
        else:
            (error, rec.status), rec.bytes = classify(code, details), 0
        rec.end = self.now()
        rec.grpc = int(code.value[0])
        if rec.status:
            rec.first_byte = rec.end
            ch.served += 1
        transport = error is not _OK and error is not ErrorClass.GRPC_ERROR
        if transport or (ch.retired and ch.active == 0):
            self._retire(ch)  # a failed channel is not used again; a retired one is closed
        if not reconnect and connected and error is ErrorClass.REFUSED:
            retry = self._open(rec.client)
            if retry is not None:
                retry.retired = True  # one-shot
                retry.active += 1
                self._start(rec, retry, reconnect=True)
                return
            rec.grpc = None
            error = ErrorClass.NO_ENDPOINT
        self._finish(rec, error)

    def _finish(self, rec: Record, error: ErrorClass) -> None:
        if error is _OK and self.plan.late(rec):
            error = ErrorClass.SCHEDULE_LAG
        rec.error = error
        self.pending -= 1
        if self.pending == 0:
            self.idle.set()
        if self.pending < self.max_inflight:
            self.room.set()
        self.records.append(rec)
        if self.on_record is not None:
            try:
                self.on_record(rec)
            except Exception as exc:  # surfaced by run_grpc_load once the run is wound down
                if self.callback_error is None:
                    self.callback_error = exc

    def _issue(self, seq: int, intended: float, client: int, fresh: bool, kind: int) -> bool:
        if self.pending >= self.max_inflight:
            return False  # at the bound: the schedule waits for a call to end (lag)
        self.issue(seq, intended, client, fresh)
        return True

    async def _wait_room(self) -> None:
        self.room.clear()
        await self.room.wait()

    def _tick(self, now: float) -> None:
        """Young collections every 10 ms (no sweeper task here: see run_load)."""
        if now - self._last_young >= 0.01:
            collect_young()
            self._last_young = now

    async def schedule(self, stop: asyncio.Event) -> None:
        """Start the run's calls on ``self.plan`` (:meth:`OpenLoop.run`) until done, ``stop``
        or an ``on_record`` error; waits of at most 10 ms, so a stop is seen at once."""
        self._last_young = self.now()
        await self.plan.run(
            self.now,
            self._issue,
            clients=self.view.clients,
            stopped=lambda: stop.is_set() or self.callback_error is not None,
            wait_due=lambda delay: asyncio.sleep(min(delay, 0.01)),
            wait_room=self._wait_room,
            tick=self._tick,
            yield_each_batch=True,  # let the calls start and responses in
        )

    async def close(self) -> None:
        channels = list(self.open)
        self.open.clear()
        for ch in channels:
            await _close(ch)


async def _close(ch: _Channel) -> None:
    """Close ``ch``'s channel (no call runs on it any more), bounded: grpc's ``close`` walks
    every task of the loop looking for the channel's calls."""
    try:
        async with asyncio.timeout(_CLOSE_TIMEOUT):
            await ch.channel.close()
    except TimeoutError:  # pragma: no cover - never seen; the run must not hang on it
        pass


async def run_grpc_load(
    view: EndpointView,
    clock: Clock,
    target: GrpcTarget,
    *,
    rate: float,
    duration: float,
    new_conn_ratio: float = 0.1,
    timeout: float = 5.0,
    lag_budget: float = 0.1,
    max_inflight: int = 2000,
    on_record: Callable[[Record], None] | None = None,
    stop: asyncio.Event | None = None,
    seed: int = 0,
) -> list[Record]:
    """Make ``round(rate * duration)`` unary calls to ``target``, open loop; return their
    records sorted by ``seq``.

    Each call yields exactly one :class:`Record` (``on_record`` gets it as soon as it is
    complete); the generator never waits for a call before starting the next one (gRPC
    multiplexes them on the client's channel). Each call's deadline is ``timeout``. When
    ``stop`` is set no further call starts; the calls in flight end (each bounded by its
    deadline), every channel is closed, then the function returns. An exception raised by
    ``on_record`` ends the run the same way and is then re-raised. At most ``max_inflight``
    calls run at once: at that bound the schedule waits for one to end, which shows as lag
    (the HTTP generator's ``max_conns``)."""
    plan = OpenLoop(rate, duration, new_conn_ratio, lag_budget, seed, unit="calls")
    if not (timeout > 0 and max_inflight >= 1):
        raise ValueError("timeout must be > 0 and max_inflight >= 1")
    gen = _GrpcGenerator(
        view,
        clock,
        target,
        timeout=timeout,
        plan=plan,
        max_inflight=max_inflight,
        on_record=on_record,
    )
    stop_event = stop if stop is not None else asyncio.Event()
    try:
        with young_collections_only():
            async with asyncio.TaskGroup() as tg:
                gen._tg = tg
                await gen.schedule(stop_event)
                await gen.idle.wait()
    finally:
        await gen.close()
    if gen.callback_error is not None:
        raise gen.callback_error
    gen.records.sort(key=lambda r: r.seq)
    return gen.records
