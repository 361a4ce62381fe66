"""A real HAProxy for the ``ingress`` traffic model: configuration, process, runtime API, log.

:class:`HAProxySettings` holds the settings that decide what a client sees when a backend goes
away (retries, redispatch, ``retry-on``, ``http-reuse``, timeouts, health checks); its defaults
mirror ingress-nginx's (see docs/ingress.md for the mapping). :func:`render_config` turns them
into a configuration with one frontend (``ingress``) on a loopback port and one backend
(``replicas``) whose servers are added and removed at run time through the runtime API.

:class:`HAProxy` runs ``haproxy -db -f CONFIG`` in its own session (process group) with a
runtime API socket in a private temporary directory and the access log on its standard output,
which a reader task parses (:func:`parse_log_line`) as lines arrive. ``stop()`` always ends the
whole group (SIGTERM, then SIGKILL after a grace), and the process gets SIGKILL from the kernel
should the verifier itself die (``PR_SET_PDEATHSIG``).

The log format (:data:`LOG_FORMAT`) carries the request's ``x-lossless-seq`` header (captured in
the frontend), so every proxy log line joins the client's record of the same request.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import os
import shutil
import signal
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lossless.errors import LosslessError

__all__ = [
    "BACKEND",
    "FRONTEND",
    "LOG_FORMAT",
    "HAProxy",
    "HAProxySettings",
    "ProxyLogEntry",
    "parse_log_line",
    "render_config",
    "runtime_command",
]

FRONTEND = "ingress"
BACKEND = "replicas"

# One access log line per request, space separated, every field non-empty (HAProxy prints "-"
# for an empty sample). The seq comes from `capture request header x-lossless-seq`, the only
# capture of the frontend (index 0).
LOG_FORMAT = (
    "lossless %Ts.%ms %[capture.req.hdr(0)] %ST %tsc %rc %s %Ti %TR %Tw %Tc %Tr %Ta %Tt %B "
    "%cp %bp %sp %rt %sc %[bc_err] %[fc_err]"
)
_LOG_FIELDS = 22

_PR_SET_PDEATHSIG = 1
_STOP_GRACE = 2.0  # seconds between SIGTERM and SIGKILL of the HAProxy process group

# HAProxy's connection error codes (bc_err / fc_err, "fc_err" in configuration.txt) that the
# analysis names; others are shown as their number.
CONN_ERRORS: dict[int, str] = {
    0: "",
    1: "connection closed by peer",
    10: "connection refused",
    11: "connection reset",
    12: "network unreachable",
    13: "host unreachable",
    16: "connect timeout",
}


def _seconds(value: float) -> str:
    """A HAProxy time value: whole milliseconds."""
    return f"{max(0, round(value * 1000))}ms"


@dataclasses.dataclass(frozen=True)
class HAProxySettings:
    """The proxy settings that decide outcomes. Defaults mirror ingress-nginx:

    - ``retries=2`` and ``redispatch=1``: nginx's ``proxy-next-upstream-tries 3`` (3 attempts,
      each on another upstream); HAProxy's own default is 3 retries on the same server with a
      1 s turn-around, redispatching only on the last;
    - ``retry_on``: nginx's ``proxy-next-upstream "error timeout"`` (connect failure, connection
      closed before the response header, response timeout) for idempotent requests;
    - ``http_reuse="safe"``: backend keep-alive pools (nginx keeps ``upstream-keepalive``
      connections); ``"never"`` opens one backend connection per client connection;
    - ``timeout_connect=5``, ``timeout_server=60`` (``proxy-connect-timeout``,
      ``proxy-read-timeout``), ``timeout_client=60``, ``timeout_keep_alive=75`` (nginx's client
      ``keep-alive 75``);
    - ``checks=False``: ingress-nginx does no active health checks (it follows the Endpoints);
      ``True`` adds ``check inter`` HTTP checks of ``check_path`` (``fall``/``rise``).
    """

    retries: int = 2
    redispatch: int = 1  # "option redispatch <interval>"; 0: no redispatch
    retry_on: tuple[str, ...] = ("conn-failure", "empty-response", "response-timeout")
    http_reuse: str = "safe"
    timeout_connect: float = 5.0
    timeout_server: float = 60.0
    timeout_client: float = 60.0
    timeout_keep_alive: float = 75.0
    checks: bool = False
    check_path: str = "/"
    check_interval: float = 1.0
    check_fall: int = 1
    check_rise: int = 1
    balance: str = "roundrobin"

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise LosslessError(f"ingress retries must be >= 0 (got {self.retries})")
        if self.http_reuse not in ("never", "safe", "aggressive", "always"):
            raise LosslessError(
                f"ingress http-reuse must be never, safe, aggressive or always "
                f"(got {self.http_reuse!r})"
            )
        if self.balance not in ("roundrobin", "leastconn", "random", "first"):
            raise LosslessError(f"ingress balance {self.balance!r}: not a dynamic algorithm")
        allowed = {
            "none",
            "conn-failure",
            "empty-response",
            "junk-response",
            "response-timeout",
            "0rtt-rejected",
            "all-retryable-errors",
            *(str(code) for code in (401, 403, 404, 408, 425, 500, 501, 502, 503, 504)),
        }
        unknown = [word for word in self.retry_on if word not in allowed]
        if unknown or not self.retry_on:
            raise LosslessError(f"ingress retry-on: unknown keyword(s) {', '.join(unknown)}")
        for name in ("timeout_connect", "timeout_server", "timeout_client", "timeout_keep_alive"):
            if not getattr(self, name) > 0:
                raise LosslessError(f"ingress {name.replace('_', '-')} must be > 0")
        if not self.check_path.startswith("/"):
            raise LosslessError(f"ingress check path must start with / (got {self.check_path!r})")

    @classmethod
    def parse(cls, text: str, base: HAProxySettings | None = None) -> HAProxySettings:
        """``"retries=0,redispatch=0,retry-on=conn-failure+empty-response,checks=on"``: the
        fields by name (``-`` or ``_``), comma separated, over ``base`` (default: the defaults).
        ``retry-on`` words are joined with ``+``. A bad key or value raises LosslessError."""
        current = base or cls()
        fields = {f.name: f for f in dataclasses.fields(cls)}
        changes: dict[str, Any] = {}
        for item in filter(None, (part.strip() for part in text.split(","))):
            key, sep, value = item.partition("=")
            name = key.strip().replace("-", "_")
            if not sep or name not in fields:
                known = ", ".join(n.replace("_", "-") for n in fields)
                raise LosslessError(f"ingress option {item!r}: expected KEY=VALUE with {known}")
            old = getattr(current, name)
            try:
                if isinstance(old, bool):
                    if value.lower() not in ("on", "off", "true", "false", "1", "0"):
                        raise ValueError(value)
                    changes[name] = value.lower() in ("on", "true", "1")
                elif isinstance(old, int):
                    changes[name] = int(value)
                elif isinstance(old, float):
                    changes[name] = float(value.removesuffix("s"))
                elif isinstance(old, tuple):
                    changes[name] = tuple(w for w in value.split("+") if w)
                else:
                    changes[name] = value
            except ValueError:
                raise LosslessError(f"ingress option {item!r}: bad value") from None
        return dataclasses.replace(current, **changes)

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["retry_on"] = list(self.retry_on)
        return out

    def server_options(self) -> str:
        """The options of every ``add server`` (health checks when enabled)."""
        if not self.checks:
            return ""
        return (
            f"check inter {_seconds(self.check_interval)} fall {self.check_fall} "
            f"rise {self.check_rise}"
        )


def render_config(settings: HAProxySettings, *, host: str, port: int, socket_path: Path) -> str:
    """The whole configuration: log to stdout in :data:`LOG_FORMAT`, the runtime API on
    ``socket_path`` (admin level), frontend ``ingress`` on ``host:port`` adding the
    ``x-lossless-replica: <server>`` response header, backend ``replicas`` with no server (they
    are added through the runtime API)."""
    s = settings
    redispatch = (
        "    no option redispatch" if s.redispatch == 0 else f"    option redispatch {s.redispatch}"
    )
    checks = ""
    if s.checks:
        checks = f"    option httpchk GET {s.check_path}\n"
    return (
        "global\n"
        "    log stdout format raw local0 info\n"
        f"    stats socket {socket_path} mode 600 level admin\n"
        "    stats timeout 10s\n"
        "    maxconn 8192\n"
        "    hard-stop-after 2s\n"
        "\n"
        "defaults\n"
        "    mode http\n"
        "    log global\n"
        "    option dontlognull\n"
        f'    log-format "{LOG_FORMAT}"\n'
        f"    timeout connect {_seconds(s.timeout_connect)}\n"
        f"    timeout client {_seconds(s.timeout_client)}\n"
        f"    timeout server {_seconds(s.timeout_server)}\n"
        f"    timeout http-keep-alive {_seconds(s.timeout_keep_alive)}\n"
        "    timeout http-request 10s\n"
        "\n"
        f"frontend {FRONTEND}\n"
        f"    bind {host}:{port}\n"
        "    capture request header x-lossless-seq len 12\n"
        # which replica answered: the load generator reads it into Record.replica
        "    http-response set-header x-lossless-replica %s\n"
        f"    default_backend {BACKEND}\n"
        "\n"
        f"backend {BACKEND}\n"
        f"    balance {s.balance}\n"
        f"    retries {s.retries}\n"
        f"{redispatch}\n"
        f"    retry-on {' '.join(s.retry_on)}\n"
        f"    http-reuse {s.http_reuse}\n"
        f"{checks}"
    )


# -- the access log --------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, slots=True)
class ProxyLogEntry:
    """One HAProxy access log line (times in ms as HAProxy logs them, -1: not reached).

    ``accepted`` is the Unix time HAProxy accepted the request; ``seq`` the request's
    ``x-lossless-seq`` (None without one); ``status`` the status sent to the client (-1: none);
    ``termination`` the 4-character termination state (``----`` normal, ``SC--`` connect to
    the server failed, ``SH--`` server closed before the headers, ``CD--`` client aborted...);
    ``retries`` the retries HAProxy made and ``redispatched`` whether it moved to another server;
    ``server`` the last server tried (``""``: none). ``backend_port`` is HAProxy's source port to
    the server (requests on one backend connection share it: a reused pooled connection);
    ``client_port`` the client's source port; ``bc_err``/``fc_err`` HAProxy's connection error
    codes (:data:`CONN_ERRORS`)."""

    accepted: float
    seq: int | None
    status: int
    termination: str
    retries: int
    redispatched: bool
    server: str
    ti: int
    treq: int
    tw: int
    tc: int
    tr: int
    ta: int
    tt: int
    bytes: int
    client_port: int
    backend_port: int
    server_port: int
    request_counter: int
    server_conns: int
    bc_err: int
    fc_err: int

    def to_json(self, origin: float = 0.0) -> dict[str, Any]:
        """As a JSON object; ``t`` is ``accepted - origin`` (run-relative with the run's
        ``wall_origin``)."""
        out = dataclasses.asdict(self)
        out["t"] = round(self.accepted - origin, 3)
        return out

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> ProxyLogEntry:
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [n for n in names if n not in obj]
        if missing:
            raise ValueError(f"missing field(s) {', '.join(missing)}")
        return cls(**{n: obj[n] for n in names})


def _int(text: str) -> int:
    return -1 if text in ("-", "") else int(text)


def parse_log_line(line: str) -> ProxyLogEntry | None:
    """Parse one line written in :data:`LOG_FORMAT`; None for any other line (HAProxy's own
    messages). Raises ValueError for a line that claims the format but does not fit it."""
    parts = line.split()
    if not parts or parts[0] != "lossless":
        return None
    if len(parts) != _LOG_FIELDS:
        raise ValueError(f"expected {_LOG_FIELDS} fields, got {len(parts)}")
    (_, accepted, seq, status, term, retries, server, ti, treq, tw, tc, tr, ta, tt) = parts[:14]
    (nbytes, cport, bport, sport, counter, sconns, bc_err, fc_err) = parts[14:]
    return ProxyLogEntry(
        accepted=float(accepted),
        seq=int(seq) if seq.isdigit() else None,
        status=_int(status),
        termination=term,
        retries=int(retries.lstrip("+")),
        redispatched=retries.startswith("+"),
        server="" if server.startswith("<") else server,
        ti=_int(ti),
        treq=_int(treq),
        tw=_int(tw),
        tc=_int(tc),
        tr=_int(tr),
        ta=_int(ta),
        tt=_int(tt),
        bytes=_int(nbytes),
        client_port=_int(cport),
        backend_port=max(0, _int(bport)),
        server_port=max(0, _int(sport)),
        request_counter=_int(counter),
        server_conns=_int(sconns),
        bc_err=max(0, _int(bc_err)),
        fc_err=max(0, _int(fc_err)),
    )


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


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    # A safety net for a verifier killed with SIGKILL: HAProxy gets SIGKILL too (Linux only).
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


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
    any time (also when ``start()`` failed half way). ``kill()`` is the synchronous last resort
    (SIGKILL to the group) for a caller that cannot await. Not reusable after ``stop()``.
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
                preexec_fn=_die_with_parent,
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
            if proc is not None and proc.returncode is None:  # cancelled while stopping
                self.kill()
            if self.dir is not None:
                shutil.rmtree(self.dir, ignore_errors=True)

    async def __aenter__(self) -> HAProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
