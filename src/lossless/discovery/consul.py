"""Consul: the instance is a service on the local agent, with a TTL (default) or HTTP check.

Calls (Consul agent HTTP API, https://developer.hashicorp.com/consul/api-docs/agent/service):

- register: ``PUT /v1/agent/service/register?replace-existing-checks=true`` with ``ID`` (the
  instance id), ``Name``, ``Address``, ``Port``, ``Meta`` (the instance metadata plus
  ``lossless_instance``, the JSON value of :meth:`Instance.to_json`) and one check:
  ``{"TTL": "10s", "Status": "passing", "DeregisterCriticalServiceAfter": "1m"}`` (``check=ttl``)
  or ``{"HTTP": "http://ADDRESS:PORT/readyz", "Interval": "1s", ...}`` (``check=http``);
- keepalive: ``PUT /v1/agent/check/pass/service:<id>`` (TTL) or ``GET
  /v1/agent/service/<id>`` (HTTP); "unknown check/service" means the agent lost the
  registration (restarted without its data dir) and the runtime re-registers;
- deregister at t0: ``PUT /v1/agent/service/maintenance/<id>?enable=true&reason=...`` first —
  the agent marks the instance critical at once, so ``/v1/health/service/<name>?passing`` and
  DNS drop it even if what follows fails — then ``PUT /v1/agent/service/deregister/<id>``.

The TTL check makes the agent mark a ``kill -9``'d instance critical after ``ttl`` seconds (what
health-filtered callers see) and remove it after ``DeregisterCriticalServiceAfter`` (Consul's
minimum is one minute). ACL token: ``?token=`` in the URL or ``CONSUL_HTTP_TOKEN``, sent as
``X-Consul-Token``.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.parse
from typing import Any

from lossless.discovery.instance import Instance
from lossless.discovery.registrar import RegistryError


class ConsulRegistrar:
    """:class:`~lossless.discovery.registrar.Registrar` for a Consul agent (see the module
    docstring)."""

    kind = "consul"

    def __init__(
        self,
        host: str,
        port: int,
        instance: Instance,
        *,
        check: str = "ttl",
        ttl: float = 10.0,
        deregister_after: str = "1m",
        readiness_path: str = "/readyz",
        token: str | None = None,
    ) -> None:
        if check not in ("ttl", "http"):
            raise ValueError(f"consul check must be 'ttl' or 'http', got {check!r}")
        self.host = host
        self.port = port
        self.instance = instance
        self.check = check
        self.ttl = ttl
        self.deregister_after = deregister_after
        self.readiness_path = readiness_path
        self.token = token
        self.check_id = f"service:{instance.id}"
        self.keepalive_interval = ttl / 3 if check == "ttl" else 1.0
        self.expires_after = ttl if check == "ttl" else 3.0

    def describe(self) -> str:
        return f"consul {self.host}:{self.port} service {self.instance.service}/{self.instance.id}"

    def _request(
        self, method: str, path: str, timeout: float, body: Any = None
    ) -> tuple[int, bytes]:
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["X-Consul-Token"] = self.token
        payload = None if body is None else json.dumps(body).encode()
        conn = http.client.HTTPConnection(self.host, self.port, timeout=max(timeout, 0.001))
        where = f"consul {self.host}:{self.port}"
        try:
            conn.request(method, path, payload, headers)
            resp = conn.getresponse()
            return resp.status, resp.read()
        except TimeoutError:
            raise RegistryError(
                f"{where}: no answer to {method} {path} within {timeout:g} s"
            ) from None
        except OSError as exc:
            raise RegistryError(f"{where} unreachable: {exc}") from None
        except http.client.HTTPException as exc:
            raise RegistryError(f"{where}: {method} {path}: {type(exc).__name__}") from None
        finally:
            conn.close()

    def _expect_ok(self, method: str, path: str, status: int, data: bytes) -> None:
        if status != 200:
            text = data.decode(errors="replace").strip().splitlines()
            raise RegistryError(
                f"consul {self.host}:{self.port}: {method} {path} answered {status}: "
                f"{text[0] if text else ''}"
            )

    def _service_path(self, action: str) -> str:
        return f"/v1/agent/service/{action}/{urllib.parse.quote(self.instance.id, safe='')}"

    def definition(self) -> dict[str, Any]:
        """The body of the register call."""
        inst = self.instance
        check: dict[str, Any] = {
            "CheckID": self.check_id,
            "Name": f"lossless {inst.service}",
            "DeregisterCriticalServiceAfter": self.deregister_after,
        }
        if self.check == "ttl":
            check.update(TTL=f"{self.ttl:g}s", Status="passing")
        else:
            host = f"[{inst.address}]" if ":" in inst.address else inst.address
            check.update(
                HTTP=f"http://{host}:{inst.port}{self.readiness_path}",
                Interval="1s",
                Timeout="1s",
            )
        return {
            "ID": inst.id,
            "Name": inst.service,
            "Address": inst.address,
            "Port": inst.port,
            "Meta": {**inst.metadata, "lossless_instance": inst.to_json().decode()},
            "Check": check,
        }

    def register(self, timeout: float) -> None:
        path = "/v1/agent/service/register?replace-existing-checks=true"
        status, data = self._request("PUT", path, timeout, self.definition())
        self._expect_ok("PUT", path, status, data)

    def keepalive(self, timeout: float) -> bool:
        if self.check == "ttl":
            path = f"/v1/agent/check/pass/{urllib.parse.quote(self.check_id, safe='')}"
            status, data = self._request("PUT", path, timeout)
            text = data.decode(errors="replace").lower()
            if status == 404 or (
                status == 500
                and ("unknown" in text or "not found" in text or "does not have" in text)
            ):
                return False
            self._expect_ok("PUT", path, status, data)
            return True
        path = f"/v1/agent/service/{urllib.parse.quote(self.instance.id, safe='')}"
        status, data = self._request("GET", path, timeout)
        if status == 404:
            return False
        self._expect_ok("GET", path, status, data)
        return True

    def deregister(self, timeout: float) -> None:
        end = time.monotonic() + timeout
        reason = urllib.parse.quote("lossless: draining (t0)")
        path = self._service_path("maintenance") + f"?enable=true&reason={reason}"
        status, data = self._request("PUT", path, timeout)
        if status != 404:  # 404: the agent does not know the service: nothing to hide
            self._expect_ok("PUT", path, status, data)
        path = self._service_path("deregister")
        status, data = self._request("PUT", path, max(0.001, end - time.monotonic()))
        self._expect_ok("PUT", path, status, data)

    def close(self) -> None:
        """Nothing to release: every call uses its own connection."""
