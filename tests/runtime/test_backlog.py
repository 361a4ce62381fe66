"""No connection dies in the accept backlog (gunicorn#3397): at t0 + D the server takes what the
kernel already queued before it closes its listener."""

from __future__ import annotations

import socket
import threading
import time

from tests.runtime.conftest import Server

REQUEST = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"


def _read_answers(socks: list[socket.socket]) -> list[str]:
    """Read each connection's answer; return the failures (anything but 200 with
    Connection: close)."""
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
    return failures


def test_connections_queued_in_the_backlog_at_t0_plus_d_are_served(serve, tmp_path) -> None:
    """1. SIGTERM, D = 3 s 2. during D a request blocks the event loop until the test releases
    it, so nothing is accepted 3. 200 connections are opened and each sends a request: they wait
    in the kernel's accept queue 4. the loop is released after t0 + D. Result: when the loop runs
    again (past t0 + D: the listener closes) every one of them is answered 200 with
    Connection: close; none is reset. (The loop is held by the test, not for a guessed time: the
    connections are queued at t0 + D however late each step gets the CPU.)"""
    from tests.runtime.prod_apps import wait_started

    started, release = tmp_path / "started", tmp_path / "release"
    server: Server = serve(
        "uvicorn",
        "--drain-delay",
        "3",
        "--shutdown-timeout",
        "20",
        target="prod_apps:asgi",
        env={"APP_STARTED_FILE": str(started)},
    )
    server.wait_ready()
    server.signal()
    end = time.monotonic() + 10
    while (draining := server.event("draining")) is None:
        assert time.monotonic() < end, server.stderr()
        time.sleep(0.01)
    t0 = float(draining["ts"]) - float(draining.get("t_plus") or 0)  # type: ignore[arg-type]
    blocker: dict[str, object] = {}

    def block() -> None:
        blocker["answer"] = server.get(f"/block?until={release}")

    thread = threading.Thread(target=block)
    thread.start()
    try:
        wait_started(str(started), 1)  # the loop is blocked from now on
        assert server.event("listeners_closed") is None, "the block began after t0 + D"
        socks = []
        for _ in range(200):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            sock.sendall(REQUEST)
            socks.append(sock)
        while time.time() < t0 + 3 + 0.1:  # past t0 + D while they wait in the queue
            time.sleep(0.01)
    finally:
        release.touch()
    failures = _read_answers(socks)
    thread.join(10)
    assert server.wait_exit(15) == 0, server.stderr()
    assert not failures, f"{len(failures)} of 200 failed, first: {failures[:3]}"
    assert blocker.get("answer") is not None
    # The scenario happened: connections were still queued when the listener closed.
    closed = server.event("listeners_closed")
    assert closed is not None and (closed.get("backlog") or 0) > 0, server.stderr()


def test_gunicorn_worker_takes_its_backlog_before_closing(serve, tmp_path) -> None:
    """--wsgi, one worker that accepts one connection at a time (``worker_connections = 1`` in a
    gunicorn config file): 1. a 4 s request holds that connection 2. 50 connections each send a
    request: the worker does not accept them, so they wait in the kernel's accept queue
    3. SIGTERM, D = 0.5 s. Result: at t0 + D the worker accepts and serves every one of them
    (Connection: close) before closing its listener; none is reset; exit 0. (They are queued
    before the signal: opened after it, they had to beat t0 + D on a loaded machine.)"""
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
    thread = threading.Thread(target=lambda: slow.update(answer=server.get("/slow?s=4")))
    thread.start()
    wait_started(str(started), 1)
    socks = []
    for _ in range(50):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        sock.sendall(REQUEST)
        socks.append(sock)
    server.signal()
    failures = _read_answers(socks)
    thread.join(15)
    assert server.wait_exit(15) == 0, server.stderr()
    assert not failures, f"{len(failures)} of 50 failed, first: {failures[:3]}"
    taken = server.event("backlog_accepted")
    assert taken is not None and int(taken["connections"]) > 0, server.stderr()  # type: ignore[call-overload]
