"""``lossless verify`` analyses a run without keeping its records (issue 16: memory flat with the
number of requests): the streamed analysis and the verdict are the same as with every record in
memory, and the lateness the verdict counts comes from the analysis' lag tail."""

from __future__ import annotations

from pathlib import Path

from lossless.verify.analysis.report import analyse_dir
from lossless.verify.analysis.verdict import VerdictPolicy, judge
from lossless.verify.model import ErrorClass, Event, EventKind, Record
from lossless.verify.results import RunWriter


def _write(directory: Path) -> None:
    """2,000 requests; every 50th sent 20 ms late; the last 30 refused by v1-0 after SIGTERM."""
    with RunWriter(directory) as writer:
        writer.settings({"strategy": "rolling", "lag_budget": 0.1})
        for event in (
            Event(0.1, EventKind.STARTED, "v1-0"),
            Event(0.2, EventKind.READY, "v1-0"),
            Event(5.0, EventKind.ROLLOUT_START),
            Event(9.0, EventKind.SIGTERM, "v1-0"),
            Event(15.0, EventKind.ROLLOUT_END),
        ):
            writer.event(event)
        for i in range(2000):
            sent = i * 0.01
            lag = 0.02 if i % 50 == 0 else 0.0001
            refused = i >= 1970
            writer.record(
                Record(
                    i, sent - lag, sent,
                    None if refused else sent + 0.001, None if refused else sent + 0.002,
                    0 if refused else 200, 0 if refused else 2,
                    ErrorClass.REFUSED if refused else ErrorClass.NONE,
                    "v1-0", i % 4, False, 0,
                )
            )  # fmt: skip


def test_streamed_analysis_matches_the_in_memory_one(tmp_path: Path) -> None:
    _write(tmp_path / "run")
    whole = analyse_dir(tmp_path / "run")
    streamed = analyse_dir(tmp_path / "run", keep_records=False)
    assert len(whole.run.records) == 2000 and streamed.run.records == []
    a, b = whole.analysis, streamed.analysis
    assert (b.requests, b.ok, b.failures, b.late) == (a.requests, a.ok, a.failures, a.late)
    assert [(c.kind, c.count) for c in b.causes] == [(c.kind, c.count) for c in a.causes]
    assert b.window_requests == a.window_requests and b.rate_achieved == a.rate_achieved
    policy = VerdictPolicy()
    v_whole, v_streamed = judge(whole, policy), judge(streamed, policy)
    assert v_streamed.late == v_whole.late == 40  # every 50th of 2,000 sent 20 ms late
    assert v_streamed.outcome is v_whole.outcome and v_streamed.reasons == v_whole.reasons


def test_late_count_by_threshold_from_the_lag_tail(tmp_path: Path) -> None:
    _write(tmp_path / "run")
    analysis = analyse_dir(tmp_path / "run", keep_records=False).analysis
    assert analysis.late_count(0.010) == 40
    assert analysis.late_count(0.030) == 0
    assert analysis.late_count(0.0005) is None  # below the tail's 1 ms floor: needs the records
