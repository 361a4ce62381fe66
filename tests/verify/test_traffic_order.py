"""Endpoint changes reach each client in the order they were made, also when a removal follows an
add at once and draws a shorter delay. Found by the ten-upgrade soak (issue 16) in the earlier
per-change scheduler: a replica deleted the moment it became ready stayed in a client's view for
the rest of the run. The synced views (lossless.verify.traffic.sync) apply whole states, so this
holds by construction; the test keeps the soak's scenario as a regression test."""

from __future__ import annotations

import asyncio

from lossless.verify.model import Clock, Endpoint
from lossless.verify.traffic.base import PropagationDelay
from lossless.verify.traffic.service import ServiceTraffic
from lossless.verify.traffic.sync import PROFILES


def test_add_then_remove_at_once_leaves_nothing() -> None:
    async def main() -> None:
        profile = PROFILES["lag-only"]
        traffic = ServiceTraffic(
            clock=Clock(),
            clients=3,
            delay=PropagationDelay(0.05, 0.04),
            seed=16,
            profile=profile,
        )
        try:
            for i in range(200):
                endpoint = Endpoint(f"v2-{i}", "127.0.0.1", 10_000 + i)
                traffic.add(endpoint)
                traffic.remove(endpoint)
            async with asyncio.timeout(10):
                await traffic.settled()
            assert [traffic.view(c) for c in range(3)] == [[], [], []]
        finally:
            traffic.close()

    asyncio.run(main())
