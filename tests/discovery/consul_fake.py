"""A protocol fake of the Consul agent HTTP API: a real HTTP server on loopback that implements
the documented endpoints the Consul registrar uses, keeps the agent's state the way the docs
describe it, and records every call with its arrival time.

No Consul can be installed here (not in Debian, and its license since 1.17 is the BSL), so this
is what the Consul tests run against. It follows
https://developer.hashicorp.com/consul/api-docs/agent/service and .../agent/check:

- ``PUT /v1/agent/service/register[?replace-existing-checks=true]``: body ``ID`` (default
  ``Name``), ``Name`` (required, else 400), ``Address``, ``Port``, ``Meta``, ``Check`` (``TTL``
  with optional initial ``Status``, default critical; or ``HTTP`` + ``Interval``); the
  embedded check's ID defaults to ``service:<ID>``.
- ``PUT /v1/agent/service/deregister/:id``: removes the service and its checks; unknown ids are
  no-ops (200), as documented.
- ``PUT /v1/agent/service/maintenance/:id?enable=true|false&reason=``: adds/removes the critical
  ``_service_maintenance:<id>`` check; ``enable`` is required (400), unknown id → 404.
- ``PUT /v1/agent/check/pass/:check_id``: TTL pass; unknown check → 404 (Consul ≥ 1.11; older
  agents answered 500 with "Unknown check", which the registrar also accepts).
- ``GET /v1/agent/service/:id`` (404 when unknown), ``GET /v1/agent/services``,
  ``GET /v1/health/service/:name?passing``: the instances whose checks all pass (a TTL check
  not passed within its TTL is critical).

Not modelled: ACLs (the token header is only recorded), blocking queries, anti-entropy with
servers, ``DeregisterCriticalServiceAfter`` reaping.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclasses.dataclass
class Call:
    at: float  # time.time() on arrival
    method: str
    path: str
    query: dict[str, str]
    body: Any
    token: str | None


def _duration(text: str) -> float:
    for suffix, scale in (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * scale
    return float(text)


class ConsulFake:
    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.services: dict[str, dict[str, Any]] = {}
        self.checks: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        self.hang = threading.Event()  # set: every call blocks (an agent that stopped answering)
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                fake._handle(self, "GET")

            def do_PUT(self) -> None:
                fake._handle(self, "PUT")

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that gave up on a hung call: nothing to report

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"consul://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.hang.clear()
        self.server.shutdown()
        self.server.server_close()

    def restart(self) -> None:
        """An agent restarted without its data dir: every local service is forgotten."""
        with self.lock:
            self.services.clear()
            self.checks.clear()

    def calls_to(self, prefix: str) -> list[Call]:
        return [c for c in list(self.calls) if c.path.startswith(prefix)]

    # -- the agent --------------------------------------------------------------------------------
    def _handle(self, req: BaseHTTPRequestHandler, method: str) -> None:
        parts = urllib.parse.urlsplit(req.path)
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(parts.query, True).items()}
        length = int(req.headers.get("Content-Length") or 0)
        raw = req.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        self.calls.append(
            Call(
                time.time(),
                method,
                urllib.parse.unquote(parts.path),
                query,
                body,
                req.headers.get("X-Consul-Token"),
            )
        )
        end = time.monotonic() + 30
        while self.hang.is_set() and time.monotonic() < end:
            time.sleep(0.01)
        with self.lock:
            status, answer = self._route(method, urllib.parse.unquote(parts.path), query, body)
        data = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
        req.send_response(status)
        req.send_header("Content-Type", "application/json" if status == 200 else "text/plain")
        req.send_header("Content-Length", str(len(data)))
        req.end_headers()
        req.wfile.write(data)

    def _route(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        p = "/v1/agent/service/"
        if method == "PUT" and path == p + "register":
            return self._register(body or {}, "replace-existing-checks" in query)
        if method == "PUT" and path.startswith(p + "deregister/"):
            sid = path[len(p + "deregister/") :]
            self.services.pop(sid, None)
            for cid in [c for c, chk in self.checks.items() if chk["ServiceID"] == sid]:
                del self.checks[cid]
            return 200, b""
        if method == "PUT" and path.startswith(p + "maintenance/"):
            sid = path[len(p + "maintenance/") :]
            if "enable" not in query:
                return 400, b"Missing value for enable"
            if sid not in self.services:
                return 404, f"Unknown service ID {sid!r}".encode()
            cid = f"_service_maintenance:{sid}"
            if query["enable"] == "true":
                self.checks[cid] = {
                    "CheckID": cid,
                    "ServiceID": sid,
                    "Status": "critical",
                    "Notes": query.get("reason", "Maintenance mode is enabled for this service"),
                }
            else:
                self.checks.pop(cid, None)
            return 200, b""
        if method == "PUT" and path.startswith("/v1/agent/check/pass/"):
            cid = path[len("/v1/agent/check/pass/") :]
            check = self.checks.get(cid)
            if check is None or "TTL" not in check:
                return 404, f'CheckID "{cid}" does not have associated TTL'.encode()
            check["Status"], check["passed_at"] = "passing", time.monotonic()
            return 200, b""
        if method == "GET" and path == "/v1/agent/services":
            return 200, self.services
        if method == "GET" and path.startswith(p):
            sid = path[len(p) :]
            if sid not in self.services:
                return 404, b"unknown service ID"
            return 200, self.services[sid]
        if method == "GET" and path.startswith("/v1/health/service/"):
            name = path[len("/v1/health/service/") :]
            out = []
            for sid, svc in self.services.items():
                if svc["Service"] != name:
                    continue
                checks = [self._status(c) for c in self.checks.values() if c["ServiceID"] == sid]
                if "passing" in query and any(s != "passing" for s in checks):
                    continue
                out.append({"Service": svc, "Checks": checks})
            return 200, out
        return 404, b"no such endpoint in the fake"

    def _register(self, body: dict[str, Any], replace: bool) -> tuple[int, Any]:
        if not body.get("Name"):
            return 400, b"Missing service name"
        sid = body.get("ID") or body["Name"]
        self.services[sid] = {
            "ID": sid,
            "Service": body["Name"],
            "Address": body.get("Address", ""),
            "Port": body.get("Port", 0),
            "Meta": body.get("Meta") or {},
        }
        if replace:
            for cid in [c for c, chk in self.checks.items() if chk["ServiceID"] == sid]:
                if not cid.startswith("_service_maintenance:"):
                    del self.checks[cid]
        check = body.get("Check")
        if check:
            cid = check.get("CheckID") or f"service:{sid}"
            entry: dict[str, Any] = {"CheckID": cid, "ServiceID": sid, **check}
            if "TTL" in check:
                entry["Status"] = check.get("Status", "critical")
                entry["passed_at"] = time.monotonic()
            else:
                entry["Status"] = "passing"  # the fake does not poll HTTP checks
            self.checks[cid] = entry
        return 200, b""

    @staticmethod
    def _status(check: dict[str, Any]) -> str:
        expired = time.monotonic() - check.get("passed_at", 0.0) > _duration(check.get("TTL", "0"))
        if "TTL" in check and check["Status"] == "passing" and expired:
            return "critical"
        return str(check["Status"])
