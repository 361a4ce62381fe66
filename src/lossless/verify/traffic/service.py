"""The ``service`` traffic model: kube-proxy on each node, with its own lagged view."""

from __future__ import annotations

import random
from collections.abc import Callable

from lossless.errors import LosslessError
from lossless.verify.model import Clock, Endpoint, Event, EventKind
from lossless.verify.traffic.base import DelayedChanges, PropagationDelay, TrafficModel

__all__ = ["ServiceTraffic"]


class ServiceTraffic(TrafficModel):
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
