"""A small etcd v3 client (JSON gateway over HTTP/1.1): key-value, leases and watches.

Shared by service discovery (:mod:`lossless.discovery.etcd`, the runtime registers instances)
and the ``registry`` traffic model of ``lossless verify`` (clients watch the registry). It lives
at the package root so that neither drags the other's dependencies in: it imports only the
standard library and :mod:`lossless.errors`.

Transport: etcd's v3 JSON gRPC gateway over plain HTTP/1.1 (``/v3/lease/grant``,
``/v3/lease/keepalive``, ``/v3/lease/revoke``, ``/v3/kv/put``, ``/v3/kv/range``,
``/v3/kv/deleterange``, ``/v3/watch``; keys and values base64), with the standard library's
``http.client``. The ``etcd3`` package from PyPI is not used: it has not been released since
2020 and pins an old protobuf, which conflicts with what other libraries (grpcio tooling,
opentelemetry) need; the gateway is part of etcd itself (3.3+, ``/v3/`` since 3.4) and needs
no dependency. One connection per call keeps the client thread-safe and immune to a restarted
server's stale sockets; on loopback a connection costs well under a millisecond.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

from lossless.errors import RegistryError

#: gRPC status code the gateway returns for an unknown lease.
_NOT_FOUND = 5


def _b64(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return base64.b64encode(raw).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)


def prefix_end(prefix: str | bytes) -> bytes:
    """The ``range_end`` that selects every key starting with ``prefix`` (etcd's convention:
    the prefix with its last byte below 0xff incremented and what follows dropped)."""
    raw = bytearray(prefix.encode() if isinstance(prefix, str) else prefix)
    while raw:
        if raw[-1] < 0xFF:
            raw[-1] += 1
            return bytes(raw)
        raw.pop()
    return b"\0"  # every key


class EtcdClient:
    """A minimal etcd v3 client over the JSON gateway. Thread-safe (a connection per call).

    ``endpoints`` is a list of ``(host, port)``; a call that cannot connect to one tries the
    next. Every method raises :class:`RegistryError` (one line, naming the endpoint) on a
    connection failure, a timeout or an error answer other than "lease not found".
    """

    def __init__(self, endpoints: list[tuple[str, int]]) -> None:
        if not endpoints:
            raise ValueError("no etcd endpoint")
        self.endpoints = endpoints

    def describe(self) -> str:
        return ",".join(f"{host}:{port}" for host, port in self.endpoints)

    # -- plumbing ------------------------------------------------------------------------------
    def _post(self, path: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
        payload = json.dumps(body).encode()
        errors: list[str] = []
        for host, port in self.endpoints:
            conn = http.client.HTTPConnection(host, port, timeout=max(timeout, 0.001))
            try:
                conn.request("POST", path, payload, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                data = resp.read()
            except TimeoutError:
                errors.append(f"etcd {host}:{port}: no answer to {path} within {timeout:g} s")
                continue
            except OSError as exc:
                errors.append(f"etcd {host}:{port} unreachable: {exc}")
                continue
            except http.client.HTTPException as exc:
                errors.append(f"etcd {host}:{port}: {path}: {type(exc).__name__}: {exc}")
                continue
            finally:
                conn.close()
            try:
                answer: dict[str, Any] = json.loads(data) if data else {}
            except ValueError:
                raise RegistryError(
                    f"etcd {host}:{port}: {path} answered HTTP {resp.status} with non-JSON"
                ) from None
            if resp.status >= 400 or "error" in answer:
                answer.setdefault("code", -1)
                answer["_http_status"] = resp.status
                answer["_endpoint"] = f"{host}:{port}"
            return answer
        raise RegistryError("; ".join(errors))

    @staticmethod
    def _raise_for(answer: dict[str, Any], path: str) -> None:
        if "_http_status" in answer:
            message = answer.get("message") or answer.get("error") or "error"
            raise RegistryError(
                f"etcd {answer['_endpoint']}: {path} failed (HTTP {answer['_http_status']}): "
                f"{message}"
            )

    # -- leases --------------------------------------------------------------------------------
    def grant(self, ttl: int, timeout: float) -> int:
        """Grant a lease of ``ttl`` seconds; return its ID."""
        answer = self._post("/v3/lease/grant", {"TTL": ttl}, timeout)
        self._raise_for(answer, "/v3/lease/grant")
        if answer.get("error"):
            raise RegistryError(f"etcd: lease grant refused: {answer['error']}")
        return int(answer["ID"])

    def keepalive(self, lease: int, timeout: float) -> int:
        """Refresh ``lease``; return its new TTL, 0 when etcd no longer knows it."""
        answer = self._post("/v3/lease/keepalive", {"ID": str(lease)}, timeout)
        self._raise_for(answer, "/v3/lease/keepalive")
        result = answer.get("result", answer)
        return int(result.get("TTL", 0))

    def revoke(self, lease: int, timeout: float) -> bool:
        """Revoke ``lease`` and delete its keys; ``False`` when it was already gone."""
        answer = self._post("/v3/lease/revoke", {"ID": str(lease)}, timeout)
        if answer.get("code") == _NOT_FOUND:
            return False
        self._raise_for(answer, "/v3/lease/revoke")
        return True

    # -- keys ----------------------------------------------------------------------------------
    def put(self, key: str, value: bytes, timeout: float, *, lease: int = 0) -> int:
        """Put ``key``; return the revision of the write."""
        body: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        if lease:
            body["lease"] = str(lease)
        answer = self._post("/v3/kv/put", body, timeout)
        self._raise_for(answer, "/v3/kv/put")
        return int(answer.get("header", {}).get("revision", 0))

    def delete(self, key: str, timeout: float) -> int:
        """Delete ``key``; return how many keys were deleted."""
        answer = self._post("/v3/kv/deleterange", {"key": _b64(key)}, timeout)
        self._raise_for(answer, "/v3/kv/deleterange")
        return int(answer.get("deleted", 0))

    def get_prefix(self, prefix: str, timeout: float) -> tuple[dict[str, bytes], int]:
        """Every key under ``prefix`` with its value, and the store revision of the read."""
        body = {"key": _b64(prefix), "range_end": _b64(prefix_end(prefix))}
        answer = self._post("/v3/kv/range", body, timeout)
        self._raise_for(answer, "/v3/kv/range")
        kvs = {
            _unb64(kv["key"]).decode(): _unb64(kv.get("value", "")) for kv in answer.get("kvs", [])
        }
        return kvs, int(answer.get("header", {}).get("revision", 0))

    def get(self, key: str, timeout: float) -> tuple[bytes, int] | None:
        """``(value, lease)`` of ``key``, or ``None`` when it does not exist."""
        answer = self._post("/v3/kv/range", {"key": _b64(key)}, timeout)
        self._raise_for(answer, "/v3/kv/range")
        kvs = answer.get("kvs", [])
        if not kvs:
            return None
        return _unb64(kvs[0].get("value", "")), int(kvs[0].get("lease", 0))

    def watch(self, prefix: str, *, start_revision: int = 0, timeout: float = 2.0) -> Watch:
        """Open a watch on every key under ``prefix`` (from ``start_revision`` when given)."""
        body: dict[str, Any] = {"key": _b64(prefix), "range_end": _b64(prefix_end(prefix))}
        if start_revision:
            body["start_revision"] = str(start_revision)
        host, port = self.endpoints[0]
        errors: list[str] = []
        for host, port in self.endpoints:
            try:
                return Watch(host, port, {"create_request": body}, timeout)
            except RegistryError as exc:
                errors.append(str(exc))
        raise RegistryError("; ".join(errors))


class WatchEvent(tuple[str, str, bytes, int]):
    """``(type, key, value, revision)``; ``type`` is ``PUT`` or ``DELETE``."""

    __slots__ = ()

    @property
    def type(self) -> str:
        return self[0]

    @property
    def key(self) -> str:
        return self[1]

    @property
    def value(self) -> bytes:
        return self[2]

    @property
    def revision(self) -> int:
        return self[3]


class Watch:
    """A streaming ``/v3/watch``: iterate to receive events as they happen; :meth:`close` from
    any thread ends the iteration. Iteration raises :class:`RegistryError` when the stream
    breaks (etcd stopped) or etcd cancels the watch (compacted revision)."""

    def __init__(self, host: str, port: int, request: dict[str, Any], timeout: float) -> None:
        self.endpoint = f"{host}:{port}"
        self._conn = http.client.HTTPConnection(host, port, timeout=timeout)
        self._closed = threading.Event()
        try:
            self._conn.request(
                "POST", "/v3/watch", json.dumps(request), {"Content-Type": "application/json"}
            )
            self._resp = self._conn.getresponse()
            if self._resp.status != 200:
                raise RegistryError(
                    f"etcd {self.endpoint}: watch refused: HTTP {self._resp.status}"
                )
            first = self._next_message()
            if first is None or not first.get("created"):
                raise RegistryError(f"etcd {self.endpoint}: watch not created: {first}")
        except (OSError, http.client.HTTPException) as exc:
            self._conn.close()
            raise RegistryError(f"etcd {self.endpoint}: watch failed: {exc}") from None
        except RegistryError:
            self._conn.close()
            raise
        if self._conn.sock is not None:
            self._conn.sock.settimeout(None)  # block until an event or close()

    def _next_message(self) -> dict[str, Any] | None:
        line = self._resp.readline()
        if not line:
            return None
        message: dict[str, Any] = json.loads(line)
        if "error" in message:
            raise RegistryError(f"etcd {self.endpoint}: watch error: {message['error']}")
        result: dict[str, Any] = message.get("result", {})
        return result

    def __iter__(self) -> Iterator[WatchEvent]:
        while not self._closed.is_set():
            try:
                result = self._next_message()
            except Exception as exc:  # OSError, bad JSON, or http.client racing close()
                if self._closed.is_set():
                    return
                raise RegistryError(f"etcd {self.endpoint}: watch stream broken: {exc}") from None
            if result is None:
                if self._closed.is_set():
                    return
                raise RegistryError(f"etcd {self.endpoint}: watch stream ended")
            if result.get("canceled"):
                raise RegistryError(
                    f"etcd {self.endpoint}: watch canceled: {result.get('cancel_reason', '')}"
                    f" (compact revision {result.get('compact_revision', '?')})"
                )
            for event in result.get("events", []):
                kv = event.get("kv", {})
                yield WatchEvent(
                    (
                        event.get("type", "PUT"),
                        _unb64(kv.get("key", "")).decode(),
                        _unb64(kv.get("value", "")),
                        int(kv.get("mod_revision", 0)),
                    )
                )

    def close(self) -> None:
        """End the stream (idempotent; safe from another thread)."""
        self._closed.set()
        sock = self._conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._conn.close()
