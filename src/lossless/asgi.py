"""ASGI middleware: probe routes, in-flight tracking and ``Connection: close`` while draining.

``LosslessMiddleware(app)`` works under any ASGI server. It:

1. answers the probe paths, the metrics path (when enabled) and the admin endpoint itself, as
   :mod:`lossless.routing` says (under the ASGI ``root_path`` too: ``/svc/readyz``);
2. counts every other HTTP request as in flight from its first byte read until the app returns,
   that is after the last body chunk was sent, so streaming responses and long requests are
   tracked to their end;
3. adds ``Connection: close`` to the response of every request received from t0 on, so
   keep-alive clients move to other replicas while this one still serves (a connection whose
   request arrived before t0 is idle after its response and is closed at t0 + D);
4. runs the lifecycle's startup hooks when the server sends ``lifespan.startup`` (or, with servers
   that have no lifespan, on the first request) and its shutdown hooks on ``lifespan.shutdown``;
5. registers the default liveness check ``event_loop``: it fails when the loop has not run a
   heartbeat for ``loop_block_threshold`` seconds.

It does *not* delay the closing of listeners: plain servers close them on SIGTERM. Run the app
under ``lossless serve``, or its server under ``lossless run`` (which shares t0 with every worker
and signals the server at t0 + D), for the full drain sequence. WebSocket connections pass
through untracked (like hijacked connections in Go's ``Server.Shutdown``).

Adding it twice (``app.add_middleware(LosslessMiddleware)`` and ``lossless serve``) is harmless:
the outer one answers the probes and tracks the request; the inner one sees the request already
tracked on the same lifecycle and passes it through.

Without ``lifecycle=``, it uses the process-wide :func:`~lossless.lifecycle.get_lifecycle` and
follows :func:`~lossless.lifecycle.set_lifecycle` (``lossless.testing``). With ``lifecycle=``, that
one becomes the process-wide lifecycle when there is none yet (see
:func:`~lossless.lifecycle.adopt_lifecycle`).
"""

from __future__ import annotations

import asyncio
import time

from lossless import events
from lossless._asgi_types import ASGIApp, Message, Receive, Scope, Send
from lossless.lifecycle import FastPath, Lifecycle, adopt_lifecycle, follow_default
from lossless.routing import Router
from lossless.streams import AsgiResponse, StreamRegistry

_monotonic = time.monotonic


def _closing(send: Send) -> Send:
    """``send`` that adds ``Connection: close`` to the response start (used from t0 on)."""

    async def send_wrapper(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != b"connection"]
            headers.append((b"connection", b"close"))
            message = {**message, "headers": headers}
        await send(message)

    return send_wrapper


class LosslessMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        lifecycle: Lifecycle | None = None,
        loop_check: bool = True,
        loop_block_threshold: float = 5.0,
    ) -> None:
        if loop_block_threshold <= 0:
            raise ValueError("loop_block_threshold must be positive")
        self.app = app
        self.loop_check = loop_check
        self.loop_block_threshold = loop_block_threshold
        self._heartbeat: asyncio.Task[None] | None = None
        self._stream_ender: asyncio.Task[None] | None = None
        self._last_beat = time.monotonic()
        self._starting: asyncio.Task[None] | None = None
        self._lifecycle: Lifecycle | None = None
        self._router: Router | None = None
        self._fast: FastPath | None = None
        self._streams: StreamRegistry | None = None
        if lifecycle is not None:
            adopt_lifecycle(lifecycle, user=f"LosslessMiddleware({_name(app)})")
            self.use_lifecycle(lifecycle)

    @property
    def lifecycle(self) -> Lifecycle:
        if self._lifecycle is None:
            self.use_lifecycle(follow_default(self))
        assert self._lifecycle is not None
        return self._lifecycle

    def use_lifecycle(self, lifecycle: Lifecycle) -> None:
        """Serve ``lifecycle`` from now on (a fresh one per test: see ``lossless.testing``).
        Its startup runs again on the next lifespan startup or request."""
        self._lifecycle = lifecycle
        self._router = Router(lifecycle)
        self._fast = lifecycle.fast_path()
        self._streams = lifecycle.streams
        self._starting = None
        for task in (self._heartbeat, self._stream_ender):
            if task is not None and not task.done():
                try:  # the task's loop may run in another thread, or be closed already
                    task.get_loop().call_soon_threadsafe(task.cancel)
                except RuntimeError:
                    pass
        self._heartbeat = self._stream_ender = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await self._lifespan(scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return
        # The hot path: every request of the app runs these lines (see bench/bench_overhead.py).
        fast = self._fast
        if fast is None:
            self.lifecycle  # noqa: B018 - resolves the lifecycle, router and fast path
            fast = self._fast
            assert fast is not None
        if self._starting is None:
            self._ensure_started()
        router = self._router
        assert router is not None
        path = scope["path"]
        kind = router.routes.get(path)
        if kind is None:
            root = scope.get("root_path")
            if root and path.startswith(root):  # ASGI puts the root path in path
                kind = router.match(path, root)
        if kind is not None:
            await self._answer(router, kind, scope, send)
            return
        inflight, flag, finished_while_draining = fast
        key = id(scope)
        entry = (scope, _monotonic())
        if inflight.setdefault(key, entry) is not entry:
            # An outer LosslessMiddleware on the same lifecycle tracks this request already.
            await self.app(scope, receive, send)
            return
        # Not draining when the request arrived: no Connection: close (if t0 comes before its
        # response, the connection is idle afterwards and is closed at t0 + D like every idle
        # keep-alive connection). The response wrapper ends streams at t0 + D (lossless.streams).
        streams = self._streams
        if streams is None or not streams.armed or streams.mode == "none":
            # Nothing ends streams here (a foreign server, or --stream-end none): no wrapper.
            try:
                await self.app(scope, receive, _closing(send) if flag[0] else send)
            finally:
                del inflight[key]
                if flag[0]:
                    finished_while_draining()
            return
        response = AsgiResponse(streams, receive, _closing(send) if flag[0] else send)
        try:
            try:
                await self.app(scope, response.receive, response.send)
            except Exception as exc:
                if not await response.finish(exc):
                    raise
            except asyncio.CancelledError:
                if not response.was_cancelled():  # not our stream end: propagate
                    raise
                await response.finish(None)
            else:
                if response.streaming:  # ended by the drain, or forgot its last body part
                    await response.finish(None)
        finally:
            del inflight[key]
            if flag[0]:
                finished_while_draining()

    async def _answer(self, router: Router, kind: str, scope: Scope, send: Send) -> None:
        accept = authorization = ""
        for name, value in scope.get("headers") or ():
            lowered = name.lower()
            if lowered == b"accept":
                accept = value.decode("latin-1")
            elif lowered == b"authorization":
                authorization = value.decode("latin-1")
        client = scope.get("client")
        response = router.answer(
            kind,
            scope["method"],
            query=(scope.get("query_string") or b"").decode("latin-1"),
            accept=accept,
            authorization=authorization,
            client=client[0] if client else None,
        )
        headers = [(k.lower().encode(), v.encode("latin-1")) for k, v in response.headers]
        if response.close:
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": response.body})

    # -- startup, heartbeat, shutdown ---------------------------------------------------------
    def _ensure_started(self) -> None:
        """Start lifecycle startup in the background when no lifespan did (first request)."""
        lc = self.lifecycle
        self._end_streams_for_supervisor(lc)
        if lc.started or self._starting is not None:
            return
        self._starting = asyncio.get_running_loop().create_task(self._startup())

    def _end_streams_for_supervisor(self, lc: Lifecycle) -> None:
        """Under ``lossless run`` (a supervisor's drain state) no server of ours ends the open
        streams: the middleware does, in this process, at t0 + D (when the supervisor signals
        the server, which then waits for them), over the stream close window. Arms the stream
        registry at once (before this request) and starts the task that waits for t0 + D; a
        server that ends streams itself (``lossless serve``) armed it already. Idempotent."""
        streams = lc.streams
        if not lc.supervised or streams.armed or streams.mode == "none":
            return
        streams.armed = True
        self._stream_ender = asyncio.get_running_loop().create_task(self._end_streams_at(lc))

    @staticmethod
    async def _end_streams_at(lc: Lifecycle) -> None:
        await lc.wait_draining()
        end = lc.delay_end
        if end is not None:
            await asyncio.sleep(max(0.0, end - time.monotonic()))
        lc.streams.end_all(lc.settings.stream_window)

    async def _startup(self) -> None:
        lc = self.lifecycle
        self._end_streams_for_supervisor(lc)
        events.ensure_visible()
        if self._starting is None:
            self._starting = asyncio.current_task()
        if self.loop_check and self._heartbeat is None:
            self._heartbeat = asyncio.get_running_loop().create_task(self._beat())
            try:
                lc.add_check("event_loop", self._loop_responsive, liveness=True)
            except ValueError:
                # Registered already: by this middleware (a renewed lifecycle copies it), keep
                # beating; by another one on this lifecycle (an outer one), it beats for the loop.
                mine = self._loop_responsive
                if not any(c.name == "event_loop" and c.fn == mine for c in lc.health.checks()):
                    self._heartbeat.cancel()
        if not lc.started:
            await lc.startup()

    async def _beat(self) -> None:
        while True:
            self._last_beat = time.monotonic()
            await asyncio.sleep(0.25)

    def _loop_responsive(self) -> str:
        stalled = time.monotonic() - self._last_beat
        if stalled > self.loop_block_threshold:
            raise RuntimeError(f"event loop blocked for {stalled:.1f} s")
        return "ok"

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        lc = self.lifecycle
        app_failed = False
        seen: list[str] = []

        async def receive_wrapper() -> Message:
            message = await receive()
            seen.append(message["type"])
            if message["type"] == "lifespan.startup":
                # The app's own startup runs now, before most servers listen: probes are
                # refused until it is done (docs/runtime.md, "Probes during startup").
                events.ensure_visible()
                events.emit("lifespan_startup", app=_name(self.app))
            elif message["type"] == "lifespan.shutdown":
                await lc.shutdown()
                for task in (self._heartbeat, self._stream_ender):
                    if task is not None:
                        task.cancel()
            return message

        async def send_wrapper(message: Message) -> None:
            nonlocal app_failed
            if message["type"] == "lifespan.startup.complete":
                try:
                    self._starting = asyncio.current_task()
                    await self._startup()
                except Exception as exc:
                    message = {
                        "type": "lifespan.startup.failed",
                        "message": f"lossless startup hook failed: {exc!r}",
                    }
            elif message["type"] == "lifespan.startup.failed":
                app_failed = True
            await send(message)

        try:
            await self.app(scope, receive_wrapper, send_wrapper)
        except Exception:
            if app_failed:
                raise
            # The app has no lifespan support: do it for the app (startup now, shutdown later).
            await self._lifespan_without_app(receive, send, seen)

    async def _lifespan_without_app(self, receive: Receive, send: Send, seen: list[str]) -> None:
        lc = self.lifecycle
        pending = [{"type": t} for t in seen if t == "lifespan.startup"]
        while True:
            message = pending.pop() if pending else await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self._startup()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": repr(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await lc.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return


def _name(app: object) -> str:
    return str(getattr(app, "__qualname__", None) or type(app).__qualname__)
