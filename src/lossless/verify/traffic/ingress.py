"""The ``ingress`` traffic model: every client goes through a real HAProxy (an L7 proxy).

Most traffic reaches pods through an ingress controller, which adds its own failure modes:
backend keep-alive pools, retries that hide some errors and not others, and silent closes of
client connections that never reach a log. :class:`IngressTraffic` puts a real HAProxy
(:mod:`lossless.verify.haproxy.process`) between the load generator and the replicas:

- ``pick(client)`` returns the one frontend endpoint (name ``"ingress"``) for every client: the
  load generator's clients are callers of the ingress, each with its own keep-alive pool to it;
- control-plane changes (``add``/``remove`` from the lab) reach HAProxy through its runtime
  API the way an ingress controller applies them: one client of
  :class:`~lossless.verify.traffic.sync.SyncedViews` with a timing ``profile`` (default
  ``ingress-nginx``: the watch lag, then syncs rate-limited to 0.3/s with burst 1, then the Lua
  balancer's 1 s re-read), each sync applying the whole ready set: ``add server`` +
  ``enable server`` for a new replica (``set server ... addr``/``state ready`` for a known
  name), ``set server ... state maint`` for a removed one (HAProxy sends it no new request;
  requests in flight finish). The moment it is applied is a ``VIEW_ADDED``/``VIEW_REMOVED``
  event with ``client=0`` (the ingress is the one client whose view decides routing). The
  ingress routes to ready endpoints only (no serving-terminating fallback);
- HAProxy adds ``x-lossless-replica: <server>`` to every response it forwards, so records name
  the replica that answered; its access log (with the request's ``x-lossless-seq``) is written
  to ``proxy.jsonl`` next to the run's files (:data:`PROXY_LOG`) for
  :mod:`lossless.verify.analysis.proxy`.

Lifecycle: ``await start()`` (or ``async with``) before the lab adds endpoints; ``close()`` (the
protocol's, called by the lab) drops pending changes and sends HAProxy SIGTERM; ``await
aclose()`` waits for it to exit (SIGKILL after 2 s), reads its log to the end and closes
``proxy.jsonl``. HAProxy runs in its own process group and is always stopped: by ``aclose()``
on every path out of ``async with`` (errors, cancellation on SIGINT), and by the kernel if the
verifier itself is killed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from lossless.errors import LosslessError
from lossless.verify.haproxy.config import BACKEND, HAProxySettings
from lossless.verify.haproxy.log import ProxyLogEntry
from lossless.verify.haproxy.process import HAProxy
from lossless.verify.model import Clock, Endpoint, Event, EventKind
from lossless.verify.traffic.base import PropagationDelay
from lossless.verify.traffic.sync import SyncedTraffic, TimingProfile

__all__ = ["INGRESS", "PROXY_LOG", "IngressTraffic"]

INGRESS = "ingress"  # the name of the frontend endpoint every client connects to
PROXY_LOG = "proxy.jsonl"

# HAProxy's own server state messages that come from health checks (not from our commands).
_CHECK_MESSAGE = re.compile(rf"^(?:\[\w+\]\s+)?(?:Health check for )?[Ss]erver {BACKEND}/(\S+)")


class IngressTraffic(SyncedTraffic):
    """A TrafficModel backed by HAProxy (see the module docstring).

    ``clients`` is the number of client pools the load generator keeps to the ingress;
    ``profile`` (default ``ingress-nginx``), ``delay`` (its watch lag) and ``seed`` decide when
    each change reaches HAProxy; ``settings`` are HAProxy's
    (defaults: ingress-nginx-like, :class:`~lossless.verify.haproxy.process.HAProxySettings`);
    ``proxy_log`` is where the access log is written as JSON lines (None: kept in memory only,
    in :attr:`entries`). A runtime API command that fails is a NOTE event and is raised from
    the next ``settled()``.
    """

    def __init__(
        self,
        *,
        clock: Clock,
        clients: int = 3,
        delay: PropagationDelay | None = None,
        seed: int = 0,
        on_event: Callable[[Event], None] | None = None,
        settings: HAProxySettings | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        proxy_log: Path | None = None,
        profile: TimingProfile | None = None,
    ) -> None:
        if clients < 1:
            raise LosslessError(f"--clients must be >= 1 (got {clients})")
        # one view: the ingress controller's, that reconfigures HAProxy
        super().__init__(clock, clients, delay, seed, on_event, profile, "ingress-nginx", views=1)
        self.settings = settings or HAProxySettings()
        self.proxy_log = proxy_log
        self.entries: list[ProxyLogEntry] = []
        self.haproxy = HAProxy(
            self.settings, host=host, port=port, on_log=self._on_log, on_message=self._on_message
        )
        self._endpoint: Endpoint | None = None
        self._log: TextIO | None = None
        self._servers: dict[str, Endpoint] = {}  # every server HAProxy knows (in maint or not)
        self._errors: list[LosslessError] = []

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Start HAProxy (LosslessError when it cannot) and open ``proxy_log``."""
        if self.proxy_log is not None:
            self._log = open(self.proxy_log, "a", encoding="utf-8")  # noqa: SIM115 - aclose()
        try:
            await self.haproxy.start()
        except BaseException:
            await self.aclose()
            raise
        self._endpoint = Endpoint(INGRESS, self.haproxy.host, self.haproxy.port)

    async def aclose(self) -> None:
        """Drop pending changes, stop HAProxy, read its log to the end. Idempotent."""
        self.close()
        try:
            await self.haproxy.stop()
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None

    async def __aenter__(self) -> IngressTraffic:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def close(self) -> None:
        """Cancel the changes still pending and send HAProxy SIGTERM (``aclose()`` waits for it
        and reads the rest of its log). Idempotent; called by the lab's ``close()``."""
        self._sync.close()
        self.haproxy.terminate()

    def kill(self) -> None:
        """Synchronous last resort: SIGKILL HAProxy's process group."""
        self.haproxy.kill()

    # -- EndpointView ---------------------------------------------------------------------------
    def pick(self, client: int) -> Endpoint | None:
        """The ingress's frontend for every client (None before ``start()``)."""
        return self._endpoint

    @property
    def endpoint(self) -> Endpoint:
        if self._endpoint is None:
            raise RuntimeError("IngressTraffic not started")
        return self._endpoint

    def servers(self) -> list[str]:
        """The servers HAProxy routes new requests to now (applied changes), sorted."""
        return sorted(name for name, ep in self._servers.items() if ep.port > 0)

    # -- control plane (add / remove / ready_endpoints: SyncedTraffic) --------------------------
    def _apply(self, _client: int, old: dict[str, Endpoint], new: dict[str, Endpoint]) -> None:
        # one sync applies the whole ready set: removals first, then additions
        for name in sorted(set(old) - set(new)):
            self._apply_one(old[name], False)
        for name in sorted(set(new) - set(old)):
            self._apply_one(new[name], True)

    def _apply_one(self, endpoint: Endpoint, added: bool) -> None:
        try:
            detail = self._add_server(endpoint) if added else self._drop_server(endpoint)
        except LosslessError as exc:
            self._errors.append(exc)
            self.on_event(Event(self.clock.now(), EventKind.NOTE, endpoint.name, 0, str(exc)))
            return
        kind = EventKind.VIEW_ADDED if added else EventKind.VIEW_REMOVED
        self.on_event(Event(self.clock.now(), kind, endpoint.name, 0, detail))

    def _command(self, text: str, ok: Callable[[str], bool]) -> None:
        answer = self.haproxy.command(text)
        if not ok(answer):
            raise LosslessError(f"haproxy runtime API: {text!r}: {answer.strip()}")

    def _add_server(self, ep: Endpoint) -> str:
        server = f"{BACKEND}/{ep.name}"
        if ep.name not in self._servers:
            options = self.settings.server_options()
            self._command(
                f"add server {server} {ep.host}:{ep.port} {options}".strip(),
                lambda answer: "New server registered" in answer,
            )
            if self.settings.checks:
                self._command(f"enable health {server}", lambda answer: not answer.strip())
            self._command(f"enable server {server}", lambda answer: not answer.strip())
            self._servers[ep.name] = ep
            return f"haproxy: add server {server} {ep.host}:{ep.port}"
        self._command(
            f"set server {server} addr {ep.host} port {ep.port}",
            lambda answer: "changed" in answer or "no need" in answer or not answer.strip(),
        )
        self._command(f"set server {server} state ready", lambda answer: not answer.strip())
        self._servers[ep.name] = ep
        return f"haproxy: set server {server} state ready"

    def _drop_server(self, ep: Endpoint) -> str:
        server = f"{BACKEND}/{ep.name}"
        if ep.name not in self._servers:
            return "haproxy: not a server"
        self._command(f"set server {server} state maint", lambda answer: not answer.strip())
        self._servers[ep.name] = Endpoint(ep.name, ep.host, 0)
        return f"haproxy: set server {server} state maint"

    async def settled(self) -> None:
        """Return once every scheduled change has reached HAProxy; raise the first runtime API
        failure (LosslessError) if one happened."""
        await self._sync.settled()
        if self._errors:
            raise self._errors[0]

    # -- the log --------------------------------------------------------------------------------
    def _on_log(self, entry: ProxyLogEntry) -> None:
        self.entries.append(entry)
        if self._log is not None:
            line = {"kind": "request", **entry.to_json(self.clock.wall_origin)}
            self._log.write(json.dumps(line, separators=(",", ":")) + "\n")
            self._log.flush()

    def _on_message(self, text: str) -> None:
        now = self.clock.now()
        if self._log is not None:
            line = {"kind": "message", "t": round(now, 3), "text": text}
            self._log.write(json.dumps(line, separators=(",", ":")) + "\n")
            self._log.flush()
        match = _CHECK_MESSAGE.match(text)
        if match and "maintenance" not in text:
            # a health check changed a server's state: HAProxy's own view of the replica
            self.on_event(Event(now, EventKind.NOTE, match.group(1), 0, f"haproxy: {text}"))
