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
    server: Server = serve(
        "gunicorn",
        "--drain-delay",
        "1",
        "--shutdown-timeout",
        "5",
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
    time.sleep(0.2)
    server.signal()
    time.sleep(0.2)
    assert server.get("/readyz")[0] == 503
    status, headers, body = server.get("/")
    assert (status, body) == (200, b"hello") and headers.get("connection") == "close"
    thread.join(5)
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
