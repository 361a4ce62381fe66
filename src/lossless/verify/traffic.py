"""Traffic models: how each simulated client learns the ready endpoint set.

A traffic model is an :class:`~lossless.verify.model.EndpointView` (the load generator calls
``pick(client)`` for every new connection) that the lab feeds with control-plane changes:
``add(endpoint)`` when a replica enters the ready endpoint set, ``remove(endpoint)`` when it leaves
it. Each model decides when each client sees the change, and records that moment as a
``VIEW_ADDED``/``VIEW_REMOVED`` event.

Models: ``service`` (here), ``registry`` (:mod:`lossless.verify.traffic_registry`: clients
watch etcd); ``ingress`` plugs in behind the same :class:`TrafficModel` protocol.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import random
from collections.abc import Callable
from typing import Protocol

from lossless.errors import LosslessError
from lossless.verify.model import Clock, Endpoint, Event, EventKind

__all__ = ["TRAFFIC_MODELS", "PropagationDelay", "ServiceTraffic", "TrafficModel"]

TRAFFIC_MODELS = ("service", "registry", "ingress")


class TrafficModel(Protocol):
    """An :class:`EndpointView` the lab drives. ``add``/``remove`` are called at control-plane
    time; ``immediate=True`` makes every client see the change at once (the naive baseline's
    "route to it at once"). ``settled()`` waits until every scheduled change has been applied;
    ``close()`` drops the ones still pending."""

    clients: int

    def pick(self, client: int) -> Endpoint | None: ...

    def add(self, endpoint: Endpoint, *, immediate: bool = False) -> None: ...

    def remove(self, endpoint: Endpoint, *, immediate: bool = False) -> None: ...

    def ready_endpoints(self) -> list[Endpoint]: ...

    async def settled(self) -> None: ...

    def close(self) -> None: ...


@dataclasses.dataclass(frozen=True, slots=True)
class PropagationDelay:
    """Per-client delay between a control-plane change and the client acting on it: uniform in
    ``[mean - jitter, mean + jitter]`` (clamped at 0), drawn from a generator seeded by the run
    seed, the client, the endpoint and the change, so a run is reproducible whatever the order in
    which changes happen."""

    mean: float = 1.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if not (math.isfinite(self.mean) and self.mean >= 0):
            raise LosslessError(f"propagation delay must be >= 0 (got {self.mean})")
        if not (math.isfinite(self.jitter) and self.jitter >= 0):
            raise LosslessError(f"propagation jitter must be >= 0 (got {self.jitter})")

    @classmethod
    def parse(cls, text: str) -> PropagationDelay:
        """``"1"``, ``"1.5"``, ``"1±0.5"``, ``"1+-0.5"`` or ``"1:0.5"`` (seconds)."""
        for sep in ("±", "+-", ":"):
            if sep in text:
                mean_text, jitter_text = text.split(sep, 1)
                break
        else:
            mean_text, jitter_text = text, "0"
        try:
            return cls(float(mean_text), float(jitter_text))
        except ValueError:
            raise LosslessError(
                f"bad propagation delay {text!r}: expected MEAN or MEAN±JITTER in seconds"
            ) from None

    @property
    def max(self) -> float:
        return self.mean + self.jitter

    def draw(self, seed: int, client: int, endpoint: str, change: str) -> float:
        rng = random.Random(f"{seed}/{client}/{endpoint}/{change}")
        return max(0.0, self.mean + rng.uniform(-self.jitter, self.jitter))

    def __str__(self) -> str:
        return f"{self.mean:g}±{self.jitter:g}s"


class DelayedChanges:
    """Propagation of control-plane endpoint changes to ``clients`` observers, each after its own
    seeded delay: the part every delayed traffic model shares.

    :meth:`schedule` draws ``delay.draw(seed, client, endpoint, change)`` per client (0 when
    ``immediate``) and calls ``apply(client, endpoint, added)`` when it is due, on the running
    event loop. Changes of one endpoint apply in the order they were made for each client (a
    removal drawn shorter than a pending add waits for it), as a watch delivers events in order.
    :meth:`settled` returns once nothing is pending; :meth:`close` cancels what is pending and
    ignores later changes (idempotent).
    """

    def __init__(
        self,
        *,
        clients: int,
        delay: PropagationDelay,
        seed: int,
        clock: Clock,
        apply: Callable[[int, Endpoint, bool], None],
    ) -> None:
        self.clients = clients
        self.delay = delay
        self.seed = seed
        self.clock = clock
        self._apply = apply
        self._pending: set[asyncio.TimerHandle] = set()
        # per (client, endpoint name): time the last scheduled change for it takes effect
        self._last_due: dict[tuple[int, str], float] = {}
        self._changes: dict[str, int] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        self.closed = False

    def schedule(self, endpoint: Endpoint, added: bool, immediate: bool) -> None:
        if self.closed:
            return
        n = self._changes[endpoint.name] = self._changes.get(endpoint.name, 0) + 1
        change = f"{'add' if added else 'remove'}{n}"
        loop = asyncio.get_running_loop()
        now = self.clock.now()
        for client in range(self.clients):
            lag = 0.0 if immediate else self.delay.draw(self.seed, client, endpoint.name, change)
            due = max(now + lag, self._last_due.get((client, endpoint.name), 0.0))
            self._last_due[(client, endpoint.name)] = due
            if due <= now:
                self._apply(client, endpoint, added)
                continue
            holder: list[asyncio.TimerHandle] = []
            handle = loop.call_later(due - now, self._fire, client, endpoint, added, holder)
            holder.append(handle)
            self._pending.add(handle)
            self._idle.clear()

    def _fire(
        self, client: int, endpoint: Endpoint, added: bool, holder: list[asyncio.TimerHandle]
    ) -> None:
        self._pending.discard(holder[0])
        if not self._pending:
            self._idle.set()
        self._apply(client, endpoint, added)

    async def settled(self) -> None:
        await self._idle.wait()

    def close(self) -> None:
        self.closed = True
        for handle in self._pending:
            handle.cancel()
        self._pending.clear()
        self._idle.set()


class ServiceTraffic:
    """The ``service`` model: ``clients`` kube-proxy nodes, each with its own lagged copy of the
    ready endpoint set.

    A control-plane change reaches client ``c`` after ``delay.draw(seed, c, ...)`` seconds; until
    then ``pick(c)`` keeps choosing from the old set. ``pick`` chooses uniformly at random (a
    per-client generator seeded from ``seed``) among the client's view, like kube-proxy's
    iptables/nftables random probability rules. Existing connections are not this model's
    business: the load generator keeps them pinned to the endpoint they were opened to, as
    conntrack does.

    Changes for the same endpoint apply in the order they were made for each client (a removal
    drawn shorter than a pending add waits for it), as a watch delivers events in order.
    """

    def __init__(
        self,
        *,
        clock: Clock,
        clients: int = 3,
        delay: PropagationDelay | None = None,
        seed: int = 0,
        on_event: Callable[[Event], None] | None = None,
    ) -> None:
        if clients < 1:
            raise LosslessError(f"--clients must be >= 1 (got {clients})")
        self.clients = clients
        self.clock = clock
        self.delay = delay or PropagationDelay()
        self.seed = seed
        self.on_event = on_event or (lambda event: None)
        self._ready: dict[str, Endpoint] = {}
        self._views: list[dict[str, Endpoint]] = [{} for _ in range(clients)]
        self._rngs = [random.Random(f"{seed}/pick/{c}") for c in range(clients)]
        self._changes = DelayedChanges(
            clients=clients, delay=self.delay, seed=seed, clock=clock, apply=self._apply
        )

    # -- EndpointView -------------------------------------------------------------------------

    def pick(self, client: int) -> Endpoint | None:
        view = self._views[client]
        if not view:
            return None
        names = sorted(view)
        return view[names[self._rngs[client].randrange(len(names))]]

    def view(self, client: int) -> list[Endpoint]:
        """The endpoints client ``client`` routes new connections to now (sorted by name)."""
        return [self._views[client][name] for name in sorted(self._views[client])]

    def ready_endpoints(self) -> list[Endpoint]:
        """The control plane's ready set (what every client will eventually see)."""
        return [self._ready[name] for name in sorted(self._ready)]

    # -- control plane ------------------------------------------------------------------------

    def add(self, endpoint: Endpoint, *, immediate: bool = False) -> None:
        self._ready[endpoint.name] = endpoint
        self._schedule(endpoint, True, immediate)

    def remove(self, endpoint: Endpoint, *, immediate: bool = False) -> None:
        self._ready.pop(endpoint.name, None)
        self._schedule(endpoint, False, immediate)

    def _schedule(self, endpoint: Endpoint, added: bool, immediate: bool) -> None:
        self._changes.schedule(endpoint, added, immediate)

    def _apply(self, client: int, endpoint: Endpoint, added: bool) -> None:
        view = self._views[client]
        if added:
            view[endpoint.name] = endpoint
            kind = EventKind.VIEW_ADDED
        else:
            view.pop(endpoint.name, None)
            kind = EventKind.VIEW_REMOVED
        self.on_event(Event(self.clock.now(), kind, endpoint.name, client))

    async def settled(self) -> None:
        """Return once every scheduled change has reached every client."""
        await self._changes.settled()

    def close(self) -> None:
        """Cancel the changes still pending. Idempotent."""
        self._changes.close()
