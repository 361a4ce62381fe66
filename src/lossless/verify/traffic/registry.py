"""The ``registry`` traffic model: clients learn endpoints by watching etcd, through a cache.

In a registry-based fleet the control plane is the registry, not the Kubernetes endpoint set:
replicas register themselves when ready (``lossless serve --registry etcd://...``) and
deregister at t0; callers watch the registry and route to what it lists. What they see lags
what the registry holds by their own client-side cache: a caller that re-reads its list every
``cache_ttl`` seconds keeps routing to a deregistered instance until its next refresh.

:class:`RegistryTraffic` models that: one watch on ``<prefix>/<service>/`` keeps the registry's
current set (a snapshot, then ``/v3/watch`` from the next revision; re-snapshot after the stream
breaks); each of ``clients`` callers refreshes its own view from that set every ``cache_ttl``
seconds at its own seeded phase (``cache_ttl = 0``: at once on every change). ``pick(client)``
chooses uniformly at random in that client's view. The lab's ``add``/``remove`` (readiness-probe
endpoint changes) do not reach the clients here; they only name endpoints (registry entries are
matched to replicas by port) and tell :meth:`settled` what the registry should converge to.

Events: a ``NOTE`` per registry change (``registry PUT v1-0``), ``VIEW_ADDED``/``VIEW_REMOVED``
per client as its view changes, so the analysis can join a failure with "deregistered at t0 +
4 ms, client 2 learned it 1.9 s later".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import threading
import time
from collections.abc import Callable

from lossless.errors import LosslessError, RegistryError
from lossless.etcdv3 import EtcdClient, Watch
from lossless.verify.model import Clock, Endpoint, Event, EventKind
from lossless.verify.traffic.base import TrafficModel

__all__ = ["RegistryTraffic", "registry_traffic", "watch_prefix"]

# Bound of the reads made before the run starts (reachability and stale registrations).
_PREFLIGHT_TIMEOUT = 2.0


def watch_prefix(prefix: str, service: str) -> str:
    """The etcd key prefix the instances of ``service`` live under: ``/<prefix>/<service>/``."""
    return f"/{prefix.strip('/')}/{service}/" if prefix.strip("/") else f"/{service}/"


def registry_traffic(
    url: str,
    *,
    clock: Clock,
    service: str,
    clients: int = 3,
    cache_ttl: float = 0.0,
    seed: int = 0,
    on_event: Callable[[Event], None] | None = None,
) -> RegistryTraffic:
    """A :class:`RegistryTraffic` on the etcd an ``etcd://`` URL names, once it is known to
    answer and to list no instance of ``service`` yet (the run's clients would send load to
    whatever is registered there: another deployment's instances, or stale registrations of a
    previous run that did not deregister). Raises :class:`LosslessError` (one line) otherwise.
    Call it inside the run's event loop."""
    from lossless.discovery.urls import etcd_from_url

    client, prefix, _ = etcd_from_url(url)
    where = watch_prefix(prefix, service)
    try:
        kvs, _revision = client.get_prefix(where, _PREFLIGHT_TIMEOUT)
    except RegistryError as exc:
        raise LosslessError(f"registry {url}: {exc}") from None
    if kvs:
        listed = ", ".join(
            f"{key.rsplit('/', 1)[-1]}" + (f" :{a[1]}" if (a := _address(v)) else "")
            for key, v in sorted(kvs.items())
        )
        raise LosslessError(
            f"registry {url}: {where} already lists {len(kvs)} instance(s) ({listed}): "
            "use a --service-name of the run's own, or wait until the stale registrations "
            "expire with their leases"
        )
    return RegistryTraffic(
        clock=clock,
        etcd=client,
        prefix=prefix,
        service=service,
        clients=clients,
        cache_ttl=cache_ttl,
        seed=seed,
        on_event=on_event,
    )


class RegistryTraffic(TrafficModel):
    """The ``registry`` model (see the module docstring). Create it inside the lab's event loop
    (the watch thread hands changes to that loop); :meth:`close` stops the watch.

    Each refresh copies the registry's whole current set (as the watch delivered it, in
    order), so a view is always a set the registry really listed: views lag, never reorder.
    Callers balance per request over per-endpoint connection pools
    (:attr:`per_endpoint_pools`): an instance's pooled connections are no longer used once
    the caller's view has dropped it, as gRPC closes a removed address's subchannel.
    """

    per_endpoint_pools = True

    def __init__(
        self,
        *,
        clock: Clock,
        etcd: EtcdClient,
        prefix: str,
        service: str,
        clients: int = 3,
        cache_ttl: float = 0.0,
        seed: int = 0,
        on_event: Callable[[Event], None] | None = None,
        settle_timeout: float = 15.0,
    ) -> None:
        if clients < 1:
            raise LosslessError(f"--clients must be >= 1 (got {clients})")
        if not cache_ttl >= 0:
            raise LosslessError(f"registry cache TTL must be >= 0 (got {cache_ttl})")
        self.clients = clients
        self.clock = clock
        self.etcd = etcd
        self.watch_prefix = watch_prefix(prefix, service)
        self.cache_ttl = cache_ttl
        self.seed = seed
        self.settle_timeout = settle_timeout
        self.on_event = on_event or (lambda event: None)
        self._loop = asyncio.get_running_loop()
        self._registry: dict[str, tuple[str, int]] = {}  # key -> (host, port)
        self._views: list[dict[str, Endpoint]] = [{} for _ in range(clients)]
        self._rngs = [random.Random(f"{seed}/pick/{c}") for c in range(clients)]
        self._ready: dict[str, Endpoint] = {}
        self._names: dict[int, str] = {}  # port -> replica name, from the lab
        self._timers: list[asyncio.TimerHandle | None] = [None] * clients
        self._closed = threading.Event()
        self._watch: Watch | None = None
        self._synced = asyncio.Event()
        self._thread = threading.Thread(target=self._watch_loop, name="registry-watch", daemon=True)
        self._thread.start()
        if cache_ttl > 0:
            for client in range(clients):
                phase = random.Random(f"{seed}/cache/{client}").uniform(0, cache_ttl)
                self._timers[client] = self._loop.call_later(phase, self._tick, client)

    # -- EndpointView ---------------------------------------------------------------------------
    def pick(self, client: int) -> Endpoint | None:
        view = self._views[client]
        if not view:
            return None
        names = sorted(view)
        return view[names[self._rngs[client].randrange(len(names))]]

    def view(self, client: int) -> list[Endpoint]:
        return [self._views[client][k] for k in sorted(self._views[client])]

    def registered(self) -> list[Endpoint]:
        """What the registry lists now (as the watch last saw it)."""
        return [self._endpoint(key) for key in sorted(self._registry)]

    def ready_endpoints(self) -> list[Endpoint]:
        return [self._ready[name] for name in sorted(self._ready)]

    # -- control plane (the lab) ----------------------------------------------------------------
    def add(self, endpoint: Endpoint, *, immediate: bool = False) -> None:
        self._names[endpoint.port] = endpoint.name
        if endpoint.ready:
            self._ready[endpoint.name] = endpoint
        else:  # not serving, or terminating: no longer what the registry should list
            self._ready.pop(endpoint.name, None)

    def remove(self, endpoint: Endpoint, *, immediate: bool = False) -> None:
        self._ready.pop(endpoint.name, None)

    async def settled(self) -> None:
        """Return once every client's view equals the registry and the registry lists exactly
        the lab's ready endpoints (by port), or after ``settle_timeout`` (a ``NOTE`` then says
        what never converged: a replica that did not register, or a stale registration)."""
        end = time.monotonic() + self.settle_timeout
        while time.monotonic() < end:
            if self._converged():
                return
            await asyncio.sleep(0.02)
        registered = sorted(port for _host, port in self._registry.values())
        ready = sorted(e.port for e in self._ready.values())
        self._note(
            f"registry not settled after {self.settle_timeout:g}s: registry ports "
            f"{registered}, ready ports {ready}"
        )

    def check_ready(self) -> None:
        """Raise :class:`LosslessError` unless the registry lists exactly the lab's ready
        endpoints (after :meth:`settled` at the start of a run: the replicas did register)."""
        if self._converged():
            return
        registered = sorted(port for _host, port in self._registry.values())
        ready = sorted(e.port for e in self._ready.values())
        if not self._synced.is_set():
            what = "the registry watch never answered"
        elif not registered:
            what = "no replica registered"
        else:
            what = f"registered ports {registered}, ready ports {ready}"
        raise LosslessError(
            f"replicas not registered under {self.watch_prefix} in etcd "
            f"{self.etcd.describe()} within {self.settle_timeout:g}s ({what}): the command must "
            "register itself when ready from LOSSLESS_REGISTRY, LOSSLESS_SERVICE_NAME and "
            "LOSSLESS_INSTANCE_ID (lossless serve does)"
        )

    def _converged(self) -> bool:
        if not self._synced.is_set():
            return False
        ports = {port for _host, port in self._registry.values()}
        if ports != {e.port for e in self._ready.values()}:
            return False
        keys = set(self._registry)
        return all(set(view) == keys for view in self._views)

    def close(self) -> None:
        """Stop the watch and the cache timers. Idempotent."""
        self._closed.set()
        for timer in self._timers:
            if timer is not None:
                timer.cancel()
        watch = self._watch
        if watch is not None:
            watch.close()

    # -- the watch (its own thread) -------------------------------------------------------------
    def _watch_loop(self) -> None:
        failures = 0
        while not self._closed.is_set():
            try:
                kvs, revision = self.etcd.get_prefix(self.watch_prefix, 2.0)
                self._post(self._reset, kvs)
                watch = self.etcd.watch(self.watch_prefix, start_revision=revision + 1)
                self._watch = watch
                if self._closed.is_set():
                    watch.close()
                    return
                failures = 0
                for event in watch:
                    self._post(self._change, event.type, event.key, event.value)
            except RegistryError as exc:
                if self._closed.is_set():
                    return
                failures += 1
                self._post(self._note, f"registry watch: {exc}")
                self._closed.wait(min(2.0, 0.1 * 2**failures))

    def _post(self, fn: Callable[..., None], *args: object) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: the run is over
            self._loop.call_soon_threadsafe(fn, *args)

    # -- registry changes (the loop's thread) ----------------------------------------------------
    def _reset(self, kvs: dict[str, bytes]) -> None:
        self._registry = {}
        for key, value in kvs.items():
            address = _address(value)
            if address is not None:
                self._registry[key] = address
        self._synced.set()
        self._note(f"registry snapshot: {len(self._registry)} instance(s)")
        if self.cache_ttl == 0:
            self._refresh_all()

    def _change(self, kind: str, key: str, value: bytes) -> None:
        if kind == "DELETE":
            if key in self._registry:
                name = self._endpoint(key).name
                del self._registry[key]
                self._note(f"registry DELETE {name}", name)
        else:
            address = _address(value)
            if address is None:
                return
            self._registry[key] = address
            name = self._endpoint(key).name
            self._note(f"registry PUT {name}", name)
        if self.cache_ttl == 0:
            self._refresh_all()

    def _tick(self, client: int) -> None:
        if self._closed.is_set():
            return
        self._refresh(client)
        self._timers[client] = self._loop.call_later(self.cache_ttl, self._tick, client)

    def _refresh_all(self) -> None:
        for client in range(self.clients):
            self._refresh(client)

    def _refresh(self, client: int) -> None:
        view = self._views[client]
        now = self.clock.now()
        for key in sorted(set(view) - set(self._registry)):
            endpoint = view.pop(key)
            self.on_event(Event(now, EventKind.VIEW_REMOVED, endpoint.name, client))
        for key in sorted(set(self._registry) - set(view)):
            endpoint = view[key] = self._endpoint(key)
            self.on_event(Event(now, EventKind.VIEW_ADDED, endpoint.name, client))

    def _endpoint(self, key: str) -> Endpoint:
        host, port = self._registry[key]
        return Endpoint(self._names.get(port, key.rsplit("/", 1)[-1]), host, port)

    def _note(self, detail: str, replica: str = "") -> None:
        self.on_event(Event(self.clock.now(), EventKind.NOTE, replica, None, detail))


def _address(value: bytes) -> tuple[str, int] | None:
    """``(address, port)`` of a registry value (lossless.discovery.instance's JSON format)."""
    try:
        data = json.loads(value)
        return str(data["address"]), int(data["port"])
    except (ValueError, KeyError, TypeError):
        return None
