"""Traffic models: how each simulated client learns the ready endpoint set.

A traffic model is an :class:`~lossless.verify.model.EndpointView` (the load generator calls
``pick(client)`` for every new connection) that the lab feeds with control-plane changes:
``add(endpoint)`` when a replica enters the endpoint set or its conditions change (an endpoint
carries ``serving``/``terminating``, as in an EndpointSlice), ``remove(endpoint)`` when it
leaves it. Each model decides when each client sees the change, and records the moments a
client starts or stops routing to an endpoint as ``VIEW_ADDED``/``VIEW_REMOVED`` events. The
``service`` and ``ingress`` models share :class:`~lossless.verify.traffic.sync.SyncedViews`
(bounded-frequency syncs of the whole state: views lag, never reorder).

Models: ``service`` (:mod:`lossless.verify.traffic.service`: kube-proxy), ``registry``
(:mod:`lossless.verify.traffic.registry`: clients watch etcd) and ``ingress``
(:mod:`lossless.verify.traffic.ingress`: a real HAProxy), all subclasses of :class:`TrafficModel`.
"""

from __future__ import annotations

import abc
import dataclasses
import math
import random

from lossless.errors import LosslessError
from lossless.verify.model import Endpoint

__all__ = ["TRAFFIC_MODELS", "PropagationDelay", "TrafficModel"]

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
    # Callers that balance per request over per-endpoint connection pools (gRPC subchannels,
    # Spring's load-balanced clients) stop using an endpoint's pooled connections once their
    # view drops it; kube-proxy and ingress clients keep theirs pinned (conntrack). Read by
    # the load generator.
    per_endpoint_pools: bool = False

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
