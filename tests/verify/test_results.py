"""The run directory: streaming writer, reader, errors on bad input, vegeta CSV export."""

from __future__ import annotations

import base64
import csv
import json
from pathlib import Path

import pytest

from lossless.errors import LosslessError
from lossless.verify.model import Clock, ErrorClass, Event, EventKind, Record
from lossless.verify.results import RECORD_COLUMNS, RunWriter, export_vegeta_csv, read_run


def sample_records() -> list[Record]:
    return [
        Record(0, 0.0, 0.000125, 0.0011, 0.0012, 200, 2, ErrorClass.NONE, "v1-0", 1, False, 0),
        Record(1, 0.01, 0.0101, None, 0.0105, 0, 0, ErrorClass.REFUSED, "v1,odd", 2, False, 1),
        Record(2, 0.02, 0.45, 0.451, 0.452, 200, 2, ErrorClass.SCHEDULE_LAG, "v1-0", 1, True, 0),
        Record(3, 0.03, 0.03, None, 0.03, 0, 0, ErrorClass.NO_ENDPOINT, "", 0, False, 1),
    ]


def sample_events() -> list[Event]:
    return [
        Event(0.0, EventKind.RUN_START),
        Event(1.5, EventKind.VIEW_REMOVED, "v1-0", client=1),
        Event(1.2, EventKind.EXITED, "v1-0", detail="exit code 0"),
    ]


def write_run(path: Path, clock: Clock | None = None) -> Path:
    with RunWriter(path, clock=clock) as w:
        w.settings({"rate": 100, "strategy": "rolling"})
        for e in sample_events():
            w.event(e)
        for r in reversed(sample_records()):  # completion order differs from seq order
            w.record(r)
        w.settings({"url": "http://svc/"})
    return path


def test_round_trip(tmp_path: Path) -> None:
    clock = Clock()
    run = read_run(write_run(tmp_path / "run", clock))
    assert run.records == sample_records()
    assert run.events == sorted(sample_events(), key=lambda e: e.t)
    assert run.settings["rate"] == 100 and run.settings["url"] == "http://svc/"
    assert run.wall_origin == clock.wall_origin
    assert run.warnings == []


def test_writer_streams_and_refuses_to_overwrite(tmp_path: Path) -> None:
    w = RunWriter(tmp_path / "run")
    w.event(Event(0.5, EventKind.SIGTERM, "v1-0"))
    assert (tmp_path / "run" / "timeline.jsonl").read_text().count("\n") == 1  # flushed at once
    w.record(sample_records()[0])
    w.flush()
    assert read_run(tmp_path / "run").records == sample_records()[:1]  # readable mid-run
    w.close()
    w.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        w.record(sample_records()[0])
    with pytest.raises(LosslessError, match="already holds a run"):
        RunWriter(tmp_path / "run")


def test_a_line_cut_by_a_crash_is_ignored_with_a_warning(tmp_path: Path) -> None:
    path = write_run(tmp_path / "run")
    with open(path / "records.csv", "a") as f:
        f.write("4,0.04,0.04")
    run = read_run(path)
    assert len(run.records) == 4
    assert run.warnings and "records.csv:6: incomplete last line" in run.warnings[0]


@pytest.mark.parametrize(
    ("file", "content", "message"),
    [
        ("records.csv", "seq,oops\n", r"records.csv:1: not a records file"),
        ("records.csv", ",".join(RECORD_COLUMNS) + "\n1,2,3\n", r"records.csv:2: corrupt record"),
        (
            "records.csv",
            ",".join(RECORD_COLUMNS) + "\n0,0,0,,,200,2,bogus,a,1,0,0,0,\n",
            r"records.csv:2: corrupt record: 'bogus' is not a valid ErrorClass",
        ),
        ("records.csv", "", r"records.csv:1: empty"),
        (
            "timeline.jsonl",
            '{"t": 0, "kind": "run_start"}\n{"t": 1\n',
            r"timeline.jsonl:2: corrupt",
        ),
        ("timeline.jsonl", '{"t": 0, "kind": "teleported"}\n', r"timeline.jsonl:1: corrupt event"),
        ("timeline.jsonl", '{"kind": "run_start"}\n', r"timeline.jsonl:1: corrupt event: missing"),
        ("settings.json", "[1, 2]", r"settings.json:1: corrupt settings: not a JSON object"),
        ("settings.json", "{\n  oops", r"settings.json:2: corrupt settings"),
    ],
)
def test_corrupt_files_name_the_file_and_line(
    tmp_path: Path, file: str, content: str, message: str
) -> None:
    path = write_run(tmp_path / "run")
    (path / file).write_text(content)
    with pytest.raises(LosslessError, match=message) as info:
        read_run(path)
    assert "\n" not in str(info.value)


def test_missing_directory_or_file(tmp_path: Path) -> None:
    with pytest.raises(LosslessError, match="no such run directory"):
        read_run(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(LosslessError, match="not a directory"):
        read_run(tmp_path / "file")
    path = write_run(tmp_path / "run")
    (path / "timeline.jsonl").unlink()
    with pytest.raises(LosslessError, match=r"timeline.jsonl: missing"):
        read_run(path)


def test_vegeta_csv_export(tmp_path: Path) -> None:
    """vegeta's CSV encoder (lib/results.go, NewCSVEncoder): 12 columns, no header, Go quoting."""
    clock = Clock()
    run = read_run(write_run(tmp_path / "run", clock))
    out = tmp_path / "results.csv"
    export_vegeta_csv(run, out)
    text = out.read_text()
    assert "\r" not in text and text.endswith("\n")
    rows = list(csv.reader(text.splitlines()))
    assert [len(r) for r in rows] == [12] * 4
    first = rows[0]
    assert first[0] == str(round(clock.wall_origin * 1e9) + 125_000)
    assert first[1:6] == ["200", str(round((0.0012 - 0.000125) * 1e9)), "0", "2", ""]
    assert first[6:11] == ["", "lossless", "0", "GET", "http://svc/"]
    assert base64.b64decode(first[11]) == b"X-Lossless-Replica: v1-0\r\n\r\n"
    assert rows[1][1] == "0" and rows[1][5] == "refused"
    assert '"' not in text.splitlines()[1]  # base64 and the other fields need no quoting
    assert rows[3][11] == ""  # no replica, no headers
    assert [r[8] for r in rows] == ["0", "1", "2", "3"]


def test_settings_written_atomically_as_json(tmp_path: Path) -> None:
    with RunWriter(tmp_path / "run") as w:
        w.settings({"a": 1})
        w.settings({"b": [1, 2]})
    assert json.loads((tmp_path / "run" / "settings.json").read_text()) == {"a": 1, "b": [1, 2]}
    assert not (tmp_path / "run" / "settings.json.tmp").exists()


def test_vegeta_fields_are_quoted_as_go_does(tmp_path: Path) -> None:
    run = read_run(write_run(tmp_path / "run"))
    out = tmp_path / "results.csv"
    export_vegeta_csv(run, out, attack=' say "hi"', url="http://svc/?a=1,2")
    line = out.read_text().splitlines()[0].split(",", 7)[7]
    assert line.startswith('" say ""hi""",0,GET,"http://svc/?a=1,2",')
