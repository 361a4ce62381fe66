"""One router for the paths lossless answers itself: probes, metrics and the admin endpoint.

The ASGI and WSGI middleware and the probe port of ``lossless run`` all ask the same question,
"(method, path, query, client) → response, or not ours?", and only translate the answer to their
transport. The contract:

1. A path is ours when it equals a probe path (``/livez``, ``/readyz``, ``/startupz``, as
   configured), the metrics path (when enabled) or ``/lossless/drain``, after stripping the
   ASGI ``root_path`` when the path starts with it (``lossless serve --root-path /svc`` gives
   ``/svc/readyz``; the kubelet probes that). Anything else is not ours: :meth:`Router.match`
   returns ``None`` and the middleware passes the request to the app (the probe server answers
   404).
2. Probes and metrics answer ``GET`` and ``HEAD`` (same headers, empty body); any other method
   gets ``405`` with ``Allow: GET, HEAD``, never the app: the path belongs to lossless.
3. The admin endpoint answers as :func:`lossless.admin.handle_admin` says (404 while disabled).
4. Every answer is ``Cache-Control: no-store`` and asks to close the connection from t0 on
   (``close``), so keep-alive probe connections move too.

Answering only reads state: a probe never runs a check.
"""

from __future__ import annotations

from typing import NamedTuple

from lossless import metrics, probe_render
from lossless.admin import ADMIN_PATH
from lossless.admin import CONTENT_TYPE as ADMIN_CONTENT_TYPE
from lossless.lifecycle import Lifecycle

__all__ = ["REASONS", "Response", "Router"]

#: Reason phrases of the statuses the router answers with.
REASONS = {
    200: "OK",
    202: "Accepted",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    501: "Not Implemented",
    503: "Service Unavailable",
}

_TEXT = "text/plain; charset=utf-8"


class Response(NamedTuple):
    """An answer, transport-free. ``headers`` excludes ``Connection``: ``close`` says whether to
    close the connection after it (adapters set the header, or ask their server to)."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes
    close: bool

    @property
    def status_line(self) -> str:
        """``"503 Service Unavailable"``, for WSGI's ``start_response``."""
        return f"{self.status} {REASONS.get(self.status, 'Error')}"


class Router:
    """The paths of one lifecycle's settings (read once, at construction)."""

    def __init__(self, lifecycle: Lifecycle) -> None:
        self.lifecycle = lifecycle
        s = lifecycle.settings
        routes = {
            s.liveness_path: "livez",
            s.readiness_path: "readyz",
            s.startup_path: "startupz",
        }
        if s.metrics_path:
            routes[s.metrics_path] = "metrics"
        routes[ADMIN_PATH] = "admin"
        #: path → kind; read directly by the ASGI hot path (one dict lookup per request).
        self.routes: dict[str, str] = routes

    def match(self, path: str, root_path: str = "") -> str | None:
        """The kind of ``path`` (``livez``, ``readyz``, ``startupz``, ``metrics``, ``admin``),
        or ``None`` when it is not ours. ``root_path`` is stripped first when ``path`` starts
        with it (ASGI puts the root path in ``path``)."""
        kind = self.routes.get(path)
        if kind is None and root_path and path.startswith(root_path):
            kind = self.routes.get(path[len(root_path) :] or "/")
        return kind

    def answer(
        self,
        kind: str,
        method: str,
        *,
        query: str = "",
        accept: str = "",
        authorization: str = "",
        client: str | None = None,
    ) -> Response:
        """The response for a request that :meth:`match` found to be ours."""
        lc = self.lifecycle
        close = lc.draining
        if kind == "admin":
            from lossless.admin import handle_admin

            found = handle_admin(lc, method, ADMIN_PATH, [("authorization", authorization)], client)
            status, body = found if found is not None else (404, b"")
            return _response(status, ADMIN_CONTENT_TYPE, body, close, head=method == "HEAD")
        if method not in ("GET", "HEAD"):
            response = _response(405, _TEXT, b"method not allowed: use GET or HEAD\n", close)
            response.headers.append(("Allow", "GET, HEAD"))
            return response
        head = method == "HEAD"
        if kind == "metrics":
            try:
                body, content_type = metrics.render(lc)
            except metrics.MetricsUnavailable as exc:
                return _response(501, _TEXT, str(exc).encode(), close, head=head)
            return _response(200, content_type, body, close, head=head)
        probe = probe_render.answer(lc, kind, query=query, accept=accept, client=client)
        return _response(probe.status, probe.content_type, probe.body, close, head=head)

    def respond(
        self,
        method: str,
        path: str,
        *,
        query: str = "",
        accept: str = "",
        authorization: str = "",
        client: str | None = None,
        root_path: str = "",
    ) -> Response | None:
        """:meth:`match` then :meth:`answer`; ``None`` when the path is not ours."""
        kind = self.match(path, root_path)
        if kind is None:
            return None
        return self.answer(
            kind, method, query=query, accept=accept, authorization=authorization, client=client
        )


def _response(
    status: int, content_type: str, body: bytes, close: bool, *, head: bool = False
) -> Response:
    headers = [
        ("Content-Type", content_type),
        ("Content-Length", str(len(body))),
        ("Cache-Control", "no-store"),
    ]
    return Response(status, headers, b"" if head else body, close)
