"""Readiness checks on a child we cannot change: an HTTP GET, or a TCP connect to its port.

Both follow Kubernetes' probe semantics: HTTP 200-399 passes, anything else (another status, a
refused connection, a timeout) fails with a one-line reason. Each runs in the lifecycle's
background checker, bounded by the check timeout, so ``/readyz`` never waits on the child.
"""

from __future__ import annotations

import http.client
import socket
import urllib.parse
from collections.abc import Callable

from lossless.errors import LosslessError


def parse_http_target(value: str, port: int | None) -> tuple[str, int, str, bool]:
    """``URL`` or ``/path`` (then on 127.0.0.1:``port``) → (host, port, path+query, https)."""
    if value.startswith("/"):
        if port is None:
            raise LosslessError(f"--health-url {value!r} is a path: give the child's --port too")
        return "127.0.0.1", port, value, False
    parsed = urllib.parse.urlsplit(value)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise LosslessError(f"--health-url {value!r} must be http(s)://HOST[:PORT]/PATH or /PATH")
    try:
        target_port = parsed.port or (443 if parsed.scheme == "https" else 80)
    except ValueError:
        raise LosslessError(f"--health-url {value!r} has an invalid port") from None
    path = (parsed.path or "/") + (f"?{parsed.query}" if parsed.query else "")
    return parsed.hostname, target_port, path, parsed.scheme == "https"


def parse_tcp_target(value: str, port: int | None) -> tuple[str, int]:
    """``PORT``, ``HOST:PORT`` or ``-`` (the child's ``--port``) → (host, port)."""
    if value == "-":
        if port is None:
            raise LosslessError("--health-tcp - needs the child's --port")
        return "127.0.0.1", port
    host, sep, raw = value.rpartition(":")
    if not sep:
        host, raw = "127.0.0.1", value
    try:
        number = int(raw)
    except ValueError:
        raise LosslessError(f"--health-tcp {value!r} must be PORT or HOST:PORT") from None
    if not 0 < number < 65536:
        raise LosslessError(f"--health-tcp {value!r}: port out of range")
    return host.strip("[]") or "127.0.0.1", number


def http_check(host: str, port: int, path: str, https: bool, timeout: float) -> Callable[[], str]:
    """A check that GETs ``path`` and passes on 200-399."""
    label = f"{'https' if https else 'http'}://{host}:{port}{path}"

    def check() -> str:
        cls = http.client.HTTPSConnection if https else http.client.HTTPConnection
        conn = cls(host, port, timeout=timeout)
        try:
            conn.request("GET", path, headers={"User-Agent": "lossless-run", "Connection": "close"})
            resp = conn.getresponse()
            resp.read(65536)
        except OSError as exc:
            raise RuntimeError(f"GET {label}: {exc.strerror or exc}") from None
        finally:
            conn.close()
        if not 200 <= resp.status < 400:
            raise RuntimeError(f"GET {label}: HTTP {resp.status}")
        return f"HTTP {resp.status}"

    return check


def tcp_check(host: str, port: int, timeout: float) -> Callable[[], str]:
    """A check that passes when a TCP connection to ``host:port`` opens."""

    def check() -> str:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
        except OSError as exc:
            raise RuntimeError(f"connect {host}:{port}: {exc.strerror or exc}") from None
        return "ok"

    return check
