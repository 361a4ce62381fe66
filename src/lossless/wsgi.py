"""WSGI middleware: probe routes and in-flight tracking for Flask, Django and any WSGI app.

``LosslessWSGIMiddleware(app)``:

1. answers the probe paths, the metrics path (when enabled) and the admin endpoint itself, as
   :mod:`lossless.routing` says (``PATH_INFO`` is already relative to ``SCRIPT_NAME``);
2. counts every other request as in flight until the server closes the response iterable, that
   is after the last byte was written, so streaming responses are tracked to their end;
3. runs the lifecycle's startup hooks in a background thread of the serving process, started by
   the server integration or, at the latest, by the first request;
4. from t0 on, asks for ``Connection: close``: WSGI forbids applications to set hop-by-hop
   headers (PEP 3333), so the middleware sets ``environ["lossless.close_connection"] = True`` and
   the server integration (``lossless serve --wsgi`` on gunicorn) closes the connection after the
   response. Under other servers use a preStop sleep instead (see docs/runtime.md).

Wrapping an app twice is harmless: the inner middleware sees ``environ["lossless.lifecycle"]``
set to its own lifecycle by the outer one and passes the request through.
"""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from lossless import events, streams
from lossless.lifecycle import Lifecycle, adopt_lifecycle, follow_default
from lossless.routing import Router

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class LosslessWSGIMiddleware:
    def __init__(self, app: WSGIApp, *, lifecycle: Lifecycle | None = None) -> None:
        self.app = app
        self._lifecycle: Lifecycle | None = None
        self._router: Router | None = None
        self._started_pid = 0
        self._lock = threading.Lock()
        if lifecycle is not None:
            adopt_lifecycle(lifecycle, user=f"LosslessWSGIMiddleware({type(app).__qualname__})")
            self.use_lifecycle(lifecycle)

    @property
    def lifecycle(self) -> Lifecycle:
        if self._lifecycle is None:
            self.use_lifecycle(follow_default(self))
        assert self._lifecycle is not None
        return self._lifecycle

    def use_lifecycle(self, lifecycle: Lifecycle) -> None:
        """Serve ``lifecycle`` from now on (a fresh one per test: see ``lossless.testing``);
        its startup runs on the next request."""
        self._lifecycle = lifecycle
        self._router = Router(lifecycle)
        self._started_pid = 0

    def ensure_started(self) -> None:
        """Start the lifecycle (startup hooks, then background checks) once in this process, in
        a background thread; returns at once. Safe to call from every request."""
        pid = os.getpid()
        if self._started_pid == pid:
            return
        lc = self.lifecycle
        with self._lock:
            if self._started_pid == pid:
                return
            self._started_pid = pid
        events.ensure_visible()
        if not lc.started:
            threading.Thread(target=lc.startup_sync, name="lossless-startup", daemon=True).start()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        lc = self.lifecycle
        if environ.get("lossless.lifecycle") is lc:
            return self.app(environ, start_response)  # an outer middleware handles it
        self.ensure_started()
        router = self._router
        assert router is not None
        kind = router.routes.get(environ.get("PATH_INFO") or "/")
        if kind is not None:
            response = router.answer(
                kind,
                environ.get("REQUEST_METHOD", "GET"),
                query=environ.get("QUERY_STRING", ""),
                accept=environ.get("HTTP_ACCEPT", ""),
                authorization=environ.get("HTTP_AUTHORIZATION", ""),
                client=environ.get("REMOTE_ADDR"),
            )
            if response.close:
                environ["lossless.close_connection"] = True
            start_response(response.status_line, response.headers)
            return [response.body]
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
