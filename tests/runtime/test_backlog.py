"""No connection dies in the accept backlog (gunicorn#3397): at t0 + D the server takes what the
kernel already queued before it closes its listener."""

from __future__ import annotations

import socket
import threading
import time

from tests.runtime.conftest import Server

REQUEST = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"


def test_connections_queued_in_the_backlog_at_t0_plus_d_are_served(serve) -> None:
    """1. SIGTERM, D = 1 s 2. at ~t0 + 0.75 s a request blocks the event loop for 0.5 s, so
    nothing is accepted 3. in the last moments before t0 + D, 200 connections are opened and
    each sends a request: they wait in the kernel's accept queue. Result: when the loop runs
    again (after t0 + D, when the listener closes) every one of them is answered 200 with
    Connection: close; none is reset."""
    server: Server = serve(
        "uvicorn", "--drain-delay", "1", "--shutdown-timeout", "10", target="prod_apps:asgi"
    )
    server.wait_ready()
    t0 = server.signal()
    blocker: dict[str, object] = {}

    def block() -> None:
        blocker["answer"] = server.get("/block?s=0.5")

    while time.monotonic() < t0 + 0.75:
        time.sleep(0.01)
    thread = threading.Thread(target=block)
    thread.start()
    while time.monotonic() < t0 + 0.95:  # the loop is blocked from ~t0+0.75 to ~t0+1.25
        time.sleep(0.002)
    socks = []
    for _ in range(200):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        sock.sendall(REQUEST)
        socks.append(sock)
    opened_by = time.monotonic()
    failures = []
    for i, sock in enumerate(socks):
        data = b""
        try:
            while b"hello" not in data:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
        except OSError as exc:
            failures.append(f"{i}: {exc!r}")
            continue
        finally:
            sock.close()
        if not data.startswith(b"HTTP/1.1 200") or b"connection: close" not in data.lower():
            failures.append(f"{i}: {data[:80]!r}")
    thread.join(10)
    assert server.wait_exit(15) == 0, server.stderr()
    assert not failures, f"{len(failures)} of 200 failed, first: {failures[:3]}"
    # The scenario happened: connections opened before t0 + D were still queued when it came.
    assert opened_by < t0 + 1.25 + 0.5
    closed = server.event("listeners_closed")
    assert closed is not None and (closed.get("backlog") or 0) > 0, server.stderr()


def test_gunicorn_worker_takes_its_backlog_before_closing(serve, tmp_path) -> None:
    """--wsgi, one worker that accepts one connection at a time (``worker_connections = 1`` in a
    gunicorn config file): 1. a 2 s request holds that connection 2. SIGTERM, D = 0.5 s
    3. during D, 50 connections each send a request: the worker does not accept them, so they
    wait in the kernel's accept queue. Result: at t0 + D the worker accepts and serves every one
    of them (Connection: close) before closing its listener; none is reset; exit 0."""
    from tests.runtime.prod_apps import wait_started

    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text("worker_connections = 1\n")
    started = tmp_path / "started"
    server: Server = serve(
        "gunicorn",
        "-c",
        str(conf),
        "--workers",
        "1",
        "--drain-delay",
        "0.5",
        "--shutdown-timeout",
        "10",
        target="prod_apps:wsgi",
        env={"APP_STARTED_FILE": str(started)},
    )
    server.wait_ready()
    slow: dict[str, object] = {}
    thread = threading.Thread(target=lambda: slow.update(answer=server.get("/slow?s=2")))
    thread.start()
    wait_started(str(started), 1)
    server.signal()
    socks = []
    for _ in range(50):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        sock.sendall(REQUEST)
        socks.append(sock)
    failures = []
    for i, sock in enumerate(socks):
        data = b""
        try:
            while b"hello" not in data:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
        except OSError as exc:
            failures.append(f"{i}: {exc!r}")
            continue
        finally:
            sock.close()
        if not data.startswith(b"HTTP/1.1 200") or b"connection: close" not in data.lower():
            failures.append(f"{i}: {data[:80]!r}")
    thread.join(15)
    assert server.wait_exit(15) == 0, server.stderr()
    assert not failures, f"{len(failures)} of 50 failed, first: {failures[:3]}"
    taken = server.event("backlog_accepted")
    assert taken is not None and int(taken["connections"]) > 0, server.stderr()  # type: ignore[call-overload]
