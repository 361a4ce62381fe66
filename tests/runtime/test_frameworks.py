"""The middleware inside real frameworks. ASGI apps run under plain uvicorn (the middleware works
under any ASGI server); WSGI apps under ``lossless serve --wsgi`` (gunicorn, 2 workers)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from tests.conftest import free_port
from tests.runtime.conftest import HERE, ROOT, Server


def _wait_in_flight(server: Server, timeout: float = 10) -> None:
    """Wait until the server (started with ``--metrics-path /metrics``, one process serving)
    reports a request in flight."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if b"lossless_in_flight_requests 1.0" in server.get("/metrics")[2]:
            return
        time.sleep(0.02)
    raise AssertionError(f"no request in flight: {server.stderr()}")


def _wait_code(server: Server, path: str, status: int, timeout: float = 10) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if server.get(path)[0] == status:
            return
        time.sleep(0.02)
    raise AssertionError(f"{path} never answered {status}: {server.stderr()}")


@pytest.mark.parametrize("factory", ["starlette_app", "fastapi_app"])
def test_asgi_frameworks_under_plain_uvicorn(factory: str) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOSSLESS_")}
    env["PYTHONPATH"] = f"{ROOT}:{HERE}"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            f"framework_apps:{factory}",
            "--factory",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env=env,
        cwd=HERE,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = Server.__new__(Server)
    server.port = port
    server.proc = proc
    server.lines = []
    try:
        server.wait_ready()
        status, headers, body = server.get("/")
        assert (status, body) == (200, b"hello") and headers.get("connection") != "close"
        status, _h, body = server.get("/readyz?verbose")
        assert status == 200 and b"[+]startup ok" in body
        assert server.get("/livez?verbose")[2].count(b"[+]event_loop ok") == 1
        out: dict[str, object] = {}

        def slow() -> None:
            out["resp"] = server.get("/slow")

        thread = threading.Thread(target=slow)
        thread.start()
        time.sleep(0.2)
        server.get("/drain")  # drain() from code, under a server that knows nothing of it
        assert server.get("/readyz")[0] == 503
        assert server.get("/livez")[0] == 200
        status, headers, _b = server.get("/")
        assert status == 200 and headers.get("connection") == "close"
        thread.join(5)
        assert out["resp"][0] == 200  # type: ignore[index]
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


@pytest.mark.parametrize("factory", ["flask_app", "django_app"])
def test_wsgi_frameworks_under_lossless_serve(serve, factory: str) -> None:
    """1. a slow request in flight 2. SIGTERM, D = 30 s 3. a second SIGTERM once the checks
    are done. Result: readiness 503, a new request answered with Connection: close, the slow one
    answered 200, exit 0. (One worker, whose metrics show the request in flight; waits instead
    of 0.2 s sleeps, and a D long enough for the checks however late they run.)"""
    server: Server = serve(
        "gunicorn",
        "--workers",
        "1",
        "--drain-delay",
        "30",
        "--shutdown-timeout",
        "60",
        "--metrics-path",
        "/metrics",
        "--factory",
        target=f"framework_apps:{factory}",
    )
    server.wait_ready()
    assert server.get("/")[2] == b"hello"
    out: dict[str, object] = {}

    def slow() -> None:
        out["resp"] = server.get("/slow")

    thread = threading.Thread(target=slow)
    thread.start()
    _wait_in_flight(server)
    server.signal()
    _wait_code(server, "/readyz", 503)
    status, headers, body = server.get("/")
    assert (status, body) == (200, b"hello") and headers.get("connection") == "close"
    assert server.event("listeners_closed") is None  # still within D
    server.signal()
    thread.join(10)
    assert out["resp"][0] == 200  # type: ignore[index]
    assert server.wait_exit(10) == 0


@pytest.mark.parametrize("preload", [False, True])
def test_wsgi_app_is_imported_in_each_worker_unless_preloaded(serve, preload: bool) -> None:
    """Like gunicorn: without ``--preload`` each worker imports the app after the fork, so a
    thread started at import runs in the worker that serves; ``--preload`` imports it once in
    the master (its threads do not survive the fork). Both drain the same way."""
    extra = ["--preload"] if preload else []
    server: Server = serve("gunicorn", *extra, target="import_time_app:app")
    server.wait_ready()
    imported_in, serving, alive = server.get("/import")[2].decode().split()
    if preload:
        assert imported_in != serving and alive == "False"
    else:
        assert imported_in == serving and alive == "True"
    server.signal()
    assert server.wait_exit(10) == 0


def test_wsgi_app_that_fails_to_import_in_the_worker_is_a_one_line_error(serve) -> None:
    server: Server = serve("gunicorn", target="import_time_app:missing")
    assert server.wait_exit(30) != 0
    assert "Traceback" not in "\n".join(server.lines)
    assert any(
        "lossless serve: module 'import_time_app' has no attribute 'missing'" in line
        for line in server.lines
    ), server.stderr()


#: factory -> whether the framework routes relative to ``root_path`` (Falcon and Sanic route on
#: the full path, so they run without one here).
ASGI_FRAMEWORKS = {
    "starlette_app": True,
    "fastapi_app": True,
    "quart_app": True,
    "litestar_app": True,
    "falcon_asgi_app": False,
    "sanic_app": False,
    "django_asgi_app": True,
}


@pytest.mark.parametrize("factory", list(ASGI_FRAMEWORKS))
def test_asgi_frameworks_under_lossless_serve_with_a_root_path(serve, factory: str) -> None:
    """1. each framework adds the middleware itself, and ``lossless serve`` adds it again, with
    ``--root-path /svc --proxy-headers`` (the app is mounted under /svc by a proxy that strips
    the prefix; the kubelet probes the pod at /readyz) 2. a slow request, then SIGTERM.
    Result: probes answer (uvicorn puts the root path in ``scope["path"]``), the app answers,
    readiness turns 503 and responses carry ``Connection: close`` during D, the slow request
    completes, nothing is logged as an error, exit 0."""
    root = ["--root-path", "/svc"] if ASGI_FRAMEWORKS[factory] else []
    server: Server = serve(
        "uvicorn",
        *root,
        "--proxy-headers",
        "--drain-delay",
        "30",  # ended by a second SIGTERM: long, so the checks land inside it however late
        "--shutdown-timeout",
        "60",
        "--metrics-path",
        "/metrics",
        "--factory",
        target=f"framework_apps:{factory}",
    )
    server.wait_ready()
    for probe in ("/livez", "/startupz"):
        assert server.get(probe)[0] == 200
    status, _h, body = server.get("/readyz?verbose")
    assert status == 200 and body.endswith(b"readyz check passed\n")
    assert server.get("/")[2] == b"hello"
    out: dict[str, object] = {}
    thread = threading.Thread(target=lambda: out.setdefault("resp", server.get("/slow")))
    thread.start()
    _wait_in_flight(server)
    server.signal()
    _wait_code(server, "/readyz", 503)
    status, headers, body = server.get("/")
    assert (status, body) == (200, b"hello") and headers.get("connection") == "close"
    assert server.event("listeners_closed") is None  # still within D
    server.signal()
    thread.join(10)
    assert out["resp"][0] == 200  # type: ignore[index]
    assert server.wait_exit(10) == 0
    assert not [line for line in server.lines if "Traceback" in line or "KeyError" in line]


@pytest.mark.parametrize("factory", ["flask_app", "django_app", "falcon_wsgi_app", "pyramid_app"])
def test_wsgi_frameworks_wrapped_twice(serve, factory: str) -> None:
    """The app wraps itself in the WSGI middleware and ``lossless serve --wsgi`` wraps it again:
    one in-flight entry per request, probes answered once, a clean drain. (The slow request
    takes 4 s, so that it is still in flight at t0 however late the signal is handled.)"""
    server: Server = serve(
        "gunicorn",
        "--workers",
        "1",
        "--drain-delay",
        "1",
        "--metrics-path",
        "/metrics",
        "--factory",
        target=f"framework_apps:{factory}",
        env={"APP_SLOW_SECONDS": "4"},
    )
    server.wait_ready()
    assert server.get("/")[2] == b"hello"
    out: dict[str, object] = {}
    thread = threading.Thread(target=lambda: out.setdefault("resp", server.get("/slow")))
    thread.start()
    _wait_in_flight(server)
    server.signal()
    _wait_code(server, "/readyz", 503)
    thread.join(10)
    assert out["resp"][0] == 200  # type: ignore[index]
    assert server.wait_exit(10) == 0
    stopped = [e for e in server.events() if e["event"] == "stopped"]
    assert sum(int(str(e.get("served_during_drain", 0))) for e in stopped) == 1


def test_sync_check_reuses_its_thread_local_database_connection(serve) -> None:
    """Django, SQLite, ``CONN_MAX_AGE=None`` and a readiness check that queries the database
    every 50 ms: the check runs on a thread of its own, so Django opens one connection for it,
    not one per run."""
    server: Server = serve(
        "gunicorn",
        "--workers",
        "1",
        "--factory",
        target="framework_apps:django_db_app",
        env={"LOSSLESS_CHECK_INTERVAL": "0.05"},
    )
    server.wait_ready()
    end = time.monotonic() + 20
    opened = checked = 0
    while time.monotonic() < end:
        opened, checked = map(int, server.get("/connections")[2].split())
        if checked >= 10:
            break
        time.sleep(0.05)
    assert checked >= 10
    assert opened == 1  # the check's connection; the request above runs on gunicorn's threads
