"""Replica processes: command templates, ports, process groups, signals, reaping.

A replica is a real process started from a command template. Each one runs in its own session (and
so its own process group), which plays the part of a container: SIGTERM goes to the main process
only (as a container runtime signals PID 1, so a ``sh -c`` wrapper that does not ``exec`` swallows
it, as it would in a pod), while SIGKILL goes to the whole group (a container's cgroup is killed as
a whole, and when PID 1 exits the kernel kills the rest of its PID namespace).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import os
import shlex
import signal
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path

from lossless.errors import LosslessError

__all__ = [
    "PortAllocator",
    "ReplicaProcess",
    "describe_returncode",
    "port_is_free",
    "render_command",
    "split_command",
]

_PR_SET_PDEATHSIG = 1


def split_command(template: str | Sequence[str]) -> tuple[str, ...]:
    """Split a command template the way a shell would (no shell runs it: the first word is exec'd
    directly, as a container's ``command`` is)."""
    if isinstance(template, str):
        try:
            words = shlex.split(template)
        except ValueError as exc:
            raise LosslessError(f"cannot parse command {template!r}: {exc}") from None
    else:
        words = list(template)
    if not words:
        raise LosslessError("the replica command is empty")
    return tuple(words)


def render_command(template: Sequence[str], port: int) -> list[str]:
    """Substitute ``{port}``, ``$PORT`` and ``${PORT}`` in every word of ``template``.

    Plain string replacement, not ``str.format``: other braces (JSON arguments) stay as they are.
    """
    value = str(port)
    return [
        word.replace("{port}", value).replace("${PORT}", value).replace("$PORT", value)
        for word in template
    ]


def port_is_free(host: str, port: int) -> bool:
    """True when ``host:port`` can be bound right now (with SO_REUSEADDR, as servers bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


class PortAllocator:
    """Hands out a distinct port per replica for one run.

    Without ``base`` each port is one the kernel picks as free; with ``base`` ports are taken in
    order from ``base`` and a port in use is an error (``LosslessError``, exit 2) naming it, so a
    fixed port range that collides with another service fails loudly instead of silently moving.
    A port is never handed out twice in one run (a terminating replica may still hold it).
    """

    def __init__(self, host: str = "127.0.0.1", base: int | None = None) -> None:
        if base is not None and not 0 < base < 65536:
            raise LosslessError(f"--base-port {base} is not a TCP port")
        self.host = host
        self.base = base
        self._next = base
        self._given: set[int] = set()

    def allocate(self) -> int:
        if self._next is not None:
            port = self._next
            if port >= 65536:
                raise LosslessError(f"no port left above --base-port {self.base}")
            self._next += 1
            if not port_is_free(self.host, port):
                raise LosslessError(f"port {port} on {self.host} is already in use")
            self._given.add(port)
            return port
        for _ in range(100):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind((self.host, 0))
                port = int(sock.getsockname()[1])
            if port not in self._given:
                self._given.add(port)
                return port
        raise LosslessError(f"could not find a free port on {self.host}")  # pragma: no cover


def describe_returncode(code: int | None) -> str:
    """``exit code 3`` / ``signal SIGKILL`` / ``running``."""
    if code is None:
        return "running"
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    # A safety net for a verifier killed with SIGKILL: the replica gets SIGKILL too (Linux only).
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class ReplicaProcess:
    """One replica's process, started in a new session so that it leads its own process group.

    ``start()`` spawns it (stdout and stderr appended to ``log_path``); ``terminate()`` sends
    SIGTERM to the main process only; ``kill()`` sends SIGKILL to the whole group (safe to call
    at any time, also after the main process exited, to reap what it left behind); ``wait()``
    returns the main process's return code once it has been reaped. Not reusable.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: str | os.PathLike[str] | None,
        log_path: Path,
    ) -> None:
        self.argv = list(argv)
        self.env = dict(env)
        self.cwd = cwd
        self.log_path = log_path
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.returncode

    async def start(self) -> None:
        """Spawn the process. Raises ``LosslessError`` naming the command when it cannot be
        executed at all (not found, not executable)."""
        if self._proc is not None:
            raise RuntimeError(f"process {self.argv[0]!r} already started (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            try:
                self._proc = await asyncio.create_subprocess_exec(
                    *self.argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    env=self.env,
                    cwd=self.cwd,
                    start_new_session=True,
                    preexec_fn=_die_with_parent,
                )
            except OSError as exc:
                reason = exc.strerror or str(exc)
                raise LosslessError(
                    f"cannot start replica command {shlex.join(self.argv)!r}: {reason}"
                ) from None

    def terminate(self) -> bool:
        """Send SIGTERM to the main process only. False when it has already exited."""
        return self._signal_main(signal.SIGTERM)

    def _signal_main(self, sig: signal.Signals) -> bool:
        if self._proc is None or self._proc.returncode is not None:
            return False
        try:
            os.kill(self._proc.pid, sig)
        except ProcessLookupError:
            return False
        return True

    def kill(self) -> None:
        """SIGKILL the whole process group (the main process and anything it started)."""
        if self._proc is None:
            return
        try:
            os.killpg(self._proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        except PermissionError:  # pragma: no cover - the group id was reused by someone else
            pass
        except OSError as exc:  # pragma: no cover
            if exc.errno != errno.ESRCH:
                raise

    def group_alive(self) -> bool:
        """True while any process of the group still exists (zombies included)."""
        if self._proc is None:
            return False
        try:
            os.killpg(self._proc.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # pragma: no cover
            return True
        return True

    async def wait(self) -> int:
        """Wait until the main process has exited and been reaped; return its return code."""
        if self._proc is None:
            raise RuntimeError("process not started")
        return await self._proc.wait()

    def log_tail(self, max_chars: int = 300) -> str:
        """The last non-empty line of the replica's output (for one-line error messages)."""
        try:
            with open(self.log_path, "rb") as log:
                log.seek(0, os.SEEK_END)
                size = log.tell()
                log.seek(max(0, size - 4096))
                data = log.read().decode("utf-8", "replace")
        except OSError:
            return ""
        lines = [line.strip() for line in data.splitlines() if line.strip()]
        return lines[-1][:max_chars] if lines else ""
