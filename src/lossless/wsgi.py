"""WSGI middleware: probe routes and in-flight tracking for Flask, Django and any WSGI app.

``LosslessWSGIMiddleware(app)``:

1. answers ``GET``/``HEAD`` on the probe paths (and the metrics path when enabled) itself;
2. counts every other request as in flight until the server closes the response iterable, that
   is after the last byte was written, so streaming responses are tracked to their end;
3. runs the lifecycle's startup hooks in a background thread of the serving process, started by
   the server integration or, at the latest, by the first request;
4. from t0 on, asks for ``Connection: close``: WSGI forbids applications to set hop-by-hop
   headers (PEP 3333), so the middleware sets ``environ["lossless.close_connection"] = True`` and
   the server integration (``lossless serve --wsgi`` on gunicorn) closes the connection after the
   response. Under other servers use a preStop sleep instead (see docs/runtime.md).
"""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from lossless import metrics, probes, streams
from lossless.admin import ADMIN_PATH
from lossless.lifecycle import Lifecycle, get_lifecycle

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class LosslessWSGIMiddleware:
    def __init__(self, app: WSGIApp, *, lifecycle: Lifecycle | None = None) -> None:
        self.app = app
        self._lifecycle = lifecycle
        self._started_pid = 0
        self._lock = threading.Lock()

    @property
    def lifecycle(self) -> Lifecycle:
        if self._lifecycle is None:
            self._lifecycle = get_lifecycle()
        return self._lifecycle

    def ensure_started(self) -> None:
        """Start the lifecycle (startup hooks, then background checks) once in this process, in
        a background thread; returns at once. Safe to call from every request."""
        pid = os.getpid()
        if self._started_pid == pid:
            return
        with self._lock:
            if self._started_pid == pid:
                return
            self._started_pid = pid
        lc = self.lifecycle
        if not lc.started:
            threading.Thread(target=lc.startup_sync, name="lossless-startup", daemon=True).start()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        lc = self.lifecycle
        self.ensure_started()
        path = environ.get("PATH_INFO") or "/"
        method = environ.get("REQUEST_METHOD", "GET")
        s = lc.settings
        routes = {s.liveness_path: "livez", s.readiness_path: "readyz", s.startup_path: "startupz"}
        if s.metrics_path:
            routes[s.metrics_path] = "metrics"
        route = routes.get(path)
        if route is not None and method in ("GET", "HEAD"):
            return self._probe(route, environ, start_response, method == "HEAD")
        if path == ADMIN_PATH:
            return self._admin(lc, method, environ, start_response)
        token = lc.request_started(environ)
        environ["lossless.lifecycle"] = lc
        if lc.draining:
            environ["lossless.close_connection"] = True
        tracked = _Tracked(lc, token)
        try:
            tracked.inner = self.app(environ, tracked.start_response(start_response))
        except BaseException:
            lc.request_finished(token)
            raise
        return tracked

    def _admin(
        self, lc: Lifecycle, method: str, environ: dict[str, Any], start_response: StartResponse
    ) -> list[bytes]:
        """``/lossless/drain`` (see :mod:`lossless.admin`): loopback callers with the token."""
        from lossless.admin import CONTENT_TYPE, handle_admin

        headers = [
            (key[5:].replace("_", "-"), value)
            for key, value in environ.items()
            if key.startswith("HTTP_") and isinstance(value, str)
        ]
        answer = handle_admin(lc, method, ADMIN_PATH, headers, environ.get("REMOTE_ADDR"))
        status, body = answer if answer is not None else (404, b"")
        reason = {
            200: "OK",
            202: "Accepted",
            401: "Unauthorized",
            403: "Forbidden",
            404: "Not Found",
            405: "Method Not Allowed",
        }.get(status, "Error")
        start_response(
            f"{status} {reason}",
            [
                ("Content-Type", CONTENT_TYPE),
                ("Content-Length", str(len(body))),
                ("Cache-Control", "no-store"),
            ],
        )
        return [body]

    def _probe(
        self, route: str, environ: dict[str, Any], start_response: StartResponse, head: bool
    ) -> list[bytes]:
        lc = self.lifecycle
        if route == "metrics":
            try:
                body, content_type = metrics.render(lc)
                status = "200 OK"
            except metrics.MetricsUnavailable as exc:
                body, content_type, status = str(exc).encode(), "text/plain", "501 Not Implemented"
        else:
            ans = probes.answer(
                lc,
                route,
                query=environ.get("QUERY_STRING", ""),
                accept=environ.get("HTTP_ACCEPT", ""),
                client=environ.get("REMOTE_ADDR"),
            )
            status = "200 OK" if ans.status == 200 else "503 Service Unavailable"
            body, content_type = ans.body, ans.content_type
        if lc.draining:
            environ["lossless.close_connection"] = True
        start_response(
            status,
            [
                ("Content-Type", content_type),
                ("Content-Length", str(len(body))),
                ("Cache-Control", "no-store"),
            ],
        )
        return [b""] if head else [body]


class _Tracked:
    """The app's response iterable; the request stays in flight until ``close()``. A response
    without ``Content-Length`` (a stream) stops at its end time from t0 + D (lossless.streams)."""

    def __init__(self, lc: Lifecycle, token: int) -> None:
        self.inner: Iterable[bytes] = ()
        self._lc = lc
        self._token: int | None = token
        self._kept = False

    def start_response(self, start_response: StartResponse) -> StartResponse:
        def start(status: str, headers: list[tuple[str, str]], *exc_info: Any) -> Any:
            self._kept = not streams.endable(self._lc.settings.stream_end, headers)
            return start_response(status, headers, *exc_info)

        return start

    def __iter__(self) -> Iterator[bytes]:
        if isinstance(self.inner, (list, tuple)) or self._kept:
            return iter(self.inner)
        offset = random.random()
        return streams.wsgi_chunks(self.inner, lambda: self._end_at(offset))

    def _end_at(self, offset: float) -> float | None:
        if self._kept or not self._lc.drain_flag[0]:
            return None
        return self._lc.stream_end_at(offset)

    def close(self) -> None:
        try:
            close = getattr(self.inner, "close", None)
            if close is not None:
                close()
        finally:
            if self._token is not None:
                self._lc.request_finished(self._token)
                self._token = None
