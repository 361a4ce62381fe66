"""ASGI middleware: probe routes, in-flight tracking and ``Connection: close`` while draining.

``LosslessMiddleware(app)`` works under any ASGI server. It:

1. answers ``GET``/``HEAD`` on the probe paths (and the metrics path, when enabled) itself;
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
under ``lossless serve`` for the full drain sequence, or give the pod a preStop sleep. WebSocket
connections pass through untracked (like hijacked connections in Go's ``Server.Shutdown``).
"""

from __future__ import annotations

import asyncio
import time

from lossless import metrics, probes
from lossless._asgi_types import ASGIApp, Message, Receive, Scope, Send
from lossless.admin import ADMIN_PATH
from lossless.lifecycle import Lifecycle, get_lifecycle
from lossless.streams import AsgiResponse

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
        self._lifecycle = lifecycle
        self.loop_check = loop_check
        self.loop_block_threshold = loop_block_threshold
        self._heartbeat: asyncio.Task[None] | None = None
        self._last_beat = time.monotonic()
        self._starting: asyncio.Task[None] | None = None
        self._route_table: dict[str, str] | None = None

    @property
    def lifecycle(self) -> Lifecycle:
        if self._lifecycle is None:
            self._lifecycle = get_lifecycle()
        return self._lifecycle

    def _routes(self) -> dict[str, str]:
        if self._route_table is not None:
            return self._route_table
        s = self.lifecycle.settings
        routes = {
            s.liveness_path: "livez",
            s.readiness_path: "readyz",
            s.startup_path: "startupz",
        }
        if s.metrics_path:
            routes[s.metrics_path] = "metrics"
        routes[ADMIN_PATH] = "admin"
        self._route_table = routes
        return routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await self._lifespan(scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return
        # The hot path: every request of the app runs these lines (see bench/bench_overhead.py).
        lc = self._lifecycle or self.lifecycle
        if self._starting is None:
            self._ensure_started()
        route = (self._route_table or self._routes()).get(scope["path"])
        if route is not None:  # one dict lookup for every path the middleware answers itself
            if route == "admin":
                await self._answer_admin(lc, scope, send)
                return
            if scope["method"] in ("GET", "HEAD"):
                await self._answer_probe(route, scope, send)
                return
        # In-flight bookkeeping inlined (Lifecycle.request_started/finished, minus two calls):
        # the key is the scope's id, unique while the request runs; public tokens are negative.
        inflight = lc._inflight
        key = id(scope)
        inflight[key] = (scope, _monotonic())
        flag = lc.drain_flag
        # Not draining when the request arrived: no Connection: close (if t0 comes before its
        # response, the connection is idle afterwards and is closed at t0 + D like every idle
        # keep-alive connection). The response wrapper ends streams at t0 + D (lossless.streams).
        if lc.streams.mode == "none":  # streams are never ended: no wrapper at all
            try:
                await self.app(scope, receive, _closing(send) if flag[0] else send)
            finally:
                del inflight[key]
                if flag[0]:
                    lc._finished_slow_path()
            return
        response = AsgiResponse(lc.streams, receive, _closing(send) if flag[0] else send)
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
                lc._finished_slow_path()

    async def _answer_admin(self, lc: Lifecycle, scope: Scope, send: Send) -> None:
        """``/lossless/drain`` (see :mod:`lossless.admin`): loopback callers with the token."""
        from lossless.admin import CONTENT_TYPE, handle_admin

        client = scope.get("client")
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        answer = handle_admin(
            lc, scope["method"], scope["path"], headers, client[0] if client else None
        )
        status, body = answer if answer is not None else (404, b"")
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", CONTENT_TYPE.encode()),
                    (b"content-length", str(len(body)).encode()),
                    (b"cache-control", b"no-store"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def _answer_probe(self, route: str, scope: Scope, send: Send) -> None:
        lc = self.lifecycle
        if route == "metrics":
            try:
                body, content_type = metrics.render(lc)
                status = 200
            except metrics.MetricsUnavailable as exc:
                body, content_type, status = str(exc).encode(), "text/plain", 501
        else:
            headers = dict(scope.get("headers") or ())
            client = scope.get("client")
            ans = probes.answer(
                lc,
                route,
                query=(scope.get("query_string") or b"").decode("latin-1"),
                accept=headers.get(b"accept", b"").decode("latin-1"),
                client=client[0] if client else None,
            )
            status, content_type, body = ans
        response_headers = [
            (b"content-type", content_type.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
        ]
        if lc.draining:
            response_headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": response_headers})
        await send(
            {"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body}
        )

    # -- startup, heartbeat, shutdown ---------------------------------------------------------
    def _ensure_started(self) -> None:
        """Start lifecycle startup in the background when no lifespan did (first request)."""
        lc = self.lifecycle
        if lc.started or self._starting is not None:
            return
        self._starting = asyncio.get_running_loop().create_task(self._startup())

    async def _startup(self) -> None:
        lc = self.lifecycle
        if self._starting is None:
            self._starting = asyncio.current_task()
        if self.loop_check and self._heartbeat is None:
            self._heartbeat = asyncio.get_running_loop().create_task(self._beat())
            try:
                lc.add_check("event_loop", self._loop_responsive, liveness=True)
            except ValueError:
                pass  # registered by another instance of the middleware on this lifecycle
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
            if message["type"] == "lifespan.shutdown":
                await lc.shutdown()
                if self._heartbeat is not None:
                    self._heartbeat.cancel()
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
