"""The analysis on a synthetic timeline and records (pure data): counts, percentiles, the join of
each failure with the timeline, and the causes' sentences with their numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lossless.verify.analysis.core import METRICS, PHASES, Analyzer, analyze, percentiles
from lossless.verify.model import ErrorClass, Event, EventKind, Record
from lossless.verify.results import Run

E = EventKind
DOCS = Path(__file__).resolve().parents[2] / "docs" / "verify-load.md"


def rec(
    seq: int,
    sent: float,
    error: ErrorClass = ErrorClass.NONE,
    *,
    replica: str = "v1-0",
    status: int = 200,
    latency: float = 0.002,
    reused: bool = False,
    client: int = 0,
    lag: float = 0.0,
) -> Record:
    if error is not ErrorClass.NONE and error not in (ErrorClass.SCHEDULE_LAG,) and status == 200:
        status = int(error.value) if error.value.isdigit() else 0
    return Record(
        seq, sent - lag, sent, sent + latency / 2, sent + latency, status, 2, error, replica,
        seq + 1, reused, client,
    )  # fmt: skip


def life(name: str, start: float, ready: float, clients: int = 2) -> list[Event]:
    events = [Event(start, E.CREATED, name), Event(start, E.STARTED, name)]
    events += [Event(ready, E.READY, name), Event(ready, E.ENDPOINT_ADDED, name)]
    events += [Event(ready + 0.1, E.VIEW_ADDED, name, client=c) for c in range(clients)]
    return events


def rollout_events() -> list[Event]:
    """v1-0 and v1-1 serve from t=0; v2-0 starts at 9.0 with no readiness probe (ready at 9.1,
    serves from 9.6); v1-0 is deleted at 10.0 (SIGTERM at once, listener closed 10.2, exited
    10.3) while client 0 routes to it until 11.0 and client 1 until 12.0; v1-1 is deleted at 20.0
    and killed at the end of its 30 s grace period."""
    events = [Event(0.0, E.RUN_START)]
    events += life("v1-0", 0.0, 0.5) + life("v1-1", 0.0, 0.5) + life("v2-0", 9.0, 9.1)
    events += [
        Event(10.0, E.DELETING, "v1-0"),
        Event(10.0, E.ENDPOINT_REMOVED, "v1-0"),
        Event(10.0, E.SIGTERM, "v1-0"),
        Event(10.2, E.LISTENER_CLOSED, "v1-0"),
        Event(10.3, E.EXITED, "v1-0", detail="0"),
        Event(11.0, E.VIEW_REMOVED, "v1-0", client=0),
        Event(12.0, E.VIEW_REMOVED, "v1-0", client=1),
        Event(20.0, E.DELETING, "v1-1"),
        Event(20.0, E.ENDPOINT_REMOVED, "v1-1"),
        Event(20.0, E.SIGTERM, "v1-1"),
        Event(20.5, E.VIEW_REMOVED, "v1-1", client=0),
        Event(20.5, E.VIEW_REMOVED, "v1-1", client=1),
        Event(50.0, E.SIGKILL, "v1-1"),
        Event(50.01, E.EXITED, "v1-1", detail="SIGKILL"),
    ]
    return events


def rollout_records() -> list[Record]:
    R = ErrorClass
    records = [rec(i, 1.0 + i * 0.01, latency=0.001 * (i + 1)) for i in range(100)]
    records += [
        # v2-0 before it could serve (marked ready at 9.1, first success at 9.6)
        rec(100, 9.2, R.REFUSED, replica="v2-0"),
        rec(101, 9.3, R.REFUSED, replica="v2-0"),
        rec(102, 9.6, replica="v2-0"),
        # v1-0's listener closed while clients still routed to it
        rec(103, 10.4, R.REFUSED, client=0),
        rec(104, 10.5, R.REFUSED, client=0),
        rec(105, 11.5, R.REFUSED, client=1),
        # v1-1: a reused connection reset just after SIGTERM
        rec(106, 20.05, R.RESET, replica="v1-1", reused=True, client=1),
        # v1-1: a long request still running when SIGKILL came
        rec(107, 45.0, R.RESET, replica="v1-1", latency=5.0, reused=True),
        # artefacts
        rec(108, 30.0, R.SCHEDULE_LAG, replica="v2-0", lag=0.3),
        rec(109, 30.1, R.FD_EXHAUSTED, replica="v2-0", status=0),
    ]
    return records


def run_of(records: list[Record], events: list[Event], **settings: object) -> Run:
    return Run(Path("run"), records, events, dict(settings))


def test_counts_and_percentiles() -> None:
    a = analyze(run_of(rollout_records(), rollout_events(), lag_budget=0.1))
    assert (a.requests, a.ok, a.failures, a.artefacts) == (110, 101, 7, 2)
    assert a.failures_by_class == {"refused": 5, "reset": 2}
    assert a.artefacts_by_class == {"schedule_lag": 1, "fd_exhausted": 1}
    assert a.success_ratio == pytest.approx(101 / 108)
    assert a.late == 1
    # latencies: 1..100 ms for seq 0..99, plus 2 ms (seq 102) and 2 ms (the late one, seq 108):
    # 102 values, nearest rank p50 = 51st = 49 ms, p99 = 101st = 99 ms
    assert a.latency_ms["p50"] == pytest.approx(49.0)
    assert a.latency_ms["p99"] == pytest.approx(99.0)
    assert a.latency_ms["max"] == pytest.approx(100.0)
    assert a.lag_ms["max"] == pytest.approx(300.0)
    assert a.replicas["v1-0"] == {"requests": 103, "failures": 3}


def test_failures_are_joined_with_the_timeline() -> None:
    a = analyze(run_of(rollout_records(), rollout_events()))
    by_seq = {c.seq: c for c in a.contexts}
    c = by_seq[103]
    assert (c.replica, c.phase, c.in_view) == ("v1-0", "after-exit", True)
    assert c.since_deleting == pytest.approx(0.4)
    assert c.since_sigterm == pytest.approx(0.4)
    assert c.since_exit == pytest.approx(0.1)
    assert c.view_removed_in == pytest.approx(0.6)  # client 0 routed there until 11.0
    assert by_seq[105].view_removed_in == pytest.approx(0.5)  # client 1 until 12.0
    assert by_seq[100].phase == "ready" and by_seq[100].since_ready == pytest.approx(0.1)
    assert by_seq[106].phase == "after-sigterm" and by_seq[106].in_view is True
    assert by_seq[107].phase == "after-sigterm"


def test_causes_name_the_mechanism_the_numbers_and_the_fix() -> None:
    a = analyze(run_of(rollout_records(), rollout_events()))
    causes = {c.kind: c for c in a.causes}
    assert [c.count for c in a.causes] == [3, 2, 1, 1]

    listener = causes["listener_closed"]
    assert listener.cause == (
        "listener closed 1.8 s before clients stopped routing to it: 3 requests to v1-0 could "
        "not connect 0.4 to 1.5 s after SIGTERM [refused: 3]"
    )
    assert listener.fix.startswith("set a drain delay ≥ 2 s (LOSSLESS_DRAIN_DELAY) or a preStop")
    assert listener.replicas == ["v1-0"]
    assert [e.seq for e in listener.examples] == [103, 104, 105]

    not_ready = causes["not_ready"]
    assert not_ready.cause.startswith(
        "sent to a replica before it could serve (no or insufficient readiness probe): "
        "2 requests to v2-0 failed up to 0.2 s after it was marked ready"
    )
    assert "readinessProbe" in not_ready.fix

    keepalive = causes["keepalive_reset"]
    assert keepalive.cause.startswith(
        "connection reset on a kept-alive connection at shutdown: 1 request on reused "
        "connections to v1-1 was reset 0.1 s after SIGTERM"
    )
    assert "Connection: close" in keepalive.fix

    killed = causes["killed"]
    assert killed.cause.startswith(
        "killed at the grace period with requests in flight: v1-1 got SIGKILL 30.0 s after "
        "deletion with 1 request unanswered; the oldest had been running 5.0 s"
    )
    assert "terminationGracePeriodSeconds" in killed.fix


def test_naive_stop_start() -> None:
    events = [
        *life("app", 0.0, 0.2, clients=1),
        Event(5.0, E.SIGTERM, "app"),
        Event(5.1, E.EXITED, "app"),
        Event(5.1, E.STARTED, "app-new"),
        Event(6.3, E.READY, "app-new"),
    ]
    records = [rec(i, 4.0 + i * 0.1, replica="app") for i in range(10)]
    records += [rec(10 + i, 5.2 + i * 0.1, ErrorClass.REFUSED, replica="app") for i in range(11)]
    records += [rec(30, 6.4, replica="app-new")]
    a = analyze(run_of(records, events, strategy="naive"))
    assert len(a.causes) == 1
    cause = a.causes[0]
    assert cause.kind == "naive" and cause.count == 11
    assert cause.cause.startswith(
        "naive stop-start: clients kept routing to a replica while it was stopped and "
        "restarted (nothing serving on app for 1.0 s; 11 requests failed between t=5.2 s "
        "and t=6.2 s)"
    )
    assert "rolling update" in cause.fix


def test_no_endpoint_draining_5xx_slow_and_unexplained() -> None:
    R = ErrorClass
    events = rollout_events()
    records = [rec(i, 1.0 + i, replica="v1-0") for i in range(3)]
    records += [
        rec(3, 30.0, R.NO_ENDPOINT, replica="", status=0),
        rec(4, 30.4, R.NO_ENDPOINT, replica="", status=0),
        rec(5, 20.2, R.HTTP_503, replica="v1-1"),
        rec(6, 5.0, R.TIMEOUT, replica="v1-0", status=0, latency=2.0),
        rec(7, 5.5, R.TRUNCATED, replica="v1-0"),
    ]
    a = analyze(run_of(records, events, timeout=2.0))
    causes = {c.kind: c for c in a.causes}
    assert set(causes) == {"no_endpoint", "draining_5xx", "slow", "unexplained"}
    assert causes["no_endpoint"].cause.startswith(
        "no endpoint in the clients' view for 0.4 s: 2 requests had nowhere to go"
    )
    assert causes["draining_5xx"].cause.startswith(
        "v1-1 answered 503 to 1 request while terminating (0.2 s after SIGTERM)"
    )
    assert "within the 2 s client timeout" in causes["slow"].cause
    assert "seq" in causes["unexplained"].fix and "7" in causes["unexplained"].fix


def test_a_clean_run_has_no_causes() -> None:
    a = analyze(run_of([rec(i, i * 0.01) for i in range(50)], rollout_events()))
    assert (a.failures, a.causes, a.success_ratio) == (0, [], 1.0)


def test_to_json_shape() -> None:
    a = analyze(run_of(rollout_records(), rollout_events()))
    data = json.loads(json.dumps(a.to_json()))
    for key in ("requests", "failures", "failures_by_class", "artefacts", "causes", "latency_ms"):
        assert key in data
    cause = data["causes"][0]
    assert set(cause) >= {"cause", "fix", "count", "replicas", "examples"}
    assert cause["examples"][0]["phase"] in PHASES


def test_accumulator_contract() -> None:
    analyzer = Analyzer([], {})
    analyzer.add(rec(0, 0.0))
    assert analyzer.close().requests == 1
    with pytest.raises(RuntimeError, match="closed"):
        analyzer.add(rec(1, 0.1))
    assert percentiles([]) == {}
    assert percentiles([3.0, 1.0, 2.0])["p50"] == 2.0


def test_every_metric_and_phase_is_defined_in_the_docs() -> None:
    text = DOCS.read_text("utf-8")
    for name in [*METRICS, *PHASES]:
        assert f"`{name}`" in text, f"docs/verify-load.md does not define {name}"
