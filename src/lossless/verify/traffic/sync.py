"""How clients learn endpoint changes: bounded-frequency syncs of the source's whole state.

Every client of a traffic model (a node's kube-proxy, an ingress controller) learns the endpoint
set the way Kubernetes' own clients do, in three stages:

1. **watch** (an informer): the source's changes reach the client *in the order they were made*,
   each after its own seeded lag (``lag``, :class:`~lossless.verify.traffic.base.PropagationDelay`)
   but never before the change made before it (``due = max(previous due, t + lag)``);
2. **sync** (``pkg/util/async/bounded_frequency_runner.go``, ``BoundedFrequencyRunner``): every
   delivery asks for a sync; a sync runs at once while the runner's token bucket
   (``burst`` tokens, one more every ``min_sync_period`` s) has a token, else when the next
   token is due, and requests made meanwhile are coalesced into it. A sync applies the
   informer's *whole current state* (kube-proxy's ``syncProxyRules`` rewrites every rule; an
   ingress controller posts every backend);
3. **poll** (``poll_period`` > 0): a consumer that re-reads what was applied on its own timer
   (ingress-nginx's Lua balancer reads the posted backends every second,
   ``BACKENDS_SYNC_INTERVAL = 1``), at a seeded phase per client.

So each client's view is always a state the source really had, and views lag but never reorder:
an addition made before a removal is never seen after it (issue 15). A view holds the
*routable* endpoints of that state (:func:`routable`): the ready ones, or, when the profile says
so and none is ready, the serving-terminating ones (kube-proxy's ``CategorizeEndpoints`` in
``pkg/proxy/topology.go``).

:class:`TimingProfile` names a set of these timings with their source; :data:`PROFILES` are the
built-in ones. Everything random is drawn from generators seeded by the run seed, so a run is
reproducible from its seed.
"""

from __future__ import annotations

import abc
import asyncio
import collections
import dataclasses
import math
import random
from collections.abc import Callable, Mapping
from typing import Any

from lossless.errors import LosslessError
from lossless.verify.model import Clock, Endpoint, Event
from lossless.verify.traffic.base import PropagationDelay, TrafficModel

__all__ = ["PROFILES", "SyncedTraffic", "SyncedViews", "TimingProfile", "profile_named", "routable"]


@dataclasses.dataclass(frozen=True, slots=True)
class TimingProfile:
    """The timing of one kind of client (see the module docstring). ``lag`` is the watch lag per
    change; ``min_sync_period``/``burst`` the BoundedFrequencyRunner's (0: sync on every
    delivery); ``poll_period`` a consumer's re-read period (0: none); ``terminating_fallback``
    routes to serving-terminating endpoints when no endpoint is ready; ``source`` says where the
    numbers come from."""

    name: str
    lag: PropagationDelay = dataclasses.field(default_factory=PropagationDelay)
    min_sync_period: float = 0.0
    burst: int = 1
    poll_period: float = 0.0
    terminating_fallback: bool = False
    source: str = ""

    def __post_init__(self) -> None:
        for field in ("min_sync_period", "poll_period"):
            value = getattr(self, field)
            if not (math.isfinite(value) and value >= 0):
                raise LosslessError(f"timing profile {self.name}: {field} must be >= 0")
        if self.burst < 1:
            raise LosslessError(f"timing profile {self.name}: burst must be >= 1")

    def with_lag(self, lag: PropagationDelay) -> TimingProfile:
        return dataclasses.replace(self, lag=lag)

    @property
    def worst_case(self) -> float:
        """The longest a change can take to reach a view: the largest lag, a full wait for
        the next sync token, and a full poll period."""
        return self.lag.max + self.min_sync_period + self.poll_period

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "lag": {"mean": self.lag.mean, "jitter": self.lag.jitter},
            "min_sync_period": round(self.min_sync_period, 6),
            "burst": self.burst,
            "poll_period": self.poll_period,
            "terminating_fallback": self.terminating_fallback,
            "worst_case": round(self.worst_case, 6),
            "source": self.source,
        }


PROFILES: dict[str, TimingProfile] = {
    profile.name: profile
    for profile in (
        TimingProfile(
            "kube-proxy",
            min_sync_period=1.0,
            burst=2,
            terminating_fallback=True,
            source=(
                "kubernetes pkg/proxy/iptables/proxier.go NewProxier: "
                "async.NewBoundedFrequencyRunner(minSyncPeriod, burstSyncs=2), "
                "minSyncPeriod default 1s; pkg/proxy/topology.go CategorizeEndpoints"
            ),
        ),
        TimingProfile(
            "ingress-nginx",
            min_sync_period=1 / 0.3,
            burst=1,
            poll_period=1.0,
            source=(
                "ingress-nginx internal/ingress/controller/nginx.go: syncRateLimiter = "
                "NewTokenBucketRateLimiter(--sync-rate-limit 0.3, 1); "
                "rootfs/etc/nginx/lua/balancer.lua: BACKENDS_SYNC_INTERVAL = 1"
            ),
        ),
        TimingProfile(
            "lag-only",
            source="the watch lag alone: no sync rate limit, no poll, ready endpoints only",
        ),
    )
}


def profile_named(name: str) -> TimingProfile:
    """The built-in profile ``name``; ``LosslessError`` naming the known ones otherwise."""
    try:
        return PROFILES[name]
    except KeyError:
        raise LosslessError(
            f"--traffic-profile {name}: unknown (profiles: {', '.join(PROFILES)})"
        ) from None


def routable(state: Mapping[str, Endpoint], *, fallback: bool) -> dict[str, Endpoint]:
    """The endpoints of ``state`` a client routes new connections to: the ready ones; when
    there is none and ``fallback``, the serving-terminating ones (``CategorizeEndpoints``)."""
    ready = {name: ep for name, ep in state.items() if ep.ready}
    if ready or not fallback:
        return ready
    return {name: ep for name, ep in state.items() if ep.serving and ep.terminating}


class SyncedViews:
    """The source's endpoint state and ``clients`` views of it (see the module docstring).

    :meth:`upsert`/:meth:`delete` change the source (a new *version* of its whole state);
    ``on_view(client, old, new)`` is called each time a client's routable set takes the value
    of a newer version (``old``/``new`` are name → endpoint maps; they may be equal when only
    non-routable endpoints changed). ``immediate=True`` makes every client take the new state
    at once (the naive baseline). :meth:`settled` returns once every client holds the latest
    version; :meth:`close` cancels what is pending and ignores later changes (idempotent).
    Runs on the event loop that calls it; not thread-safe.
    """

    def __init__(
        self,
        *,
        clients: int,
        profile: TimingProfile,
        seed: int,
        clock: Clock,
        on_view: Callable[[int, dict[str, Endpoint], dict[str, Endpoint]], None],
    ) -> None:
        if clients < 1:
            raise LosslessError(f"--clients must be >= 1 (got {clients})")
        self.clients = clients
        self.profile = profile
        self.seed = seed
        self.clock = clock
        self._on_view = on_view
        now = clock.now()
        self.states: list[dict[str, Endpoint]] = [{}]  # version -> the source's whole state
        self._changes: dict[str, int] = {}  # endpoint name -> changes made to it
        self._informer = [0] * clients  # version each client's watch has delivered
        self._due = [now] * clients  # when the last scheduled delivery is due (in order)
        # deliveries not yet made, in order: (due, version); one timer per client for the head,
        # so a client's deliveries fire in version order whatever the loop's wake-up times, and
        # changes due at the same instant are delivered together (reproducible from the seed)
        self._pending: list[collections.deque[tuple[float, int]]] = [
            collections.deque() for _ in range(clients)
        ]
        self._deliver_timer: list[asyncio.TimerHandle | None] = [None] * clients
        self._applied = [0] * clients  # version the client's runner last synced
        self.versions = [0] * clients  # version in effect in each view
        self.views: list[dict[str, Endpoint]] = [{} for _ in range(clients)]
        self._tokens = [float(profile.burst)] * clients
        self._token_t = [now] * clients
        self._sync_timer: list[asyncio.TimerHandle | None] = [None] * clients
        self._poll_timer: list[asyncio.TimerHandle | None] = [None] * clients
        self._phase = [
            random.Random(f"{seed}/poll/{c}").uniform(0, profile.poll_period)
            for c in range(clients)
        ]
        self._timers: set[asyncio.TimerHandle] = set()
        self._progress = asyncio.Event()
        self.closed = False

    # -- the source -----------------------------------------------------------------------------
    @property
    def current(self) -> dict[str, Endpoint]:
        return self.states[-1]

    def upsert(self, endpoint: Endpoint, *, immediate: bool = False) -> None:
        """Add ``endpoint`` to the source or replace the one of the same name."""
        if self.current.get(endpoint.name) == endpoint:
            return
        self._change(endpoint.name, {**self.current, endpoint.name: endpoint}, immediate)

    def delete(self, name: str, *, immediate: bool = False) -> None:
        """Remove the endpoint ``name`` from the source (nothing when it is not there)."""
        if name not in self.current:
            if immediate:
                self._catch_up_all()
            return
        state = dict(self.current)
        del state[name]
        self._change(name, state, immediate)

    def _change(self, name: str, state: dict[str, Endpoint], immediate: bool) -> None:
        if self.closed:
            return
        self.states.append(state)
        version = len(self.states) - 1
        n = self._changes[name] = self._changes.get(name, 0) + 1
        if immediate:
            self._catch_up_all()
            return
        now = self.clock.now()
        for client in range(self.clients):
            lag = self.profile.lag.draw(self.seed, client, name, f"change{n}")
            due = max(now + lag, self._due[client])
            self._due[client] = due
            pending = self._pending[client]
            if pending and pending[-1][0] == due:
                pending[-1] = (due, version)  # due with the one before it: delivered together
            else:
                pending.append((due, version))
            if self._deliver_timer[client] is None:
                self._deliver_timer[client] = self._later(due - now, self._deliver, client)

    def _catch_up_all(self) -> None:
        latest = len(self.states) - 1
        for client in range(self.clients):
            self._pending[client].clear()
            timer = self._deliver_timer[client]
            if timer is not None:
                timer.cancel()
                self._timers.discard(timer)
                self._deliver_timer[client] = None
            self._informer[client] = self._applied[client] = latest
            self._effect(client)

    # -- each client ----------------------------------------------------------------------------
    def _later(self, delay: float, fn: Callable[..., None], *args: Any) -> asyncio.TimerHandle:
        holder: list[asyncio.TimerHandle] = []

        def fire() -> None:
            self._timers.discard(holder[0])
            fn(*args)

        handle = asyncio.get_running_loop().call_later(max(0.0, delay), fire)
        holder.append(handle)
        self._timers.add(handle)
        return handle

    # The runner's decisions (a token or not, when the next sync and poll are due) are taken at
    # the model time ``at`` an event was due, never at the moment a late loop woke up for it.
    def _deliver(self, client: int) -> None:
        self._deliver_timer[client] = None
        pending = self._pending[client]
        if not pending:
            return
        due, version = pending.popleft()
        self._informer[client] = max(self._informer[client], version)
        if pending:
            delay = pending[0][0] - self.clock.now()
            self._deliver_timer[client] = self._later(delay, self._deliver, client)
        self._request_sync(client, due)

    def _request_sync(self, client: int, at: float) -> None:
        if self._sync_timer[client] is not None:
            return  # coalesced into the sync already waiting for a token
        period = self.profile.min_sync_period
        if period <= 0:
            self._sync(client, at)
            return
        at = max(at, self._token_t[client])
        tokens = min(
            float(self.profile.burst),
            self._tokens[client] + (at - self._token_t[client]) / period,
        )
        self._tokens[client], self._token_t[client] = tokens, at
        if tokens >= 1.0:
            self._tokens[client] = tokens - 1.0
            self._sync(client, at)
            return
        next_token = at + (1.0 - tokens) * period
        self._sync_timer[client] = self._later(
            next_token - self.clock.now(), self._sync_due, client, next_token
        )

    def _sync_due(self, client: int, at: float) -> None:
        self._sync_timer[client] = None
        # the token this timer waited for, exactly (recomputing it from the refill rate can
        # round to just below 1 and wait again for a delay too small to move the clock)
        self._tokens[client], self._token_t[client] = 1.0, at
        self._request_sync(client, at)

    def _sync(self, client: int, at: float) -> None:
        self._applied[client] = self._informer[client]
        poll = self.profile.poll_period
        if poll <= 0:
            self._effect(client)
            return
        if self._poll_timer[client] is not None:
            return  # the next poll reads the newest applied state anyway
        phase = self._phase[client]
        tick = phase + math.floor((at - phase) / poll + 1) * poll
        self._poll_timer[client] = self._later(tick - self.clock.now(), self._poll, client)

    def _poll(self, client: int) -> None:
        self._poll_timer[client] = None
        self._effect(client)

    def _effect(self, client: int) -> None:
        version = self._applied[client]
        if version <= self.versions[client]:
            return
        self.versions[client] = version
        old = self.views[client]
        new = routable(self.states[version], fallback=self.profile.terminating_fallback)
        self.views[client] = new
        self._on_view(client, old, new)
        self._progress.set()

    # -- waiting and closing --------------------------------------------------------------------
    def caught_up(self) -> bool:
        latest = len(self.states) - 1
        return all(v == latest for v in self.versions)

    async def settled(self) -> None:
        """Return once every client's view holds the source's latest state (or on close)."""
        while not self.closed and not self.caught_up():
            self._progress.clear()
            await self._progress.wait()

    def close(self) -> None:
        self.closed = True
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()
        self._sync_timer = [None] * self.clients
        self._deliver_timer = [None] * self.clients
        for pending in self._pending:
            pending.clear()
        self._poll_timer = [None] * self.clients
        self._progress.set()


class SyncedTraffic(TrafficModel):
    """The base of the traffic models whose clients learn the control plane's changes through
    :class:`SyncedViews` (``service``: one view per kube-proxy node; ``ingress``: one view, the
    ingress controller's).

    ``__init__`` builds them the one way: ``profile`` (default: the built-in ``default``
    profile) with its watch lag replaced by ``delay`` when given, ``views`` synced views (the
    model's ``clients`` when None) calling :meth:`_apply` each time one changes; it sets
    ``clients``, ``clock``, ``profile``, ``delay`` (the profile's lag), ``seed`` and
    ``on_event`` (a no-op when None). ``add``/``remove`` change the source (every view follows
    with the profile's timing, or at once with ``immediate``); ``ready_endpoints`` is the
    source's ready set."""

    def __init__(
        self,
        clock: Clock,
        clients: int,
        delay: PropagationDelay | None,
        seed: int,
        on_event: Callable[[Event], None] | None,
        profile: TimingProfile | None,
        default: str,
        *,
        views: int | None = None,
    ) -> None:
        profile = profile or PROFILES[default]
        if delay is not None:
            profile = profile.with_lag(delay)
        self.clients = clients
        self.clock = clock
        self.profile = profile
        self.delay = profile.lag
        self.seed = seed
        self.on_event = on_event or (lambda event: None)
        self._sync = SyncedViews(
            clients=clients if views is None else views,
            profile=profile,
            seed=seed,
            clock=clock,
            on_view=self._apply,
        )

    @abc.abstractmethod
    def _apply(self, client: int, old: dict[str, Endpoint], new: dict[str, Endpoint]) -> None:
        """View ``client``'s routable set went from ``old`` to ``new`` (see SyncedViews)."""

    @property
    def source(self) -> SyncedViews:
        """The source state's history and each view of it."""
        return self._sync

    def ready_endpoints(self) -> list[Endpoint]:
        """The control plane's ready endpoints (what every view will eventually route to)."""
        state = self._sync.current
        return [state[name] for name in sorted(state) if state[name].ready]

    def add(self, endpoint: Endpoint, *, immediate: bool = False) -> None:
        self._sync.upsert(endpoint, immediate=immediate)

    def remove(self, endpoint: Endpoint, *, immediate: bool = False) -> None:
        self._sync.delete(endpoint.name, immediate=immediate)
