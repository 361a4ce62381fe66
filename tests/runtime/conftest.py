"""Run ``lossless serve`` as a real process on a free loopback port, and talk to it."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port, parse_events

HERE = Path(__file__).parent
ROOT = HERE.parent.parent


class Server:
    """A ``lossless serve`` process in its own process group; always killed at teardown."""

    def __init__(
        self, kind: str, *args: str, env: dict[str, str] | None = None, target: str | None = None
    ) -> None:
        self.kind = kind
        self.port = free_port()
        target = target or ("apps:wsgi" if kind == "gunicorn" else "apps:asgi")
        cmd = [sys.executable, "-m", "lossless", "serve", target, "--app-dir", str(HERE)]
        if kind == "gunicorn":
            cmd += ["--wsgi", "--workers", "2", "--threads", "4"]
        cmd += ["--port", str(self.port), *args]
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("LOSSLESS_")}
        full_env.pop("KUBERNETES_SERVICE_HOST", None)
        full_env.update(env or {})
        full_env["PYTHONPATH"] = str(ROOT)
        # apps.py's /slow appends a line here when a request reaches the app (wait_slow_started)
        fd, self.started_file = tempfile.mkstemp(prefix="lossless-started-")
        os.close(fd)
        full_env.setdefault("APP_STARTED_FILE", self.started_file)
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=full_env,
            start_new_session=True,
            text=True,
        )
        self._watch()

    def _watch(self) -> None:
        """Start the threads that collect stderr lines and record when the process exited."""
        self.lines: list[str] = []
        self.exited_at: float | None = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._waiter = threading.Thread(target=self._wait, daemon=True)
        self._waiter.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def _wait(self) -> None:
        self.proc.wait()
        self.exited_at = time.monotonic()

    def wait_slow_started(self, count: int, timeout: float = 10.0) -> None:
        """Block until ``count`` ``/slow`` requests have reached the app (bounded polling)."""
        end = time.monotonic() + timeout
        while True:
            with open(self.started_file) as f:
                if len(f.read().split()) >= count:
                    return
            assert time.monotonic() < end, f"{count} /slow request(s) never reached the app"
            time.sleep(0.005)

    def events(self) -> list[dict[str, object]]:
        return parse_events(self.lines)

    def event(self, name: str) -> dict[str, object] | None:
        return next((e for e in self.events() if e["event"] == name), None)

    def wait_ready(self, timeout: float = 15.0, path: str = "/readyz") -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited early: {self.stderr()}")
            try:
                if self.get(path)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"server not ready in {timeout} s: {self.stderr()}")

    def wait_listening(self, timeout: float = 15.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"server not listening: {self.stderr()}")

    def connection(self, timeout: float = 10.0) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def get(
        self, path: str, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        conn = self.connection()
        try:
            conn.request("GET", path, headers=headers or {})
            resp = conn.getresponse()
            body = resp.read()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
        finally:
            conn.close()

    def signal(self, sig: int = signal.SIGTERM) -> float:
        """Send ``sig`` to the main process (as the kubelet does); return when it was sent."""
        os.kill(self.proc.pid, sig)
        return time.monotonic()

    def wait_exit(self, timeout: float = 30.0) -> int:
        """Wait for the process to exit; return its code. On return :attr:`exited_at` is set
        and :attr:`lines` holds everything it wrote to stderr (the reader saw end-of-file):
        the threads that record both may otherwise still be on their way when ``wait`` returns,
        and an event logged just before exit (``stopped``, ``forced``) would be missed."""
        code = self.proc.wait(timeout)
        self._waiter.join(timeout)
        self._reader.join(timeout)  # EOF once every process holding the pipe has exited
        assert not self._reader.is_alive(), "stderr still open after the server exited"
        return code

    def stderr(self) -> str:
        return "\n".join(self.lines[-40:])

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        else:
            try:  # workers of a dead master, if any
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self._reader.join(5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        started_file = getattr(self, "started_file", None)  # subclasses may not create one
        if started_file is not None:
            with contextlib.suppress(OSError):
                os.unlink(started_file)


@pytest.fixture
def serve() -> Iterator[object]:
    started: list[Server] = []

    def start(
        kind: str, *args: str, env: dict[str, str] | None = None, target: str | None = None
    ) -> Server:
        server = Server(kind, *args, env=env, target=target)
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill()


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False
