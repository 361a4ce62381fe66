"""gRPC servers (``grpcio``, sync and ``grpc.aio``) under the lifecycle's drain sequence.

Install with ``pip install 'lossless[grpc]'``. Build the server with :func:`server` (or
:func:`aio_server`), add your services and ports, then hand it to :func:`serve` (or ``await``
:func:`serve_aio`), which starts it, blocks until it has stopped and returns the exit code::

    srv = lossless.grpc.server(futures.ThreadPoolExecutor(16))
    my_pb2_grpc.add_GreeterServicer_to_server(Greeter(), srv)
    srv.add_insecure_port("0.0.0.0:50051")
    sys.exit(lossless.grpc.serve(srv))

What :func:`serve` does, in order (the sequence of DESIGN.md applied to gRPC):

1. Adds a ``grpc.health.v1.Health`` service (grpcio-health-checking's ``HealthServicer``) unless
   one is passed, starts the server and the lifecycle (startup hooks, checks). The overall
   service ``""`` and every name in ``services`` answer NOT_SERVING until the lifecycle is READY,
   then follow its readiness (Kubernetes' ``grpc`` probe and client-side health checking read it).
2. First SIGTERM/SIGINT (or :meth:`Lifecycle.drain`), t0: health answers NOT_SERVING for every
   service, permanently; deregistration hooks run; RPCs keep being served for the drain delay D.
3. t0 + D: ``server.stop(grace=remaining)``: the listeners close and the server sends GOAWAY, so
   new RPCs are refused with UNAVAILABLE (clients retry them on another instance); RPCs already
   running go on.
4. When the last tracked RPC ends, the stop completes at once (a health ``Watch`` stream never
   holds it). At the deadline (t0 + shutdown timeout) response streams still running are cut
   with ``UNAVAILABLE`` and the details :data:`CUT_DETAILS` (between two messages, a moment
   before the deadline); anything else is cancelled by grpc itself (``UNAVAILABLE``,
   "Cancelling all calls"). Each cut RPC is logged as ``forced``.
5. Shutdown hooks run; the return value is the lifecycle's exit code (0, or the forced exit
   code when anything was cut).

A second signal skips what is left of D; a third stops the server at once. In-flight tracking
needs the :class:`LosslessInterceptor` (``server()``/``aio_server()`` install it; add it to
``interceptors=`` when you build the server yourself). Without it, step 4 waits for grpc's own
grace period to end and nothing is reported as cut. Signal handlers are installed only from the
main thread, and the previous ones are restored on return. A server can be served once.

gRPC has no way to send GOAWAY while still accepting, so during D clients learn of the drain
from the health service only; give them client-side health checking or a drain delay at least
as long as their name-resolution refresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import queue
import signal
import threading
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from concurrent import futures
from typing import Any

from lossless import events
from lossless.lifecycle import Lifecycle, get_lifecycle
from lossless.serve import _signals

try:
    import grpc  # type: ignore[import-untyped,import-not-found,unused-ignore]
    import grpc.aio  # type: ignore[import-untyped,import-not-found,unused-ignore]
    from grpc_health.v1 import (  # type: ignore[import-untyped,import-not-found,unused-ignore]
        _async as health_aio,
    )
    from grpc_health.v1 import (  # type: ignore[import-untyped,import-not-found,unused-ignore]
        health,
        health_pb2,
        health_pb2_grpc,
    )
except ImportError as exc:  # pragma: no cover - depends on the extras installed
    raise ImportError(
        f"lossless.grpc needs grpcio and grpcio-health-checking ({exc.name} is missing): "
        "pip install 'lossless[grpc]'"
    ) from exc


__all__ = [
    "CUT_DETAILS",
    "AioLosslessInterceptor",
    "LosslessInterceptor",
    "aio_server",
    "serve",
    "serve_aio",
    "server",
]

#: Status details of a response stream cut at the deadline (the code is UNAVAILABLE).
CUT_DETAILS = "lossless: server shutting down, drain deadline reached; retry on another instance"
#: Response streams are cut this long before the deadline, so that they end with
#: :data:`CUT_DETAILS` rather than with grpc's own cancellation at the deadline.
CUT_MARGIN = 0.1
HEALTH_PREFIX = "/grpc.health.v1.Health/"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
_POLL = 0.02

#: Lifecycles whose RPCs an interceptor tracks (so serve() may end as soon as they are done).
_tracked: weakref.WeakSet[Lifecycle] = weakref.WeakSet()


def _past_cut(lc: Lifecycle) -> bool:
    return lc.draining and lc.remaining() <= CUT_MARGIN


def _rebuild(handler: Any, **behaviors: Any) -> Any:
    """A new RpcMethodHandler of the same kind with wrapped behaviors."""
    kinds = {
        (False, False): (grpc.unary_unary_rpc_method_handler, "unary_unary"),
        (False, True): (grpc.unary_stream_rpc_method_handler, "unary_stream"),
        (True, False): (grpc.stream_unary_rpc_method_handler, "stream_unary"),
        (True, True): (grpc.stream_stream_rpc_method_handler, "stream_stream"),
    }
    factory, attr = kinds[(bool(handler.request_streaming), bool(handler.response_streaming))]
    return factory(
        behaviors[attr],
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


class LosslessInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Track every RPC (but the health service's) as in flight, and cut response streams still
    running at the deadline with UNAVAILABLE and :data:`CUT_DETAILS`."""

    def __init__(self, lifecycle: Lifecycle | None = None) -> None:
        self.lifecycle = lifecycle or get_lifecycle()
        _tracked.add(self.lifecycle)

    def intercept_service(
        self, continuation: Callable[[Any], Any], handler_call_details: Any
    ) -> Any:
        handler = continuation(handler_call_details)
        method = str(handler_call_details.method)
        if handler is None or method.startswith(HEALTH_PREFIX):
            return handler
        lc = self.lifecycle
        label = f"RPC {method}"
        if handler.response_streaming:
            inner = handler.stream_stream or handler.unary_stream

            def streaming(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                token = lc.request_started(label)
                try:
                    for item in inner(request, context):
                        if _past_cut(lc):
                            lc.record_forced(f"{label} stream cut at the deadline")
                            context.abort(grpc.StatusCode.UNAVAILABLE, CUT_DETAILS)
                        yield item
                finally:
                    lc.request_finished(token)

            return _rebuild(handler, unary_stream=streaming, stream_stream=streaming)
        inner = handler.stream_unary or handler.unary_unary

        def unary(request: Any, context: grpc.ServicerContext) -> Any:
            with lc.track(label):
                return inner(request, context)

        return _rebuild(handler, unary_unary=unary, stream_unary=unary)


class AioLosslessInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """:class:`LosslessInterceptor` for ``grpc.aio`` servers."""

    def __init__(self, lifecycle: Lifecycle | None = None) -> None:
        self.lifecycle = lifecycle or get_lifecycle()
        _tracked.add(self.lifecycle)

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], handler_call_details: Any
    ) -> Any:
        handler = await continuation(handler_call_details)
        method = str(handler_call_details.method)
        if handler is None or method.startswith(HEALTH_PREFIX):
            return handler
        lc = self.lifecycle
        label = f"RPC {method}"
        if handler.response_streaming:
            inner = handler.stream_stream or handler.unary_stream
            if inspect.isasyncgenfunction(inner):

                async def agen(
                    request: Any, context: grpc.aio.ServicerContext
                ) -> AsyncIterator[Any]:  # type: ignore[type-arg]
                    token = lc.request_started(label)
                    try:
                        async for item in inner(request, context):
                            if _past_cut(lc):
                                lc.record_forced(f"{label} stream cut at the deadline")
                                await context.abort(grpc.StatusCode.UNAVAILABLE, CUT_DETAILS)
                            yield item
                    finally:
                        lc.request_finished(token)

                return _rebuild(handler, unary_stream=agen, stream_stream=agen)

        inner = (
            handler.stream_stream
            or handler.unary_stream
            or handler.stream_unary
            or handler.unary_unary
        )

        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:  # type: ignore[type-arg]
            token = lc.request_started(label)
            try:
                return await inner(request, context)
            finally:
                lc.request_finished(token)

        return _rebuild(
            handler, unary_unary=call, unary_stream=call, stream_unary=call, stream_stream=call
        )


def server(
    thread_pool: futures.ThreadPoolExecutor | None = None,
    *,
    lifecycle: Lifecycle | None = None,
    interceptors: Sequence[grpc.ServerInterceptor] = (),
    **kwargs: Any,
) -> grpc.Server:
    """``grpc.server(...)`` with the :class:`LosslessInterceptor` first in ``interceptors``."""
    pool = thread_pool or futures.ThreadPoolExecutor(max_workers=16)
    first = LosslessInterceptor(lifecycle)
    return grpc.server(pool, interceptors=[first, *interceptors], **kwargs)


def aio_server(
    *,
    lifecycle: Lifecycle | None = None,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    **kwargs: Any,
) -> grpc.aio.Server:
    """``grpc.aio.server(...)`` with the :class:`AioLosslessInterceptor` first."""
    first = AioLosslessInterceptor(lifecycle)
    return grpc.aio.server(interceptors=[first, *interceptors], **kwargs)


@contextlib.contextmanager
def _signal_queue() -> Iterator[queue.SimpleQueue[int]]:
    """Install handlers for the drain signals that only record them (SimpleQueue.put is
    reentrant); restore the previous handlers on exit. No-op outside the main thread."""
    received: queue.SimpleQueue[int] = queue.SimpleQueue()
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def record(sig: int, frame: object) -> None:
        received.put(sig)

    previous = {sig: signal.signal(sig, record) for sig in _signals.HANDLED_SIGNALS}
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class _Driver:
    """The drain sequence's decisions, shared by the sync and asyncio variants."""

    def __init__(self, lc: Lifecycle) -> None:
        self.lc = lc
        self.count = 0
        self.exit_now = False
        self.cut_recorded = False

    def on_signal(self, sig: int) -> None:
        lc = self.lc
        self.count += 1
        action = _signals.meaning(self.count)
        events.emit(
            "signal",
            signal=_signals.name(sig),
            count=self.count,
            action=action,
            t_plus=lc.since_t0(),
        )
        if action == "drain":
            lc.drain(reason=_signals.name(sig))
        elif action == "skip_delay":
            lc.skip_delay()
        else:
            self.exit_now = True
            lc.cut_in_flight()
            self.cut_recorded = True
            events.emit("exit_now", t_plus=lc.since_t0())

    def status(self) -> int:
        return int(SERVING if self.lc.is_ready() else NOT_SERVING)

    def wait_time(self) -> float:
        lc = self.lc
        if lc.draining:
            return max(0.0, min(_POLL, lc.delay_remaining() or _POLL, lc.remaining() or _POLL))
        return _POLL * 2.5

    def at_deadline(self) -> None:
        if not self.cut_recorded and self.lc.remaining() <= 0:
            self.cut_recorded = True
            self.lc.cut_in_flight()


def serve(
    srv: grpc.Server,
    lifecycle: Lifecycle | None = None,
    *,
    health_servicer: health.HealthServicer | None = None,
    services: Iterable[str] = (),
    hard_exit: bool = True,
) -> int:
    """Start ``srv`` (not yet started, ports added) and run it through the drain sequence of
    the module docstring; block until it has stopped; return the exit code.

    Handler threads cannot be cancelled: when some are still running after the deadline or a
    third signal, ``serve`` does not return but ends the process with ``os._exit(code)``
    (after logging ``stopped``), as ``lossless serve`` does; ``hard_exit=False`` returns
    instead, and the interpreter will then wait for those threads before it can exit."""
    lc = lifecycle or get_lifecycle()
    names = ["", *services]
    servicer = health_servicer
    if servicer is None:
        servicer = health.HealthServicer(experimental_non_blocking=True)
        health_pb2_grpc.add_HealthServicer_to_server(servicer, srv)
    for name in names:
        servicer.set(name, NOT_SERVING)
    driver = _Driver(lc)
    with _signal_queue() as received:
        srv.start()
        events.emit("listening", server="grpc")
        lc.startup_sync()
        shown: int | None = None
        stopped: threading.Event | None = None
        while True:
            try:
                driver.on_signal(received.get(timeout=driver.wait_time()))
            except queue.Empty:
                pass
            if driver.exit_now:
                srv.stop(None)
                break
            if lc.draining and shown is not None:
                servicer.enter_graceful_shutdown()
                shown = None
            elif not lc.draining and shown != (status := driver.status()):
                for name in names:
                    servicer.set(name, status)
                shown = status
            if lc.draining and stopped is None and lc.delay_remaining() <= 0:
                stopped = srv.stop(grace=lc.remaining())
                events.emit("listeners_closed", t_plus=lc.since_t0(), in_flight=lc.in_flight)
            if stopped is not None:
                if stopped.is_set():
                    break
                if lc in _tracked and lc.in_flight == 0:
                    srv.stop(None)  # only untracked streams (health Watch) are left
                    break
                driver.at_deadline()
        events.emit("in_flight_done", t_plus=lc.since_t0(), forced=len(lc.forced) or None)
        if hard_exit and (driver.exit_now or (lc in _tracked and lc.in_flight > 0)):
            # Handler threads cut by the deadline or a third signal cannot be cancelled and
            # would hold the interpreter's exit (the thread pool joins them): exit now.
            code = lc.stopped()
            for handler in events.logger.handlers:
                handler.flush()
            os._exit(code)
        lc.shutdown_sync()
    return lc.stopped()


async def serve_aio(
    srv: grpc.aio.Server,
    lifecycle: Lifecycle | None = None,
    *,
    health_servicer: health_aio.HealthServicer | None = None,
    services: Iterable[str] = (),
) -> int:
    """:func:`serve` for a ``grpc.aio`` server, in the running event loop."""
    lc = lifecycle or get_lifecycle()
    names = ["", *services]
    servicer = health_servicer
    if servicer is None:
        servicer = health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(servicer, srv)
    for name in names:
        await servicer.set(name, NOT_SERVING)
    driver = _Driver(lc)
    loop = asyncio.get_running_loop()
    wake = asyncio.Event()
    installed: list[signal.Signals] = []

    def on_signal(sig: int) -> None:
        driver.on_signal(sig)
        wake.set()

    if threading.current_thread() is threading.main_thread():
        for sig in _signals.HANDLED_SIGNALS:
            loop.add_signal_handler(sig, on_signal, sig)
            installed.append(sig)
    try:
        await srv.start()
        events.emit("listening", server="grpc.aio")
        await lc.startup()
        shown: int | None = None
        stopping: asyncio.Task[None] | None = None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), driver.wait_time())
            wake.clear()
            if driver.exit_now:
                await srv.stop(None)
                break
            if lc.draining and shown is not None:
                await servicer.enter_graceful_shutdown()
                shown = None
            elif not lc.draining and shown != (status := driver.status()):
                for name in names:
                    await servicer.set(name, status)
                shown = status
            if lc.draining and stopping is None and lc.delay_remaining() <= 0:
                stopping = loop.create_task(srv.stop(grace=lc.remaining()))
                events.emit("listeners_closed", t_plus=lc.since_t0(), in_flight=lc.in_flight)
            if stopping is not None:
                if stopping.done():
                    break
                if lc in _tracked and lc.in_flight == 0:
                    await srv.stop(None)
                    await stopping
                    break
                driver.at_deadline()
        events.emit("in_flight_done", t_plus=lc.since_t0(), forced=len(lc.forced) or None)
        await lc.shutdown()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
    return lc.stopped()
