"""Rolling-update arithmetic against the Deployment controller's rules
(kubernetes/kubernetes pkg/controller/deployment: util/deployment_util.go, rolling.go)."""

from __future__ import annotations

import math

import pytest

from lossless.errors import LosslessError
from lossless.verify.lab.rollout import (
    RolloutStrategy,
    max_unavailable,
    new_rs_new_replicas,
    old_replicas_to_scale_down,
    parse_int_or_percent,
    resolve_fenceposts,
    scaled_value,
    validate_rolling_update,
)

# (maxSurge, maxUnavailable, replicas) -> (surge, unavailable), worked out by hand.
FENCEPOSTS = [
    ("25%", "25%", 1, (1, 0)),  # ceil(0.25)=1, floor(0.25)=0
    ("25%", "25%", 2, (1, 0)),
    ("25%", "25%", 3, (1, 0)),
    ("25%", "25%", 4, (1, 1)),
    ("25%", "25%", 5, (2, 1)),
    ("25%", "25%", 10, (3, 2)),  # ceil(2.5)=3, floor(2.5)=2
    ("33%", "33%", 7, (3, 2)),  # 2.31 -> 3 up, 2 down
    ("50%", "50%", 3, (2, 1)),
    ("100%", "0%", 5, (5, 0)),
    ("0%", "100%", 5, (0, 5)),
    ("0%", "10%", 3, (0, 1)),  # both resolve to 0: maxUnavailable becomes 1
    ("0%", "10%", 10, (0, 1)),
    ("1%", "0%", 10, (1, 0)),  # ceil(0.1) = 1
    (1, 0, 1, (1, 0)),
    (0, 1, 1, (0, 1)),
    (2, 3, 10, (2, 3)),
    (0, 5, 3, (0, 5)),  # an integer is not capped here (MaxUnavailable caps it)
    ("200%", 0, 3, (6, 0)),  # maxSurge may exceed 100%
]


@pytest.mark.parametrize(("surge", "unavail", "replicas", "expected"), FENCEPOSTS)
def test_resolve_fenceposts(
    surge: int | str, unavail: int | str, replicas: int, expected: tuple[int, int]
) -> None:
    assert resolve_fenceposts(surge, unavail, replicas) == expected


@pytest.mark.parametrize("replicas", range(1, 11))
@pytest.mark.parametrize("percent", [0, 1, 10, 25, 33, 50, 75, 99, 100])
def test_percentages_round_surge_up_and_unavailable_down(replicas: int, percent: int) -> None:
    value = f"{percent}%"
    assert scaled_value(value, replicas, True) == math.ceil(percent * replicas / 100 - 1e-12)
    assert scaled_value(value, replicas, False) == math.floor(percent * replicas / 100 + 1e-12)


@pytest.mark.parametrize("replicas", range(1, 11))
def test_max_unavailable_is_capped_at_replicas(replicas: int) -> None:
    assert max_unavailable(0, 20, replicas) == replicas
    assert max_unavailable("25%", "25%", replicas) == replicas * 25 // 100
    assert max_unavailable(1, 0, replicas) == 0


@pytest.mark.parametrize(
    ("surge", "unavail"), [(0, 0), ("0%", 0), (0, "0%"), ("0%", "0%"), ("0", "0")]
)
def test_both_zero_rejected(surge: int | str, unavail: int | str) -> None:
    with pytest.raises(LosslessError, match="may not be 0 when maxSurge is 0"):
        RolloutStrategy("rolling", surge, unavail)


def test_both_zero_is_fine_for_other_strategies() -> None:
    RolloutStrategy("naive", 0, 0)
    RolloutStrategy("recreate", 0, 0)


@pytest.mark.parametrize("bad", ["abc", "-1", "1.5%", "%", "25 %", -1, True, "1e3"])
def test_bad_values_rejected(bad: int | str) -> None:
    with pytest.raises(LosslessError, match="maxSurge"):
        parse_int_or_percent(bad, "maxSurge")


def test_max_unavailable_over_100_percent_rejected() -> None:
    with pytest.raises(LosslessError, match="greater than 100%"):
        validate_rolling_update(1, "101%")
    validate_rolling_update("101%", 0)  # maxSurge may


# NewRSNewReplicas: (replicas, maxSurge, all RS replicas, new RS replicas) -> new RS replicas
NEW_RS = [
    (3, 1, 3, 0, 1),  # room for one more pod
    (3, 1, 4, 1, 1),  # at replicas + surge: cannot scale up
    (3, 2, 3, 0, 2),
    (3, "100%", 3, 0, 3),  # never past replicas
    (3, 0, 2, 0, 1),  # maxUnavailable made room (old scaled down to 2)
    (10, "25%", 10, 0, 3),
    (10, "25%", 13, 3, 3),
    (10, "25%", 11, 3, 5),
    (1, "25%", 1, 0, 1),
    (5, 1, 5, 5, 5),
]


@pytest.mark.parametrize(("replicas", "surge", "all_rs", "new_rs", "expected"), NEW_RS)
def test_new_rs_new_replicas(
    replicas: int, surge: int | str, all_rs: int, new_rs: int, expected: int
) -> None:
    got = new_rs_new_replicas(
        replicas=replicas, max_surge=surge, all_replicas=all_rs, new_replicas=new_rs
    )
    assert got == expected


# reconcileOldReplicaSets: returns (unhealthy, available) old pods to scale down.
OLD_RS = [
    # replicas, surge, unavail, old, old_avail, new, new_avail -> expected
    (3, 1, 0, 3, 3, 1, 0, (0, 0)),  # the new pod is not available yet: keep all old
    (3, 1, 0, 3, 3, 1, 1, (0, 1)),  # the new pod is available: one old can go
    (3, 0, 1, 3, 3, 0, 0, (0, 1)),  # maxUnavailable 1: one old goes at once
    (3, 0, 1, 2, 2, 1, 0, (0, 0)),  # and no more until the new one is available
    (3, 1, 0, 3, 1, 1, 0, (0, 0)),  # the new pod is unavailable: no room at all
    (4, 1, 1, 4, 2, 1, 0, (1, 0)),  # room for one: an unhealthy old pod goes first
    (4, 1, 2, 4, 2, 1, 0, (2, 0)),  # room for two: both unhealthy ones, no available one
    (10, "25%", "25%", 10, 10, 3, 3, (0, 5)),
    (3, 1, 0, 0, 0, 3, 3, (0, 0)),  # nothing old left
]


@pytest.mark.parametrize(
    ("replicas", "surge", "unavail", "old", "old_avail", "new", "new_avail", "expected"), OLD_RS
)
def test_old_replicas_to_scale_down(
    replicas: int,
    surge: int | str,
    unavail: int | str,
    old: int,
    old_avail: int,
    new: int,
    new_avail: int,
    expected: tuple[int, int],
) -> None:
    got = old_replicas_to_scale_down(
        replicas=replicas,
        max_surge=surge,
        max_unavail=unavail,
        old_replicas=old,
        old_available=old_avail,
        new_replicas=new,
        new_available=new_avail,
    )
    assert got == expected


def _simulate(replicas: int, surge: int | str, unavail: int | str) -> list[tuple[int, int, int]]:
    """Run the controller's decisions with pods becoming available one sync after creation;
    return (total pods, available, new) after each sync."""
    old, old_avail, new, new_avail = replicas, replicas, 0, 0
    history = []
    for _ in range(10 * replicas + 10):
        if new == replicas and new_avail == replicas and old == 0:
            return history
        target = new_rs_new_replicas(
            replicas=replicas, max_surge=surge, all_replicas=old + new, new_replicas=new
        )
        if target != new:
            new = target
        else:
            unhealthy, available = old_replicas_to_scale_down(
                replicas=replicas,
                max_surge=surge,
                max_unavail=unavail,
                old_replicas=old,
                old_available=old_avail,
                new_replicas=new,
                new_available=new_avail,
            )
            old -= unhealthy + available
            old_avail = min(old_avail, old)
            new_avail = new  # the pods created so far become available
        history.append((old + new, old_avail + new_avail, new))
    raise AssertionError(f"rollout did not finish: {history}")


@pytest.mark.parametrize("replicas", range(1, 11))
@pytest.mark.parametrize(
    ("surge", "unavail"), [(1, 0), (0, 1), ("25%", "25%"), ("50%", 0), (2, 2), ("0%", "10%")]
)
def test_rollout_respects_both_bounds(replicas: int, surge: int | str, unavail: int | str) -> None:
    s, u = resolve_fenceposts(surge, unavail, replicas)
    u = min(u, replicas)
    history = _simulate(replicas, surge, unavail)
    assert history, "the simulated rollout made no step"
    for total, available, _new in history:
        assert total <= replicas + s
        assert available >= replicas - u
