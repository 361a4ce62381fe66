"""A real HAProxy process for the ``ingress`` traffic model: process, runtime API, log reader.

:class:`HAProxy` runs ``haproxy -db -f CONFIG`` (:func:`~lossless.verify.haproxy.config.render_config`)
in its own session (process group) with a runtime API socket in a private temporary directory and
the access log on its standard output, which a reader task parses
(:func:`~lossless.verify.haproxy.log.parse_log_line`) as lines arrive. ``stop()`` always ends the
whole group (SIGTERM, then SIGKILL after a grace), and the process gets SIGKILL from the kernel
should the verifier itself die (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path

from lossless._prctl import die_with_parent, prctl
from lossless.errors import LosslessError
from lossless.verify.haproxy.config import HAProxySettings, render_config
from lossless.verify.haproxy.log import ProxyLogEntry, parse_log_line

__all__ = ["HAProxy", "find_haproxy", "runtime_command"]

_STOP_GRACE = 2.0  # seconds between SIGTERM and SIGKILL of the HAProxy process group


# -- the runtime API -------------------------------------------------------------------------
def runtime_command(socket_path: Path, command: str, *, timeout: float = 2.0) -> str:
    """Send one command to HAProxy's runtime API (non-interactive: one command per connection)
    and return its answer. Blocking, bounded by ``timeout``; a local socket answers in well under
    a millisecond. Raises LosslessError when the socket does not answer."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(socket_path))
            sock.sendall(command.encode() + b"\n")
            chunks: list[bytes] = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    except OSError as exc:
        raise LosslessError(f"haproxy runtime API {socket_path}: {command!r}: {exc}") from None
    return b"".join(chunks).decode("utf-8", "replace")


def find_haproxy() -> str:
    """The ``haproxy`` executable (PATH, then /usr/sbin), or LosslessError saying how to get it."""
    found = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise LosslessError(
            "the ingress traffic model needs HAProxy >= 2.4: install it (Debian: apt-get install "
            "haproxy)"
        )
    return found


class HAProxy:
    """One HAProxy process with the configuration of :func:`render_config`.

    ``start()`` picks a free loopback port (unless ``port`` is given), writes the configuration
    into a private temporary directory (also holding the runtime API socket and HAProxy's
    stderr), starts ``haproxy -db`` in a new session and returns once the runtime API answers and
    the frontend accepts connections (LosslessError with HAProxy's last message otherwise, within
    ``start_timeout``). Every access log line is parsed and handed to ``on_log`` (with the line),
    other lines to ``on_message``, as they arrive.

    ``stop()`` sends SIGTERM to the process group, SIGKILL after :data:`_STOP_GRACE` seconds,
    reads the log to its end and removes the temporary directory; it is idempotent and safe at
    any time (also when ``start()`` failed half way), and a ``stop()`` cancelled half way has
    still killed and reaped the group when it returns. ``kill()`` is the synchronous last
    resort (SIGKILL to the group) for a caller that cannot await. Not reusable after
    ``stop()``.
    """

    def __init__(
        self,
        settings: HAProxySettings | None = None,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        on_log: Callable[[ProxyLogEntry], None] | None = None,
        on_message: Callable[[str], None] | None = None,
        start_timeout: float = 10.0,
    ) -> None:
        self.settings = settings or HAProxySettings()
        self.host = host
        self.port = port or 0
        self.on_log = on_log or (lambda entry: None)
        self.on_message = on_message or (lambda text: None)
        self.start_timeout = start_timeout
        self.dir: Path | None = None
        self.bad_lines = 0
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._stopped = False

    @property
    def socket_path(self) -> Path:
        if self.dir is None:
            raise RuntimeError("HAProxy not started")
        return self.dir / "admin.sock"

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    async def start(self) -> None:
        if self._proc is not None or self._stopped:
            raise RuntimeError("HAProxy.start() can be called once")
        executable = find_haproxy()
        self.dir = Path(tempfile.mkdtemp(prefix="lossless-haproxy-"))
        if not self.port:
            with socket.socket() as probe:
                probe.bind((self.host, 0))
                self.port = int(probe.getsockname()[1])
        config = self.dir / "haproxy.cfg"
        config.write_text(
            render_config(
                self.settings, host=self.host, port=self.port, socket_path=self.socket_path
            )
        )
        prctl()  # looked up in this process: the child only makes the system call
        with open(self.dir / "stderr.log", "wb") as stderr:
            self._proc = await asyncio.create_subprocess_exec(
                executable,
                "-db",
                "-f",
                str(config),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
                start_new_session=True,
                preexec_fn=die_with_parent,  # SIGKILL should the verifier die
            )
        self._reader = asyncio.ensure_future(self._read_log())
        await self._wait_up()

    async def _wait_up(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.start_timeout
        assert self._proc is not None
        while True:
            if self._proc.returncode is not None:
                raise LosslessError(f"haproxy exited at start: {self.stderr_tail()}")
            if self.socket_path.exists() and await self._frontend_accepts():
                try:
                    runtime_command(self.socket_path, "show info", timeout=1.0)
                    return
                except LosslessError:
                    pass
            if loop.time() > deadline:
                raise LosslessError(
                    f"haproxy did not start within {self.start_timeout:g}s: {self.stderr_tail()}"
                )
            await asyncio.sleep(0.02)

    async def _frontend_accepts(self) -> bool:
        try:
            _, writer = await asyncio.open_connection(self.host, self.port)
        except OSError:
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True

    async def _read_log(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        stdout = self._proc.stdout
        while True:
            try:
                raw = await stdout.readline()
            except ValueError:  # a line over the stream limit: skip it
                self.bad_lines += 1
                continue
            if not raw:
                return
            line = raw.decode("utf-8", "replace").strip()
            try:
                entry = parse_log_line(line)
            except ValueError:
                self.bad_lines += 1
                continue
            if entry is not None:
                self.on_log(entry)
            elif line:
                self.on_message(line)

    def stderr_tail(self, max_chars: int = 300) -> str:
        """HAProxy's last error/alert line (for one-line error messages)."""
        if self.dir is None:
            return ""
        try:
            text = (self.dir / "stderr.log").read_text("utf-8", "replace")
        except OSError:
            return ""
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        alerts = [line for line in lines if "ALERT" in line] or lines
        return alerts[-1][:max_chars] if alerts else "no output"

    def command(self, text: str) -> str:
        """One runtime API command (see :func:`runtime_command`)."""
        return runtime_command(self.socket_path, text)

    def terminate(self) -> None:
        """SIGTERM the whole process group without waiting (``stop()`` waits and reaps)."""
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL the whole process group, now. Safe at any time."""
        if self._proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, signal.SIGKILL)

    async def stop(self) -> None:
        """Stop HAProxy (see the class docstring). Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        proc = self._proc
        try:
            if proc is not None:
                if proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(proc.pid, signal.SIGTERM)
                    try:
                        await asyncio.wait_for(asyncio.shield(proc.wait()), _STOP_GRACE)
                    except TimeoutError:
                        self.kill()
                        await proc.wait()
                self.kill()  # anything left in the group
            if self._reader is not None:
                try:
                    await asyncio.wait_for(asyncio.shield(self._reader), 1.0)
                except TimeoutError:
                    self._reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._reader
        finally:
            if proc is not None and proc.returncode is None:
                # cancelled while stopping: kill the group and reap it now, not after the loop
                # closed (a subprocess left "still running": an unraisable ResourceWarning)
                self.kill()
                with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                    async with asyncio.timeout(1.0):
                        await proc.wait()
            if self.dir is not None:
                shutil.rmtree(self.dir, ignore_errors=True)

    async def __aenter__(self) -> HAProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
