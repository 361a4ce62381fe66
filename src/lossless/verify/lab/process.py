"""Replica processes: command templates, ports, process groups, PID 1 signal rules, reaping.

A replica is a real process started from a command template. Each one runs in its own session (and
so its own process group), which plays the part of a container, and its main process has the
signal rules of a container's PID 1 (pid_namespaces(7)): a signal sent from outside the namespace
(the runtime's SIGTERM, or the image's STOPSIGNAL) is delivered only if the process installed a
handler for it; otherwise the kernel drops it. Only SIGKILL (and SIGSTOP) is forced. So a server
that never handles SIGTERM keeps serving until the SIGKILL at the end of the grace period, and a
``sh -c`` that does not ``exec`` (a shell installs no SIGTERM handler) keeps its child serving
until then, exactly as in a pod. Two ways to get these rules (:func:`pid1_mode`):

- ``namespace``: the command runs as PID 1 of a new PID namespace (``unshare --pid --fork
  --kill-child``, needs CAP_SYS_ADMIN); the kernel applies the rules, and when PID 1 exits it
  kills every other process of the namespace;
- ``emulated``: where no namespace can be made, the lab reads the process's caught-signal mask
  (``SigCgt`` in ``/proc/PID/status``) when it sends a signal and drops the signal when the bit
  is clear, as the kernel would; when the main process exits the lab SIGKILLs its group.

SIGKILL goes to the whole group (a container's cgroup is killed as a whole). ``pid1=False`` gives
plain process semantics (the naive baseline: a process on a VM).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from lossless._prctl import die_with_parent, prctl
from lossless.errors import LosslessError

__all__ = [
    "PID1_MODES",
    "PortAllocator",
    "ReplicaProcess",
    "describe_returncode",
    "handles_signal",
    "parse_signal",
    "pid1_mode",
    "port_is_free",
    "port_keys",
    "render_command",
    "split_command",
]

PID1_MODES = ("auto", "namespace", "emulated")

# ``{port:NAME}`` / ``{port:8086}``: another container port of the replica.
_PORT_KEY = re.compile(r"\{port:([A-Za-z0-9][A-Za-z0-9_.-]*)\}")
_UNSHARE = ("unshare", "--pid", "--fork", "--kill-child", "--")


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


def port_keys(template: Sequence[str]) -> list[str]:
    """The ``{port:KEY}`` keys a command template names, in order of first appearance."""
    keys: list[str] = []
    for word in template:
        for key in _PORT_KEY.findall(word):
            if key not in keys:
                keys.append(key)
    return keys


def render_command(
    template: Sequence[str], port: int, ports: Mapping[str, int] | None = None
) -> list[str]:
    """Substitute ``{port:KEY}`` (from ``ports``), ``{port}``, ``$PORT`` and ``${PORT}`` in every
    word of ``template``. A ``{port:KEY}`` whose key is not in ``ports`` raises LosslessError.

    Plain string replacement, not ``str.format``: other braces (JSON arguments) stay as they are.
    """
    mapping = dict(ports or {})

    def named(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in mapping:
            raise LosslessError(f"command names {{port:{key}}} but the replica has no port {key!r}")
        return str(mapping[key])

    value = str(port)
    return [
        _PORT_KEY.sub(named, word)
        .replace("{port}", value)
        .replace("${PORT}", value)
        .replace("$PORT", value)
        for word in template
    ]


def parse_signal(text: str | int) -> signal.Signals:
    """``SIGQUIT``, ``QUIT``, ``sigquit`` or ``3`` → ``signal.SIGQUIT``; LosslessError else."""
    value = str(text).strip()
    try:
        if value.isdigit():
            return signal.Signals(int(value))
        name = value.upper()
        return signal.Signals[name if name.startswith("SIG") else "SIG" + name]
    except (KeyError, ValueError):
        raise LosslessError(f"unknown signal {text!r} (e.g. SIGTERM, SIGQUIT, 15)") from None


@functools.cache
def _namespace_works() -> bool:
    """True when ``unshare --pid --fork`` runs here (CAP_SYS_ADMIN, no seccomp veto)."""
    if shutil.which("unshare") is None:
        return False
    pid = os.getpid()
    if not os.path.exists(f"/proc/{pid}/task/{pid}/children"):
        return False  # the lab finds the namespace's PID 1 through it
    try:
        done = subprocess.run(
            [*_UNSHARE, "true"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def pid1_mode(requested: str = "auto") -> str:
    """``namespace`` or ``emulated``: how replicas get PID 1 signal rules. ``auto`` picks a PID
    namespace when one can be made here; ``namespace`` raises LosslessError when it cannot."""
    if requested not in PID1_MODES:
        raise LosslessError(f"--pid1 {requested}: expected one of {', '.join(PID1_MODES)}")
    if requested == "emulated":
        return "emulated"
    if _namespace_works():
        return "namespace"
    if requested == "namespace":
        raise LosslessError(
            "--pid1 namespace: `unshare --pid --fork` does not work here (it needs "
            "CAP_SYS_ADMIN); use --pid1 emulated"
        )
    return "emulated"


def _running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def handles_signal(pid: int, sig: int) -> bool | None:
    """Whether process ``pid`` takes ``sig``: a handler is installed for it (bit ``sig - 1`` of
    ``SigCgt`` in /proc/PID/status), it waits for it in ``sigtimedwait`` right now, as
    ``lossless run`` does (:func:`_waited_for`), or it blocks it and reads it from a signalfd;
    the kernel queues such a signal even for a namespace's PID 1 (``sig_ignored()`` in
    kernel/signal.c never ignores a blocked or ``real_blocked`` signal) and the process dequeues
    it itself. An ignored one (``SigIgn``) is not taken. None when the process is gone."""
    masks: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(("SigBlk:", "SigIgn:", "SigCgt:")):
                    name, value = line.split()
                    masks[name] = int(value, 16)
    except (OSError, ValueError):
        return None
    if len(masks) != 3:
        return None
    bit = 1 << (sig - 1)
    if masks["SigIgn:"] & bit:
        return False
    if masks["SigCgt:"] & bit or _waited_for(pid) & bit:
        return True
    # Blocked alone is not enough: a container init with the default action discards a blocked
    # signal when it unblocks it (get_signal(), SIGNAL_UNKILLABLE), as a shell does around a
    # fork; only a signalfd that reads it takes it.
    return bool(masks["SigBlk:"] & bit and _signalfd_mask(pid) & bit)


def _signalfd_mask(pid: int) -> int:
    """The signals ``pid`` reads through its signalfds (``sigmask`` in /proc/PID/fdinfo)."""
    mask = 0
    try:
        fds = os.listdir(f"/proc/{pid}/fdinfo")
    except OSError:
        return 0
    for fd in fds:
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}", encoding="ascii") as info:
                for line in info:
                    if line.startswith("sigmask:"):
                        mask |= int(line.split()[1], 16)
        except (OSError, ValueError):
            continue
    return mask


#: ``rt_sigtimedwait``'s number (``sigwaitinfo`` and ``sigtimedwait``) by machine.
_SIGTIMEDWAIT = {"x86_64": 128, "aarch64": 137}.get(os.uname().machine)


def _waited_for(pid: int) -> int:
    """The signal set ``pid``'s main thread is waiting for in ``rt_sigtimedwait`` (0 when it
    is not there, or it cannot be read). While it waits, the kernel unblocks those signals in
    ``SigBlk`` (they are in its private ``real_blocked``), so the set is read from the call's
    first argument, in the process's memory (/proc/PID/syscall, /proc/PID/mem: the lab's own
    descendants)."""
    if _SIGTIMEDWAIT is None:
        return 0
    try:
        with open(f"/proc/{pid}/syscall", encoding="ascii") as f:
            fields = f.read().split()
        if len(fields) < 2 or fields[0] != str(_SIGTIMEDWAIT):
            return 0
        with open(f"/proc/{pid}/mem", "rb") as mem:
            mem.seek(int(fields[1], 16))
            return int.from_bytes(mem.read(8), "little")
    except (OSError, ValueError, OverflowError):
        return 0


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


class ReplicaProcess:
    """One replica's process, started in a new session so that it leads its own process group.

    ``start()`` spawns it (stdout and stderr appended to ``log_path``); ``stop(sig)`` sends the
    stop signal to the main process only, under PID 1 rules when ``pid1`` is ``namespace`` or
    ``emulated`` (see the module docstring), and says whether it was delivered; ``kill()`` sends
    SIGKILL to the whole group (safe to call at any time, also after the main process exited, to
    reap what it left behind); ``wait()`` returns the main process's return code once it has
    been reaped. ``pid`` is the main process's pid as seen from the lab. Not reusable.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: str | os.PathLike[str] | None,
        log_path: Path,
        pid1: str | None = None,
    ) -> None:
        if pid1 not in (None, "namespace", "emulated"):
            raise ValueError(f"pid1 must be None, 'namespace' or 'emulated' (got {pid1!r})")
        self.argv = list(argv)
        self.env = dict(env)
        self.cwd = cwd
        self.log_path = log_path
        self.pid1 = pid1
        self._proc: asyncio.subprocess.Process | None = None
        self._main_pid: int | None = None

    @property
    def pid(self) -> int | None:
        if self._main_pid is not None:
            return self._main_pid
        return None if self._proc is None else self._proc.pid

    @property
    def pgid(self) -> int | None:
        """The process group (and session) the replica's processes run in."""
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
        argv = self.argv
        if self.pid1 == "namespace":
            self._check_executable()
            argv = [*_UNSHARE, *self.argv]
        prctl()  # looked up in this process: the child only makes the system call
        with open(self.log_path, "ab") as log:
            try:
                self._proc = await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    env=self.env,
                    cwd=self.cwd,
                    start_new_session=True,
                    preexec_fn=die_with_parent,  # SIGKILL should the verifier die
                )
            except OSError as exc:
                reason = exc.strerror or str(exc)
                raise LosslessError(
                    f"cannot start replica command {shlex.join(self.argv)!r}: {reason}"
                ) from None
        if self.pid1 == "namespace":
            try:
                await self._find_pid1()
            except BaseException:  # cancelled by a closing lab: never leave the group behind,
                self.kill()  # and reap it now: a loop closed before the SIGKILLed process
                await self._reap_killed()  # was reaped leaves a subprocess "still running"
                raise

    async def _reap_killed(self) -> None:
        """Wait (bounded, 1 s) until the SIGKILLed main process has been reaped; a cancel that
        arrives meanwhile (a loop shutting down) ends the wait, the caller's error goes on."""
        assert self._proc is not None
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            async with asyncio.timeout(1.0):
                await self._proc.wait()

    def _check_executable(self) -> None:
        # unshare would report a missing command only in the replica's log, after the fact
        program = self.argv[0]
        if os.sep in program:
            path = program if os.path.isabs(program) else os.path.join(self.cwd or ".", program)
            found = os.path.isfile(path) and os.access(path, os.X_OK)
        else:
            found = shutil.which(program, path=self.env.get("PATH")) is not None
        if not found:
            raise LosslessError(
                f"cannot start replica command {shlex.join(self.argv)!r}: "
                "No such file or directory (or not executable)"
            )

    async def _find_pid1(self) -> None:
        """The namespace's PID 1 is unshare's only child: wait (bounded) until it exists."""
        assert self._proc is not None
        pid = self._proc.pid
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and self._proc.returncode is None:
            try:
                with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as f:
                    children = f.read().split()
            except OSError:
                return
            if children:
                self._main_pid = int(children[0])
                return
            await asyncio.sleep(0.002)

    def terminate(self) -> bool:
        """Send SIGTERM to the main process (see :meth:`stop`). False when it has exited."""
        return self.stop(signal.SIGTERM) is not None

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> str | None:
        """Send ``sig`` to the main process only, as a container runtime signals PID 1.

        Returns ``"delivered"``, ``"dropped"`` (PID 1 rules: the process has no handler for
        it, so the kernel, or the emulation, discards it) or None when the process has exited.
        Without PID 1 rules the signal is always delivered (its default action applies).
        """
        if self._proc is None or self._proc.returncode is not None:
            return None
        pid = self.pid
        assert pid is not None
        forced = sig in (signal.SIGKILL, signal.SIGSTOP)
        handled = handles_signal(pid, sig)
        if handled is None:
            return None
        if self.pid1 == "emulated" and not handled and not forced:
            return "dropped"
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return None
        if self.pid1 is not None and not handled and not forced:
            return "dropped"  # the kernel discarded it (pid_namespaces(7))
        return "delivered"

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
        """Wait until the main process has exited and been reaped; return its return code.

        In ``namespace`` mode the lab's child is ``unshare``, which reaps the namespace's PID 1
        and exits with its status; when both were SIGKILLed together the PID 1 may still be
        dying for a moment, so this also waits (bounded, 2 s) until it is gone."""
        if self._proc is None:
            raise RuntimeError("process not started")
        code = await self._proc.wait()
        main = self._main_pid
        if main is not None:
            deadline = time.monotonic() + 2.0
            while _running(main) and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
        return code

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
