"""Readiness probes and lifecycle handlers with the kubelet's semantics.

Handlers (``httpGet``, ``tcpSocket``, ``exec``, and ``sleep`` for preStop) are the actions of a
Kubernetes probe or lifecycle hook. :class:`ReadinessProber` is the kubelet's per-container
prober worker (kubernetes/kubernetes ``pkg/kubelet/prober/worker.go``):

- the container starts *not ready* (a readiness worker's initial result is Failure);
- the worker probes at once and then every ``period`` seconds on a fixed ticker (a probe that
  overruns a tick skips it, as a Go ticker drops ticks);
- probes are skipped while the container has run for less than ``initial_delay`` seconds;
- a result only changes readiness after ``success_threshold`` consecutive successes or
  ``failure_threshold`` consecutive failures (the worker's ``resultRun`` counter);
- an HTTP probe succeeds on a status in 200-399 (``pkg/probe/http/http.go``), fails on any other
  status, a connection error, or no answer within ``timeout`` seconds;
- readiness keeps being probed while the pod terminates (``doProbe`` stops only liveness and
  startup probes then); the lab's prober runs until the process exits.

A handler's ``port`` is ``None`` (the replica's main port), a container port name or number as
a string (resolved through the replica's port map: ``{port:NAME}``), or an int (that port).

Kubernetes takes whole seconds; the lab accepts fractions so that local runs stay short.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import os
import signal
from collections.abc import Callable, Mapping

from lossless.errors import LosslessError

__all__ = [
    "ExecAction",
    "GRPCAction",
    "HTTPGetAction",
    "Handler",
    "ProbeSpec",
    "ReadinessProber",
    "SleepAction",
    "TCPSocketAction",
    "resolve_port",
    "run_handler",
]


@dataclasses.dataclass(frozen=True, slots=True)
class HTTPGetAction:
    """``httpGet``: GET ``path`` on the replica (``port``: see the module docstring)."""

    path: str = "/"
    port: int | str | None = None
    host: str = "127.0.0.1"

    def describe(self) -> str:
        return f"httpGet {self.path}" + ("" if self.port is None else f" port {self.port}")


@dataclasses.dataclass(frozen=True, slots=True)
class TCPSocketAction:
    """``tcpSocket``: success when a TCP connection opens (``port``: see the module docstring)."""

    port: int | str | None = None
    host: str = "127.0.0.1"

    def describe(self) -> str:
        return "tcpSocket" + ("" if self.port is None else f" port {self.port}")


@dataclasses.dataclass(frozen=True, slots=True)
class GRPCAction:
    """``grpc`` (readiness only): grpc.health.v1 ``Check(service)`` answers SERVING
    (lossless.verify.lab.grpc_probe; ``--readiness-grpc``, issue 13)."""

    port: int | None = None
    service: str = ""
    host: str = "127.0.0.1"

    def describe(self) -> str:
        service = f" service {self.service!r}" if self.service else ""
        return "grpc" + service + ("" if self.port is None else f" port {self.port}")


@dataclasses.dataclass(frozen=True, slots=True)
class ExecAction:
    """``exec``: success when the command exits 0. Runs on the host (there is no container to
    exec into) with ``PORT`` set to the replica's port."""

    command: tuple[str, ...]

    def describe(self) -> str:
        return "exec " + " ".join(self.command)


@dataclasses.dataclass(frozen=True, slots=True)
class SleepAction:
    """``sleep`` (preStop only): wait ``seconds``."""

    seconds: float

    def describe(self) -> str:
        return f"sleep {self.seconds:g}s"


Handler = HTTPGetAction | TCPSocketAction | ExecAction | SleepAction


@dataclasses.dataclass(frozen=True, slots=True)
class ProbeSpec:
    """A readiness probe. Defaults are Kubernetes' own (``periodSeconds`` 10, ``timeoutSeconds``
    1, ``successThreshold`` 1, ``failureThreshold`` 3, ``initialDelaySeconds`` 0)."""

    action: HTTPGetAction | TCPSocketAction | ExecAction | GRPCAction
    initial_delay: float = 0.0
    period: float = 10.0
    timeout: float = 1.0
    success_threshold: int = 1
    failure_threshold: int = 3

    def __post_init__(self) -> None:
        for name in ("period", "timeout"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise LosslessError(f"readiness probe {name} must be > 0 (got {value})")
        if not (self.initial_delay >= 0 and math.isfinite(self.initial_delay)):
            raise LosslessError(
                f"readiness probe initial delay must be >= 0 (got {self.initial_delay})"
            )
        for name in ("success_threshold", "failure_threshold"):
            if getattr(self, name) < 1:
                raise LosslessError(f"readiness probe {name} must be >= 1")


def _why(exc: OSError) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return exc.strerror or str(exc)


def resolve_port(spec: int | str | None, port: int, ports: Mapping[str, int] | None) -> int:
    """The port a handler's ``port`` means for a replica whose main port is ``port`` and whose
    named/numbered container ports are ``ports``. Raises LosslessError for an unknown name."""
    if spec is None:
        return port
    if isinstance(spec, int):
        return spec
    if ports and spec in ports:
        return ports[spec]
    raise LosslessError(f"port {spec!r} is not a port of the replica")


async def _http_get(action: HTTPGetAction, target: int, timeout: float) -> tuple[bool, str]:
    what = f"GET {action.path}" + (
        "" if action.port is None else f" on port {action.port} :{target}"
    )
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(action.host, target)
            request = (
                f"GET {action.path} HTTP/1.1\r\nHost: {action.host}:{target}\r\n"
                "User-Agent: kube-probe/lossless\r\nAccept: */*\r\nConnection: close\r\n\r\n"
            )
            writer.write(request.encode("latin-1"))
            await writer.drain()
            status_line = await reader.readline()
    except TimeoutError:
        return False, f"{what}: timeout after {timeout:g}s"
    except OSError as exc:
        return False, f"{what}: {_why(exc)}"
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
    parts = status_line.decode("latin-1").split()
    if len(parts) < 2 or not parts[1].isdigit():
        return False, f"{what}: no HTTP status line"
    status = int(parts[1])
    return 200 <= status < 400, f"{what}: {status}"


async def _tcp(action: TCPSocketAction, target: int, timeout: float) -> tuple[bool, str]:
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(action.host, target)
    except TimeoutError:
        return False, f"tcp :{target}: timeout after {timeout:g}s"
    except OSError as exc:
        return False, f"tcp :{target}: {_why(exc)}"
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()
    return True, f"tcp :{target}: open"


async def _exec(action: ExecAction, port: int, timeout: float) -> tuple[bool, str]:
    env = dict(os.environ, PORT=str(port))
    try:
        proc = await asyncio.create_subprocess_exec(
            *action.command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    except OSError as exc:
        return False, f"exec {action.command[0]}: {exc.strerror or exc}"
    try:
        async with asyncio.timeout(timeout):
            code = await proc.wait()
    except TimeoutError:
        return False, f"exec {action.command[0]}: timeout after {timeout:g}s"
    finally:
        if proc.returncode is None:  # timed out or cancelled: kill the group and reap it now,
            with contextlib.suppress(ProcessLookupError):  # not after the loop closed
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(TimeoutError):  # a cancel under way goes on once reaped
                async with asyncio.timeout(1.0):
                    await proc.wait()
    return code == 0, f"exec {action.command[0]}: exit code {code}"


async def run_handler(
    handler: Handler | GRPCAction, port: int, timeout: float, ports: Mapping[str, int] | None = None
) -> tuple[bool, str]:
    """Run one handler against the replica whose main port is ``port`` (and whose other
    container ports are ``ports``), bounded by ``timeout`` seconds.

    Returns ``(success, detail)``; never raises for the replica's faults (refused, timeout, bad
    status); a port name the replica does not have is a failed result. A ``SleepAction`` sleeps
    ``min(seconds, timeout)`` and succeeds.
    """
    if isinstance(handler, HTTPGetAction | TCPSocketAction):
        try:
            target = resolve_port(handler.port, port, ports)
        except LosslessError as exc:
            return False, str(exc)
        if isinstance(handler, HTTPGetAction):
            return await _http_get(handler, target, timeout)
        return await _tcp(handler, target, timeout)
    if isinstance(handler, ExecAction):
        return await _exec(handler, port, timeout)
    if isinstance(handler, GRPCAction):
        from lossless.verify.lab.grpc_probe import grpc_check

        return await grpc_check(handler.host, handler.port or port, handler.service, timeout)
    await asyncio.sleep(min(handler.seconds, timeout))
    return True, f"slept {min(handler.seconds, timeout):g}s"


class ReadinessProber:
    """The kubelet's readiness worker for one replica (see the module docstring).

    ``on_change(ready, detail)`` is called each time readiness flips (never for the initial
    not-ready state). ``run()`` loops until cancelled; ``started_at`` is the monotonic time
    (``clock()``) the process started, against which ``initial_delay`` is measured.
    """

    def __init__(
        self,
        spec: ProbeSpec,
        port: int,
        *,
        clock: Callable[[], float],
        started_at: float,
        on_change: Callable[[bool, str], None],
        ports: Mapping[str, int] | None = None,
    ) -> None:
        self.spec = spec
        self.port = port
        self.ports = dict(ports or {})
        self.clock = clock
        self.started_at = started_at
        self.on_change = on_change
        self.ready = False
        self.last_detail = "not probed yet"
        self._last_result: bool | None = None
        self._run = 0

    def observe(self, success: bool, detail: str) -> None:
        """Feed one probe result through the threshold logic (worker.go ``doProbe``)."""
        self.last_detail = detail
        if self._last_result == success:
            self._run += 1
        else:
            self._last_result = success
            self._run = 1
        if (not success and self._run < self.spec.failure_threshold) or (
            success and self._run < self.spec.success_threshold
        ):
            return
        if success != self.ready:
            self.ready = success
            self.on_change(success, detail)

    async def run(self) -> None:
        spec = self.spec
        loop_start = self.clock()
        tick = 0
        while True:
            if self.clock() - self.started_at >= spec.initial_delay:
                success, detail = await run_handler(
                    spec.action, self.port, spec.timeout, self.ports
                )
                self.observe(success, detail)
            # Next tick of a fixed ticker; ticks missed by a slow probe are dropped.
            tick += 1
            now = self.clock()
            next_at = loop_start + tick * spec.period
            if next_at < now:
                tick = math.floor((now - loop_start) / spec.period) + 1
                next_at = loop_start + tick * spec.period
            await asyncio.sleep(next_at - now)
