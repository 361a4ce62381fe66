"""``lossless report`` and ``lossless verify --html/--export`` stream the records (issue 16):
one pass over records.csv makes the analysis, the per-upgrade split, the HTML figure's points
and the vegeta export, in memory that does not grow with the number of requests, with the same
numbers, figure and file as with every record in memory."""

from __future__ import annotations

import gc
import json
import tracemalloc
from pathlib import Path

from lossless.verify.analysis.report import analyse_dir
from lossless.verify.analysis.upgrades import per_upgrade
from lossless.verify.analysis.verdict import VerdictPolicy, judge
from lossless.verify.command import analyse_for_output
from lossless.verify.model import ErrorClass, Event, EventKind, Record
from lossless.verify.render.figure_points import MAX_OK_POINTS, RequestPoints
from lossless.verify.render.html_figure import figure
from lossless.verify.render.html_page import render_html
from lossless.verify.results import RunWriter, export_vegeta_csv, read_run

N = 30_000


def _record(i: int) -> Record:
    """Request i: sent at i ms; every 97th 3 ms late; 300 refused by v1-0 after its SIGTERM."""
    sent = 1.0 + i * 0.001
    lag = 0.003 if i % 97 == 0 else 0.0002
    refused = 20_000 <= i < 20_300
    latency = 0.002 + (i % 13) * 0.0005
    return Record(
        i, sent - lag, sent,
        None if refused else sent + latency / 2, None if refused else sent + latency,
        0 if refused else 200, 0 if refused else 2,
        ErrorClass.REFUSED if refused else ErrorClass.NONE,
        "v1-0" if i < 20_300 else "v2-0", i % 3, i % 5 != 0, 0,
    )  # fmt: skip


def _write(directory: Path) -> None:
    with RunWriter(directory) as writer:
        writer.settings({"strategy": "rolling", "lag_budget": 0.1, "url": "http://x/"})
        for event in (
            Event(0.1, EventKind.STARTED, "v1-0"),
            Event(0.2, EventKind.READY, "v1-0"),
            Event(10.0, EventKind.UPGRADE_START, detail="1 v1→v2"),
            Event(15.0, EventKind.ROLLOUT_START),
            Event(15.5, EventKind.STARTED, "v2-0"),
            Event(16.0, EventKind.READY, "v2-0"),
            Event(20.0, EventKind.UPGRADE_START, detail="2 v2→v3"),
            Event(20.9, EventKind.SIGTERM, "v1-0"),
            Event(25.0, EventKind.ROLLOUT_END),
        ):
            writer.event(event)
        for i in range(0, N, 2):  # completion order: each pair the other way round
            writer.record(_record(i + 1))
            writer.record(_record(i))


def _peak(fn: object) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        fn()  # type: ignore[operator]
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_one_pass_matches_the_in_memory_path_in_bounded_memory(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    _write(run_dir)
    policy = VerdictPolicy(late_threshold=0.0005)  # below the lag tail's floor: counted in pass
    streamed: dict[str, object] = {}

    def stream() -> None:
        report, points = analyse_for_output(
            run_dir, policy, html=True, export=tmp_path / "streamed.csv"
        )
        streamed.update(report=report, points=points)

    peak = _peak(stream)
    records_size = _peak(lambda: read_run(run_dir))  # the records as objects
    assert peak < records_size / 4, (peak, records_size)

    whole = analyse_dir(run_dir)  # every record in memory
    report, points = streamed["report"], streamed["points"]
    assert len(whole.run.records) == N and report.run.records == []  # type: ignore[attr-defined]
    a, b = whole.analysis.to_json(), report.analysis.to_json()  # type: ignore[attr-defined]
    assert b == a
    v_whole, v_streamed = judge(whole, policy), judge(report, policy)  # type: ignore[arg-type]
    late = sum(1 for i in range(N) if i % 97 == 0)  # the 3 ms late ones
    assert v_streamed.late == v_whole.late == late
    assert v_streamed.to_json() == v_whole.to_json()
    in_memory_upgrades = per_upgrade(whole.run.events, whole.run.records)
    assert [u.to_json() for u in report.upgrades] == [u.to_json() for u in in_memory_upgrades]  # type: ignore[attr-defined]
    assert [u.failures for u in in_memory_upgrades] == [0, 300]
    # the same figure as drawn from the records in memory; every failure drawn
    fig = figure(whole.run, whole.analysis)
    assert json.dumps(figure(report.run, report.analysis, points=points)) == json.dumps(fig)  # type: ignore[arg-type, attr-defined]
    drawn = {t["name"]: len(t["x"]) for t in fig["data"] if t.get("xaxis") == "x2"}
    assert drawn["failed: refused"] == 300 and drawn["ok"] <= MAX_OK_POINTS
    assert fig["dropped_ok"] == N - 300 - drawn["ok"]
    page = render_html(report, points=points)  # type: ignore[arg-type]
    assert "decimation" in page and page.count('class="failure-row"') == 300
    # the export: vegeta's rows in seq order, the same file as from the records in memory
    export_vegeta_csv(whole.run, tmp_path / "whole.csv")
    text = (tmp_path / "streamed.csv").read_text()
    assert text == (tmp_path / "whole.csv").read_text()
    assert [int(line.split(",")[8]) for line in text.splitlines()] == list(range(N))


def test_points_keep_every_request_of_a_small_run_and_bound_a_large_one() -> None:
    small = [_record(i) for i in range(500)]
    forward, backward = RequestPoints.of([], small), RequestPoints.of([], reversed(small))
    kept, left_out = backward.points("ok")
    assert left_out == 0 and [r.seq for r in kept] == list(range(500))
    width, first, rows = backward.rows()
    assert (width, first) == forward.rows()[:2] and width == 0.05  # about 20 requests a bin
    assert sum(row.requests for row in rows if row is not None) == 500
    large = RequestPoints.of([], (_record(i) for i in range(N)))
    kept, left_out = large.points("ok")
    assert len(kept) <= MAX_OK_POINTS and left_out == N - 300 - len(kept)
    assert len(large.failed) == 300 and len(large.rows()[2]) <= 121
