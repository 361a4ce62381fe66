"""The probe port of ``lossless run``: ``/livez`` ``/readyz`` ``/startupz`` (and the admin drain
endpoint) answered from the lifecycle on a small threaded HTTP/1.1 server.

Bodies and statuses come from :mod:`lossless.probes`, so they are those of the runtime. A probe
only reads state, so each answer is O(1); connections are closed after each answer.
"""

from __future__ import annotations

import http.server
import socket
import threading
import urllib.parse

from lossless import metrics, probes
from lossless.admin import CONTENT_TYPE as ADMIN_CONTENT_TYPE
from lossless.admin import handle_admin
from lossless.errors import LosslessError
from lossless.lifecycle import Lifecycle


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "lossless-run"

    def log_message(self, format: str, *args: object) -> None:
        pass  # probes every second would flood the log

    def _respond(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.close_connection = True

    def _handle(self) -> None:
        lc = self.server.lifecycle
        url = urllib.parse.urlsplit(self.path)
        client = self.client_address[0] if self.client_address else None
        admin = handle_admin(lc, self.command, url.path, self.headers.items(), client)
        if admin is not None:
            self._respond(admin[0], ADMIN_CONTENT_TYPE, admin[1])
            return
        s = lc.settings
        routes = {s.liveness_path: "livez", s.readiness_path: "readyz", s.startup_path: "startupz"}
        if s.metrics_path:
            routes[s.metrics_path] = "metrics"
        kind = routes.get(url.path)
        if kind is None:
            self._respond(404, "text/plain; charset=utf-8", b"not found\n")
        elif self.command not in ("GET", "HEAD"):
            self._respond(405, "text/plain; charset=utf-8", b"method not allowed\n")
        elif kind == "metrics":
            try:
                body, content_type = metrics.render(lc)
                self._respond(200, content_type, body)
            except metrics.MetricsUnavailable as exc:
                self._respond(501, "text/plain", str(exc).encode())
        else:
            ans = probes.answer(
                lc, kind, query=url.query, accept=self.headers.get("Accept", ""), client=client
            )
            self._respond(ans.status, ans.content_type, ans.body)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _handle


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], lifecycle: Lifecycle) -> None:
        self.lifecycle = lifecycle
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)


class ProbeServer:
    """Listen on ``host:port`` at construction (so a taken port fails before the child starts);
    :meth:`start` serves in a daemon thread; :meth:`close` stops and closes the listener."""

    def __init__(self, host: str, port: int, lifecycle: Lifecycle) -> None:
        try:
            self._server = _Server((host, port), lifecycle)
        except OSError as exc:
            raise LosslessError(
                f"cannot listen on {host}:{port} (--probe-port): {exc.strerror or exc}"
            ) from None
        self.port = int(self._server.server_address[1])
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="lossless-probes",
            daemon=True,
        )
        self._thread.start()

    def close(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(2)
        self._server.server_close()
