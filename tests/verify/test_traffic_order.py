"""Endpoint changes reach each client in the order they were made, also when a removal follows an
add at once and draws a shorter delay (both then fall due at the same instant, and asyncio does
not order timers of equal deadline). Found by the ten-upgrade soak: a replica deleted the moment
it became ready stayed in a client's view for the rest of the run."""

from __future__ import annotations

import asyncio

from lossless.verify.model import Clock, Endpoint
from lossless.verify.traffic.base import DelayedChanges, PropagationDelay


def test_add_then_remove_at_once_leaves_nothing() -> None:
    async def main() -> None:
        views: list[set[str]] = [set() for _ in range(3)]

        def apply(client: int, endpoint: Endpoint, added: bool) -> None:
            (views[client].add if added else views[client].discard)(endpoint.name)

        changes = DelayedChanges(
            clients=3, delay=PropagationDelay(0.05, 0.04), seed=16, clock=Clock(), apply=apply
        )
        for i in range(200):
            endpoint = Endpoint(f"v2-{i}", "127.0.0.1", 10_000 + i)
            changes.schedule(endpoint, True, False)
            changes.schedule(endpoint, False, False)
        async with asyncio.timeout(10):
            await changes.settled()
        assert views == [set(), set(), set()]

    asyncio.run(main())
