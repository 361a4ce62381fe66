"""uvicorn's options under ``lossless serve`` (same names), gunicorn config files under --wsgi,
and one-line refusals for what cannot be honoured."""

from __future__ import annotations

import http.client
import os
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.runtime.conftest import HERE, ROOT, Server
from tests.runtime.prod_apps import wait_started


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return key, cert


def _tls_get(port: int, path: str, out: dict[str, object]) -> None:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=context)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        out.update(status=resp.status, body=resp.read(), connection=resp.getheader("connection"))
    except OSError as exc:
        out["error"] = exc
    finally:
        conn.close()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_tls_drains_like_plain_http(serve, certificate, workers: str, tmp_path: Path) -> None:
    """1. lossless serve --ssl-keyfile --ssl-certfile (self-signed) 2. a 1.5 s request over TLS
    3. SIGTERM, D = 30 s 4. once it is draining, a new TLS request 5. a second SIGTERM (skips
    the rest of D). Result: the slow request is answered 200 over TLS; the new one gets
    Connection: close; exit 0. (A request sent right after kill() may come before t0 or, with a
    short D, after it; hence the wait and the long D.)"""
    key, cert = certificate
    server: Server = serve(
        "uvicorn",
        "--workers",
        workers,
        "--ssl-keyfile",
        str(key),
        "--ssl-certfile",
        str(cert),
        "--drain-delay",
        "30",
        "--shutdown-timeout",
        "60",
        target="prod_apps:asgi",
        env={"APP_STARTED_FILE": str(tmp_path / "started")},
    )
    end = time.monotonic() + 20
    ready: dict[str, object] = {}
    while ready.get("status") != 200:
        assert time.monotonic() < end and server.proc.poll() is None, server.stderr()
        ready = {}
        _tls_get(server.port, "/readyz", ready)
        time.sleep(0.05)
    slow: dict[str, object] = {}
    thread = threading.Thread(target=_tls_get, args=(server.port, "/slow?s=1.5", slow))
    thread.start()
    wait_started(str(tmp_path / "started"), 1)
    server.signal()
    end = time.monotonic() + 10
    while server.event("draining") is None:
        assert time.monotonic() < end, server.stderr()
        time.sleep(0.01)
    during: dict[str, object] = {}
    _tls_get(server.port, "/", during)
    assert server.event("listeners_closed") is None  # still within D
    server.signal()
    thread.join(15)
    assert server.wait_exit(15) == 0, server.stderr()
    assert slow.get("status") == 200, slow
    assert during.get("status") == 200 and during.get("connection") == "close", during


def test_gunicorn_config_file_hooks_are_called(serve, tmp_path: Path) -> None:
    """--wsgi -c gunicorn.conf.py: the file's post_fork hook runs in every worker (chained
    with ours), its settings apply, and the drain still works."""
    marker = tmp_path / "forked"
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text(
        "workers = 3\n"
        "def post_fork(server, worker):\n"
        f"    with open({str(marker)!r}, 'a') as f:\n"
        "        f.write(f'{worker.pid}\\n')\n"
    )
    server: Server = serve(
        "uvicorn", "--wsgi", "-c", str(conf), "--drain-delay", "0.2", target="prod_apps:wsgi"
    )
    server.wait_ready()
    end = time.monotonic() + 10
    while len(marker.read_text().split() if marker.exists() else []) < 3:
        assert time.monotonic() < end, "post_fork did not run in 3 workers"
        time.sleep(0.05)
    server.signal()
    assert server.wait_exit(15) == 0, server.stderr()


def _serve_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOSSLESS_")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [
            *(sys.executable, "-m", "lossless", "serve", "prod_apps:asgi"),
            *("--app-dir", str(HERE), "--port", "1", *args),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("--reload",), "--reload"),
        (("--timeout-graceful-shutdown", "5"), "--timeout-graceful-shutdown"),
        (("--wsgi", "--ws", "wsproto"), "--ws"),
        (("--interface", "wsgi"), "--interface wsgi"),
        (("--no-such-option",), "--no-such-option"),
        (("--keep-alive", "3", "--timeout-keep-alive", "3"), "--timeout-keep-alive"),
        (("--env-file", "/nonexistent/.env"), "--env-file"),
        (("--wsgi", "-c", "/nonexistent/gunicorn.conf.py"), "--config"),
        (
            ("--workers", "2", "--registry", "etcd://127.0.0.1:1", "--service-name", "s"),
            "--registry",
        ),
    ],
)
def test_options_that_cannot_be_honoured_are_refused_in_one_line(
    args: tuple[str, ...], named: str
) -> None:
    result = _serve_cli(*args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_gunicorn_config_file_error_names_file_and_line(tmp_path: Path) -> None:
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text("workers = 2\nbind = undefined_name\n")
    result = _serve_cli("--wsgi", "-c", str(conf))
    assert result.returncode == 2
    assert f"{conf}:2" in result.stderr and "Traceback" not in result.stderr


def test_uvicorn_options_are_passed_through(serve, tmp_path: Path) -> None:
    """--env-file (loaded before the app is imported), --header and --uds reach the server."""
    env_file = tmp_path / ".env"
    env_file.write_text("APP_FINALLY_FILE=" + str(tmp_path / "finally") + "\n")
    uds = tmp_path / "app.sock"
    server: Server = serve(
        "uvicorn",
        "--uds",
        str(uds),
        "--header",
        "x-served-by:lossless",
        "--env-file",
        str(env_file),
        target="prod_apps:asgi",
    )
    end = time.monotonic() + 20
    while not uds.exists():
        assert time.monotonic() < end and server.proc.poll() is None, server.stderr()
        time.sleep(0.05)
    import socket

    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(10)
    sock.connect(str(uds))
    sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    sock.close()
    assert data.startswith(b"HTTP/1.1 200") and b"x-served-by: lossless" in data.lower()
    server.signal()
    assert server.wait_exit(15) == 0, server.stderr()
