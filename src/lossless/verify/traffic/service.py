"""The ``service`` traffic model: kube-proxy on each node, with its own lagged view."""

from __future__ import annotations

import random
from collections.abc import Callable

from lossless.verify.model import Clock, Endpoint, Event, EventKind
from lossless.verify.traffic.base import PropagationDelay
from lossless.verify.traffic.sync import SyncedTraffic, TimingProfile

__all__ = ["ServiceTraffic", "view_events"]


def view_events(
    clock: Clock,
    client: int,
    old: dict[str, Endpoint],
    new: dict[str, Endpoint],
    detail: str = "",
) -> list[Event]:
    """The ``VIEW_REMOVED``/``VIEW_ADDED`` events of one client's routable set going from
    ``old`` to ``new`` (removals first, each group sorted by name). An endpoint that stays but
    is now routed only as serving-terminating gets a ``VIEW_ADDED`` whose detail says so."""
    now = clock.now()
    events = [
        Event(now, EventKind.VIEW_REMOVED, name, client, detail)
        for name in sorted(set(old) - set(new))
    ]
    for name in sorted(new):
        ep = new[name]
        if name not in old:
            extra = "serving-terminating fallback" if ep.terminating else ""
            events.append(Event(now, EventKind.VIEW_ADDED, name, client, extra or detail))
        elif ep.terminating and not old[name].terminating:
            events.append(Event(now, EventKind.NOTE, name, client, "routed as serving-terminating"))
    return events


class ServiceTraffic(SyncedTraffic):
    """The ``service`` model: ``clients`` kube-proxy nodes, each with its own lagged copy of the
    Service's endpoints.

    Each node learns the source's changes through :class:`SyncedViews` with ``profile``
    (default ``kube-proxy``: a watch lag of ``delay`` per change, delivered in order, then a
    BoundedFrequencyRunner with minSyncPeriod 1 s and burst 2 that applies the whole state),
    so a node's view is always a state the Service really had. A node routes new connections
    to the ready endpoints of its view, or to the serving-terminating ones when none is ready
    (``CategorizeEndpoints``). ``pick`` chooses uniformly at random (a per-client generator
    seeded from ``seed``) among them, like kube-proxy's iptables/nftables random probability
    rules. Existing connections are not this model's business: the load generator keeps them
    pinned to the endpoint they were opened to, as conntrack does.
    """

    def __init__(
        self,
        *,
        clock: Clock,
        clients: int = 3,
        delay: PropagationDelay | None = None,
        seed: int = 0,
        on_event: Callable[[Event], None] | None = None,
        profile: TimingProfile | None = None,
    ) -> None:
        super().__init__(clock, clients, delay, seed, on_event, profile, "kube-proxy")
        self._rngs = [random.Random(f"{seed}/pick/{c}") for c in range(clients)]

    # -- EndpointView -------------------------------------------------------------------------

    def pick(self, client: int) -> Endpoint | None:
        view = self._sync.views[client]
        if not view:
            return None
        names = sorted(view)
        return view[names[self._rngs[client].randrange(len(names))]]

    def view(self, client: int) -> list[Endpoint]:
        """The endpoints client ``client`` routes new connections to now (sorted by name)."""
        view = self._sync.views[client]
        return [view[name] for name in sorted(view)]

    # -- control plane (add / remove / ready_endpoints: SyncedTraffic) ------------------------
    def _apply(self, client: int, old: dict[str, Endpoint], new: dict[str, Endpoint]) -> None:
        for event in view_events(self.clock, client, old, new):
            self.on_event(event)

    async def settled(self) -> None:
        """Return once every client's view holds the Service's latest state."""
        await self._sync.settled()

    def close(self) -> None:
        """Cancel the changes still pending. Idempotent."""
        self._sync.close()
