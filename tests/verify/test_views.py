"""How clients' views follow the source (issue 15, item 1 and item 5): bounded-frequency syncs of
the whole state, so views lag but never reorder.

Sources: kubernetes ``pkg/util/async/bounded_frequency_runner.go`` (a token bucket of ``burst``
runs refilled every ``minInterval``; requests made while waiting are coalesced into one run),
``pkg/proxy/iptables/proxier.go`` (kube-proxy: minSyncPeriod 1 s, burstSyncs 2, each sync
rewrites every rule from the whole current state), ingress-nginx ``--sync-rate-limit`` (0.3/s,
burst 1) and its Lua balancer's ``BACKENDS_SYNC_INTERVAL = 1``. Timings are scaled down (tens of
ms) so the tests stay short; assertions are on order and coalescing, with generous slack.
"""

from __future__ import annotations

import asyncio
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lossless.verify.model import Clock, Endpoint, Event, EventKind
from lossless.verify.traffic.base import PropagationDelay
from lossless.verify.traffic.service import ServiceTraffic
from lossless.verify.traffic.sync import PROFILES, SyncedViews, TimingProfile, routable

A = Endpoint("a", "127.0.0.1", 1)
B = Endpoint("b", "127.0.0.1", 2)


def _profile(
    lag: float = 0.0, jitter: float = 0.0, period: float = 0.0, burst: int = 1, poll: float = 0.0
) -> TimingProfile:
    return TimingProfile(
        "test", PropagationDelay(lag, jitter), period, burst, poll, terminating_fallback=True
    )


# The runner's timers fire on time or late, never early; a loaded machine can hold this process
# a few hundred milliseconds (also in the test's own sleeps between changes). So every view
# change is timed from the change (or token) that decides it, tight on the early side and with
# LATE on the other, and the periods are long enough that no such delay changes which changes
# are coalesced.
EARLY = 0.01
LATE = 0.5


async def _apply_times(
    profile: TimingProfile, gaps: list[float]
) -> tuple[list[float], list[int], list[float], SyncedViews]:
    """Make one change after each gap (adding endpoints e0, e1, ...); return when each of the
    single client's view changes happened, the versions, when each change was made (both on
    the views' clock), and the views."""
    clock = Clock()
    applied: list[float] = []
    versions: list[int] = []
    changes: list[float] = []
    sync: SyncedViews

    def on_view(client: int, old: dict[str, Endpoint], new: dict[str, Endpoint]) -> None:
        applied.append(clock.now())
        versions.append(sync.versions[client])

    sync = SyncedViews(clients=1, profile=profile, seed=0, clock=clock, on_view=on_view)
    for i, gap in enumerate(gaps):
        await asyncio.sleep(gap)
        changes.append(clock.now())
        sync.upsert(Endpoint(f"e{i}", "127.0.0.1", 1000 + i))
    async with asyncio.timeout(10):
        await sync.settled()
    return applied, versions, changes, sync


@pytest.mark.parametrize(
    ("case", "profile", "gaps", "expected_versions", "expected_times"),
    [
        # no rate limit: every delivery is applied at once, after the lag
        ("lag only", _profile(lag=0.05), [0, 0.1], [1, 2], [(0, 0.05), (1, 0.05)]),
        # kube-proxy's burst 2: two syncs at once, the third waits for a token (1 s after the
        # first sync) and applies the whole state (changes 3 and 4 coalesced into one sync)
        (
            "burst 2 then coalesce",
            _profile(period=1.0, burst=2),
            [0, 0.02, 0.02, 0.02],
            [1, 2, 4],
            [(0, 0.0), (1, 0.0), (0, 1.0)],
        ),
        # ingress-nginx: burst 1, the second change waits for the next token
        ("burst 1", _profile(period=1.0, burst=1), [0, 0.05], [1, 2], [(0, 0.0), (0, 1.0)]),
    ],
)
def test_bounded_frequency_runner_timing(
    case: str,
    profile: TimingProfile,
    gaps: list[float],
    expected_versions: list[int],
    expected_times: list[tuple[int, float]],
) -> None:
    """``expected_times``: each view change as (the change it is timed from, seconds after)."""
    times, versions, changes, _sync = asyncio.run(_apply_times(profile, gaps))
    assert versions == expected_versions, case
    assert len(times) == len(expected_times), case
    for got, (change, after) in zip(times, expected_times, strict=True):
        due = changes[change] + after
        assert due - EARLY <= got <= due + LATE, (case, times, changes)


def test_poll_applies_at_the_balancers_next_tick() -> None:
    """ingress-nginx's Lua balancer reads what was posted on its own 1 s timer (scaled: 0.3 s):
    a change becomes effective at the client's next tick, never before."""
    profile = _profile(poll=0.3)
    times, versions, changes, sync = asyncio.run(_apply_times(profile, [0, 0.4]))
    assert versions == [1, 2]
    # at the client's next tick after the change (its seeded phase plus whole periods, on the
    # views' clock): never before, and at most one period later
    phase = sync._phase[0]
    for got, made in zip(times, changes, strict=True):
        tick = phase + math.floor((made - phase) / 0.3 + 1) * 0.3
        assert made < tick <= made + 0.3 + EARLY
        assert tick - EARLY <= got <= tick + LATE, (times, changes, phase)


def test_an_addition_is_never_overtaken_by_a_later_removal() -> None:
    """The issue's case: the new pod's endpoint added at t, the old one removed 0.5 ms later.
    With a lag drawn per change, the removal's lag may be shorter; the watch delivers in order,
    so no client ever sees neither endpoint."""

    async def main(seed: int) -> list[set[str]]:
        clock = Clock()
        seen: list[set[str]] = []
        traffic = ServiceTraffic(
            clock=clock,
            clients=8,
            seed=seed,
            profile=PROFILES["kube-proxy"].with_lag(PropagationDelay(0.15, 0.1)),
        )
        traffic.add(A, immediate=True)
        traffic.add(B)
        traffic.remove(A)
        while not traffic.source.caught_up():
            seen.extend({ep.name for ep in traffic.view(c)} for c in range(8))
            await asyncio.sleep(0.002)
        return seen

    for seed in range(5):
        views = asyncio.run(main(seed))
        assert set() not in [set(v) for v in views], seed
        assert all(v in ({"a"}, {"a", "b"}, {"b"}) for v in views)


_OPS = st.lists(
    st.tuples(
        st.sampled_from(["ready", "not-serving", "terminating", "delete"]),
        st.sampled_from(["a", "b", "c"]),
        st.floats(min_value=0, max_value=0.01),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=_OPS, seed=st.integers(0, 1000), period=st.sampled_from([0.0, 0.01]))
def test_no_client_ever_holds_a_view_the_source_never_had(
    ops: list[tuple[str, str, float]], seed: int, period: float
) -> None:
    """Property: whatever the changes and their timing, every view any client takes is the
    routable set of a state the source really had, and each client's versions only grow."""

    async def main() -> None:
        clock = Clock()
        taken: list[tuple[int, dict[str, Endpoint], int]] = []
        sync: SyncedViews

        def on_view(client: int, old: dict[str, Endpoint], new: dict[str, Endpoint]) -> None:
            taken.append((client, dict(new), sync.versions[client]))

        profile = TimingProfile(
            "prop",
            PropagationDelay(0.01, 0.01),
            min_sync_period=period,
            burst=2,
            poll_period=0.005 if period else 0.0,
            terminating_fallback=True,
        )
        sync = SyncedViews(clients=4, profile=profile, seed=seed, clock=clock, on_view=on_view)
        for op, name, gap in ops:
            port = ord(name)
            if op == "delete":
                sync.delete(name)
            else:
                sync.upsert(
                    Endpoint(
                        name,
                        "127.0.0.1",
                        port,
                        serving=op != "not-serving",
                        terminating=op == "terminating",
                    )
                )
            await asyncio.sleep(gap)
        async with asyncio.timeout(5):
            await sync.settled()
        history = [routable(state, fallback=True) for state in sync.states]
        last: dict[int, int] = {}
        for client, view, version in taken:
            assert view in history, (view, history)
            assert view == history[version]
            assert version > last.get(client, -1)
            last[client] = version
        assert all(v == len(sync.states) - 1 for v in sync.versions)
        sync.close()

    asyncio.run(main())


def test_views_are_reproducible_from_the_seed() -> None:
    async def main(seed: int) -> list[tuple[str, str, int | None]]:
        clock = Clock()
        events: list[Event] = []
        traffic = ServiceTraffic(
            clock=clock,
            clients=4,
            seed=seed,
            delay=PropagationDelay(0.1, 0.08),
            on_event=events.append,
        )
        # every change at the same instant: each view's due time is then the seeded delay alone;
        # a sleep between them made the order depend on how late the loop woke (a flake under
        # load: B's add and A's removal swapped for a client)
        traffic.add(A)
        traffic.add(B)
        traffic.remove(A)
        await traffic.settled()
        views = [e for e in events if e.kind in (EventKind.VIEW_ADDED, EventKind.VIEW_REMOVED)]
        # per client, in order (timers of different clients due at nearly the same moment may
        # fire in either order: wall time, not the model)
        return [
            (e.kind.value, e.replica, e.client)
            for c in range(4)
            for e in sorted(views, key=lambda e: e.t)
            if e.client == c
        ]

    assert asyncio.run(main(3)) == asyncio.run(main(3))


def test_serving_terminating_fallback_follows_categorize_endpoints() -> None:
    """``CategorizeEndpoints``: ready endpoints when there is one, else serving-terminating ones;
    a terminating endpoint that is no longer serving is never used."""
    ready = Endpoint("n", "h", 1)
    term = Endpoint("o", "h", 2, serving=True, terminating=True)
    dead = Endpoint("d", "h", 3, serving=False, terminating=True)
    unready = Endpoint("u", "h", 4, serving=False)
    table = [
        ({"n": ready, "o": term}, True, {"n"}),
        ({"o": term, "d": dead}, True, {"o"}),
        ({"o": term}, False, set()),  # the ingress: ready endpoints only
        ({"d": dead, "u": unready}, True, set()),
    ]
    for state, fallback, expected in table:
        assert set(routable(state, fallback=fallback)) == expected
