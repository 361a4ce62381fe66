"""A purpose-built misbehaving HTTP/1.1 server, and helpers for the load generator's tests.

Run as a script (``python misbehaving.py``) it listens on a free 127.0.0.1 port, prints the port
on its first stdout line, and serves each request according to its path:

=================  ===========================================================================
``/ok``            200, ``Content-Length``, keep-alive
``/eof-body``      200 without ``Content-Length`` (body delimited by closing): complete
``/replica``       200 with ``x-lossless-replica: proxied-7`` (what a proxy in front reports)
``/echo-seq``      200 with ``x-lossless-replica: seq-<the request's x-lossless-seq>``
``/echo-request``  reads the body (``Content-Length``), 200 with ``x-lossless-replica:
                   <method>-<body bytes>-<x-test header>``
``/conn-close``    200 with ``Connection: close``, then closes
``/idle-close``    200 keep-alive, then closes the connection 50 ms later if it stays idle
``/reset``         reads the request, then RST (``SO_LINGER`` 0) without answering
``/close``         reads the request, then closes (FIN) without answering
``/truncate``      200 with ``Content-Length: 100`` and only 10 body bytes, then closes
``/chunk-cut``     200 chunked, one chunk, then closes before the last chunk
``/502`` ...       that status (any 3-digit code), with a body
``/hang``          never answers (until the client goes away)
``/delay/S``       answers 200 after S seconds (``/delay/1`` is a 1 s stall)
=================  ===========================================================================

The server is a real separate process (threads per connection), so timing-sensitive tests are not
disturbed by the GIL of the test process. :func:`serve` starts and stops it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import select
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

from lossless.verify.model import Endpoint


# -- the server (runs in its own process) ----------------------------------------------------
def _read_head(conn: socket.socket, buf: bytearray) -> bytes | None:
    """One request head from ``conn`` (``None`` at EOF); leftover bytes stay in ``buf``."""
    while b"\r\n\r\n" not in buf:
        try:
            chunk = conn.recv(65536)
        except OSError:
            return None
        if not chunk:
            return None
        buf += chunk
    end = buf.index(b"\r\n\r\n") + 4
    head = bytes(buf[:end])
    del buf[:end]
    return head


def _response(status: int, body: bytes, extra: str = "") -> bytes:
    return f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


def _echo_request(conn: socket.socket, head: bytes, buf: bytearray) -> bytes:
    """Read the request's body; answer with what was received in x-lossless-replica."""
    fields = dict(line.split(b":", 1) for line in head.lower().split(b"\r\n")[1:] if b":" in line)
    length = int(fields.get(b"content-length", b"0").strip() or 0)
    while len(buf) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        buf += chunk
    body = bytes(buf[:length])
    del buf[:length]
    method = head.split(b" ", 1)[0].decode()
    test = fields.get(b"x-test", b"").strip().decode()
    return _response(200, b"ok", f"x-lossless-replica: {method}-{len(body)}-{test}\r\n")


def _handle(conn: socket.socket) -> None:
    buf = bytearray()
    with conn:
        while True:
            head = _read_head(conn, buf)
            if head is None:
                return
            path = head.split(b" ", 2)[1].decode()
            close_requested = b"\r\nconnection: close\r\n" in head.lower()
            if path == "/ok":
                conn.sendall(_response(200, b"ok"))
            elif path == "/echo-request":
                conn.sendall(_echo_request(conn, head, buf))
            elif path == "/replica":
                conn.sendall(_response(200, b"ok", "x-lossless-replica: proxied-7\r\n"))
            elif path == "/echo-seq":
                seq = next(
                    line.split(b":", 1)[1].strip().decode()
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"x-lossless-seq:")
                )
                conn.sendall(_response(200, b"ok", f"x-lossless-replica: seq-{seq}\r\n"))
            elif path == "/eof-body":
                conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + b"x" * 50)
                return
            elif path == "/conn-close":
                conn.sendall(_response(200, b"ok", "Connection: close\r\n"))
                return
            elif path == "/idle-close":
                conn.sendall(_response(200, b"ok"))
                readable, _, _ = select.select([conn], [], [], 0.05)
                if not readable:
                    return
            elif path == "/reset":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return
            elif path == "/close":
                return
            elif path == "/truncate":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
                return
            elif path == "/chunk-cut":
                conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
                return
            elif path == "/hang":
                with contextlib.suppress(OSError):
                    while conn.recv(65536):
                        pass
                return
            elif path.startswith("/delay/"):
                time.sleep(float(path.removeprefix("/delay/")))
                conn.sendall(_response(200, b"ok"))
            elif len(path) == 4 and path[1:].isdigit():
                conn.sendall(_response(int(path[1:]), b"status body"))
            else:
                conn.sendall(_response(404, b"unknown mode"))
            if close_requested:
                return


def _serve_forever() -> None:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    print(listener.getsockname()[1], flush=True)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=_handle, args=(conn,), daemon=True).start()


# -- helpers for tests ----------------------------------------------------------------------------
@contextlib.contextmanager
def serve() -> Iterator[int]:
    """Start the misbehaving server in its own process; yield its port; kill it after."""
    proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.strip().isdigit():
            raise RuntimeError(f"misbehaving server did not start (printed {line!r})")
        yield int(line)
    finally:
        proc.kill()
        proc.wait(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()


def free_port() -> int:
    """A port nothing listens on (bound then released): connecting to it is refused, unless
    another process binds it meanwhile; :func:`refusing_port` holds it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def refusing_port() -> Iterator[int]:
    """A port that refuses every connection while the block runs: bound by this process and
    not listening (a SYN to it gets a RST), so no other process can take it meanwhile (a port
    bound then released, as :func:`free_port`, may be re-bound by another test's server)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])


@contextlib.contextmanager
def full_backlog() -> Iterator[int]:
    """A listener that never accepts and whose accept queue is full, so a further ``connect()``
    gets no SYN-ACK (Linux drops the SYN) and times out. Yields its port."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers: list[socket.socket] = []
    try:
        for _ in range(8):  # the queue holds backlog + 1; be generous, stop when it blocks
            s = socket.socket()
            s.setblocking(False)
            fillers.append(s)
            with contextlib.suppress(BlockingIOError):
                s.connect(("127.0.0.1", port))
            _, writable, _ = select.select([], [s], [], 0.2)
            if not writable:
                break
        yield port
    finally:
        for s in fillers:
            s.close()
        listener.close()


@dataclasses.dataclass
class StaticView:
    """An :class:`~lossless.verify.model.EndpointView` over a fixed (mutable) endpoint list;
    ``pick`` cycles through it, ``None`` when empty."""

    endpoints: list[Endpoint]
    clients: int = 1
    picks: int = 0

    def __post_init__(self) -> None:
        self._cycle = itertools.count()

    def pick(self, client: int) -> Endpoint | None:
        self.picks += 1
        if not self.endpoints:
            return None
        return self.endpoints[next(self._cycle) % len(self.endpoints)]


if __name__ == "__main__":
    _serve_forever()
