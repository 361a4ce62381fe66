"""The verify lab's ``registry`` traffic model against a real etcd: clients learn endpoints
from a watch, each through its own cache TTL."""

from __future__ import annotations

import asyncio
import time

from tests.discovery.conftest import Etcd

from lossless.discovery import Instance
from lossless.verify.model import Clock, Endpoint, Event, EventKind
from lossless.verify.traffic.registry import RegistryTraffic


def _put(etcd: Etcd, service: str, name: str, port: int) -> None:
    value = Instance(service, name, "127.0.0.1", port).to_json()
    etcd.client.put(f"/services/{service}/{name}", value, 1.0)


async def _until(predicate, timeout: float = 5.0) -> float:  # type: ignore[no-untyped-def]
    start = time.monotonic()
    while not predicate():
        assert time.monotonic() - start < timeout, "not reached in time"
        await asyncio.sleep(0.005)
    return time.monotonic() - start


def test_clients_follow_the_registry_through_their_cache(etcd: Etcd) -> None:
    """1. two instances registered 2. the lab names them 3. one deregisters. Result: with no
    cache every client drops it at once (within 1 s here: a loaded machine); with a 2 s cache
    each client drops it at its own refresh, within 2 s (plus 1 s of slack), and pick() never
    returns it afterwards."""

    async def scenario() -> None:
        _put(etcd, "tr", "a", 41001)
        _put(etcd, "tr", "b", 41002)
        events: list[Event] = []
        clock = Clock()
        eager = RegistryTraffic(
            clock=clock, etcd=etcd.client, prefix="/services", service="tr", clients=2
        )
        cached = RegistryTraffic(
            clock=clock,
            etcd=etcd.client,
            prefix="/services",
            service="tr",
            clients=3,
            cache_ttl=2.0,
            on_event=events.append,
        )
        try:
            for model in (eager, cached):
                model.add(Endpoint("v1-0", "127.0.0.1", 41001))
                model.add(Endpoint("v1-1", "127.0.0.1", 41002))
            await asyncio.wait_for(eager.settled(), 3)
            await asyncio.wait_for(cached.settled(), 3)
            assert [e.name for e in cached.view(2)] == ["v1-0", "v1-1"]
            etcd.client.delete("/services/tr/a", 1.0)
            for model in (eager, cached):
                model.remove(Endpoint("v1-0", "127.0.0.1", 41001))
            eager_lag = await _until(lambda: all(len(eager.view(c)) == 1 for c in range(2)))
            assert eager_lag < 1.0, eager_lag
            cached_lag = await _until(lambda: all(len(cached.view(c)) == 1 for c in range(3)))
            assert cached_lag < 3.0, cached_lag
            await asyncio.wait_for(cached.settled(), 3)
            assert {cached.pick(c).name for c in range(3) for _ in range(10)} == {"v1-1"}  # type: ignore[union-attr]
            removed = [e for e in events if e.kind is EventKind.VIEW_REMOVED]
            assert sorted(e.client for e in removed) == [0, 1, 2]  # type: ignore[type-var]
            assert all(e.replica == "v1-0" for e in removed)
            assert any(e.detail == "registry DELETE v1-0" for e in events)
        finally:
            eager.close()
            cached.close()
            etcd.client.delete("/services/tr/b", 1.0)

    asyncio.run(scenario())
