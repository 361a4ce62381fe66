"""HAProxy configuration for the ``ingress`` traffic model.

:class:`HAProxySettings` holds the settings that decide what a client sees when a backend goes
away (retries, redispatch, ``retry-on``, ``http-reuse``, timeouts, health checks); its defaults
mirror ingress-nginx's (see docs/ingress.md for the mapping). :func:`render_config` turns them
into a configuration with one frontend (``ingress``) on a loopback port and one backend
(``replicas``) whose servers are added and removed at run time through the runtime API.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from lossless.errors import LosslessError
from lossless.verify.haproxy.log import LOG_FORMAT

__all__ = ["BACKEND", "FRONTEND", "HAProxySettings", "render_config"]

FRONTEND = "ingress"
BACKEND = "replicas"


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
