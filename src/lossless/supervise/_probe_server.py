"""The probe port of ``lossless run``: ``/livez`` ``/readyz`` ``/startupz`` (and the admin drain
endpoint) answered from the lifecycle on a small threaded HTTP/1.1 server.

Answers come from :class:`lossless.routing.Router`, so they are those of the middleware; a path
that is not ours gets 404 (there is no app behind this port). A probe only reads state, so each
answer is O(1); connections are closed after each answer.
"""

from __future__ import annotations

import http.server
import socket
import threading
import urllib.parse

from lossless.errors import LosslessError
from lossless.lifecycle import Lifecycle
from lossless.routing import Response, Router


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "lossless-run"

    def log_message(self, format: str, *args: object) -> None:
        pass  # probes every second would flood the log

    def _respond(self, response: Response) -> None:
        self.send_response(response.status)
        for name, value in response.headers:
            self.send_header(name, value)
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(response.body)
        self.close_connection = True

    def _handle(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        response = self.server.router.respond(
            self.command,
            url.path,
            query=url.query,
            accept=self.headers.get("Accept", ""),
            authorization=self.headers.get("Authorization", ""),
            client=self.client_address[0] if self.client_address else None,
        )
        if response is None:
            body = b"not found\n"
            headers = [("Content-Type", "text/plain; charset=utf-8")]
            headers.append(("Content-Length", str(len(body))))
            response = Response(404, headers, b"" if self.command == "HEAD" else body, True)
        self._respond(response)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _handle


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], lifecycle: Lifecycle) -> None:
        self.router = Router(lifecycle)
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
