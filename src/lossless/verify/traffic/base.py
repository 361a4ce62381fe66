"""Traffic models: how each simulated client learns the ready endpoint set.

A traffic model is an :class:`~lossless.verify.model.EndpointView` (the load generator calls
``pick(client)`` for every new connection) that the lab feeds with control-plane changes:
``add(endpoint)`` when a replica enters the ready endpoint set, ``remove(endpoint)`` when it leaves
it. Each model decides when each client sees the change, and records that moment as a
``VIEW_ADDED``/``VIEW_REMOVED`` event.

Models: ``service`` (:mod:`lossless.verify.traffic.service`: kube-proxy), ``registry``
(:mod:`lossless.verify.traffic.registry`: clients watch etcd) and ``ingress``
(:mod:`lossless.verify.traffic.ingress`: a real HAProxy), all subclasses of :class:`TrafficModel`.
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
import math
import random
from collections.abc import Callable

from lossless.errors import LosslessError
from lossless.verify.model import Clock, Endpoint

__all__ = ["TRAFFIC_MODELS", "DelayedChanges", "PropagationDelay", "TrafficModel"]

TRAFFIC_MODELS = ("service", "registry", "ingress")


class TrafficModel(abc.ABC):
    """An :class:`EndpointView` the lab drives: the base of every traffic model.

    ``add``/``remove`` are called at control-plane time; ``immediate=True`` makes every client see
    the change at once (the naive baseline's "route to it at once"). ``pick(client)`` is called by
    the load generator for every new connection. ``settled()`` waits until every scheduled change
    has been applied; ``close()`` drops the ones still pending (idempotent, synchronous, safe from
    a signal path). The runner calls ``await start()`` before the first replica starts and
    ``await aclose()`` once the load has stopped, whatever happened; both default to no-ops for
    models that own no process or thread (``aclose`` calls ``close``).
    """

    clients: int

    async def start(self) -> None:
        """Start what the model owns (a proxy, a watch). Default: nothing."""
        return None

    async def aclose(self) -> None:
        """Stop what the model owns and drop pending changes. Default: :meth:`close`."""
        self.close()

    def check_ready(self) -> None:
        """Raise ``LosslessError`` if the first replicas are not visible to clients although
        the control plane made them ready (the registry model: they never registered).
        Called once, after :meth:`settled`, before the load starts. Default: nothing to check."""
        return None

    @abc.abstractmethod
    def pick(self, client: int) -> Endpoint | None: ...

    @abc.abstractmethod
    def add(self, endpoint: Endpoint, *, immediate: bool = False) -> None: ...

    @abc.abstractmethod
    def remove(self, endpoint: Endpoint, *, immediate: bool = False) -> None: ...

    @abc.abstractmethod
    def ready_endpoints(self) -> list[Endpoint]: ...

    @abc.abstractmethod
    async def settled(self) -> None: ...

    @abc.abstractmethod
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
        # per (client, endpoint name): changes numbered as made, the next one to apply, and
        # those due but waiting for an earlier one (asyncio does not order timers that fall due
        # at the same instant; found by the ten-upgrade soak, issue 16)
        self._made: dict[tuple[int, str], int] = {}
        self._next: dict[tuple[int, str], int] = {}
        self._early: dict[tuple[int, str], dict[int, bool]] = {}
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
            key = (client, endpoint.name)
            due = max(now + lag, self._last_due.get(key, 0.0))
            self._last_due[key] = due
            number = self._made[key] = self._made.get(key, 0) + 1
            if due <= now:
                self._in_order(client, endpoint, added, number)
                continue
            holder: list[asyncio.TimerHandle] = []
            handle = loop.call_later(due - now, self._fire, client, endpoint, added, number, holder)
            holder.append(handle)
            self._pending.add(handle)
            self._idle.clear()

    def _fire(
        self,
        client: int,
        endpoint: Endpoint,
        added: bool,
        number: int,
        holder: list[asyncio.TimerHandle],
    ) -> None:
        self._pending.discard(holder[0])
        self._in_order(client, endpoint, added, number)
        if not self._pending:
            self._idle.set()

    def _in_order(self, client: int, endpoint: Endpoint, added: bool, number: int) -> None:
        """Apply change ``number`` of (client, endpoint) once every earlier one has applied."""
        key = (client, endpoint.name)
        early = self._early.setdefault(key, {})
        early[number] = added
        expected = self._next.get(key, 1)
        while expected in early:
            self._apply(client, endpoint, early.pop(expected))
            expected += 1
        self._next[key] = expected
        if not early:
            del self._early[key]

    async def settled(self) -> None:
        await self._idle.wait()

    def close(self) -> None:
        self.closed = True
        for handle in self._pending:
            handle.cancel()
        self._pending.clear()
        self._idle.set()
