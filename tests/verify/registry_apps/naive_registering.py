"""A naive service that finds its callers through etcd the way many hand-rolled ones do.

At start it binds ``$PORT``, then registers itself: a lease of ``ttl`` seconds (the ``?ttl=`` of
``LOSSLESS_REGISTRY``, default 10) and the key ``<prefix>/<LOSSLESS_SERVICE_NAME>/
<LOSSLESS_INSTANCE_ID>`` holding ``{"address": ..., "port": ...}``, kept alive every ttl/3 s. It
never deregisters: at SIGTERM it exits at once, its listener and connections close, and the
registration lives on until the lease expires. Callers that route by the registry keep sending
requests to a port nobody listens on for up to ``ttl`` seconds, plus their own cache TTL.

Standard library only (etcd's v3 JSON gateway over ``urllib``), like a service that knows
nothing of ``lossless``. Every request answers 200 ``ok`` (HTTP/1.1 keep-alive).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import threading
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class Etcd:
    def __init__(self, url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        self.base = f"http://{parts.netloc}"
        self.prefix = parts.path.rstrip("/") or "/services"
        self.ttl = int(urllib.parse.parse_qs(parts.query).get("ttl", ["10"])[-1])

    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(
            self.base + path, json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=2) as response:
            answer: dict[str, Any] = json.loads(response.read())
            return answer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = b"ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *a: os._exit(0))  # stop at once: no deregistration
    port = int(os.environ["PORT"])
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    etcd = Etcd(os.environ["LOSSLESS_REGISTRY"])
    service = os.environ["LOSSLESS_SERVICE_NAME"]
    instance = os.environ.get("LOSSLESS_INSTANCE_ID", f"naive-{port}")
    lease = etcd.call("/v3/lease/grant", {"TTL": etcd.ttl})["ID"]
    value = json.dumps({"address": "127.0.0.1", "port": port, "id": instance, "service": service})
    key = f"{etcd.prefix}/{service}/{instance}"
    etcd.call("/v3/kv/put", {"key": _b64(key), "value": _b64(value), "lease": lease})

    def keepalive() -> None:
        stop = threading.Event()
        while not stop.wait(etcd.ttl / 3):
            try:
                etcd.call("/v3/lease/keepalive", {"ID": lease})
            except OSError:
                pass

    threading.Thread(target=keepalive, daemon=True).start()
    print(f"registered {key} with lease {lease} (ttl {etcd.ttl}s)", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
